"""Batched inference for shmstore: models stored in the store, run by worker processes.

The client calls (set_model, run_model, infer, get_model_stats, ...) come from
`client_api.InferenceClientMixin`, a base class of `shmstore.Client`. The daemon starts the
workers through `service.InferenceService`; each worker (`worker.py`) batches the requests of
one model along dimension 0 (`batcher.py`), runs them with a cached TorchScript module
(`model_cache.py`) and records statistics (`stats.py`). docs/inference.md describes the design.
"""
