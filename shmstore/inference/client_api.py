"""Model, script and inference calls of `shmstore.Client`, with the SmartRedis names.

`InferenceClientMixin` is a base class of `shmstore.Client`; it uses only the client's public
tensor calls (put_tensor, get_tensor, delete_tensor, key_exists, poll_tensor) and its store
name. Run requests travel through the store's inference segment (shmstore._infer), mapped on
the first request.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from shmstore import _infer
from shmstore.errors import (
    SHMSTORE_ELOST,
    SHMSTORE_ENOKEY,
    SHMSTORE_ENOSTORE,
    SHMSTORE_ENOWORKER,
    KeyNotFoundError,
    ShmstoreError,
    make_error,
)
from shmstore.inference import blob
from shmstore.inference.stats import ModelStats, decode_worker_stats, worker_stats_key

logger = logging.getLogger("shmstore.inference.client")

DEFAULT_MODEL_TIMEOUT_MS = 60000

_temporary_counter = itertools.count()

KeyList = Union[str, Sequence[str]]


def default_model_timeout_ms() -> int:
    """Return $SHMSTORE_MODEL_TIMEOUT (ms) when it is a positive integer, else 60000."""
    text = os.environ.get("SHMSTORE_MODEL_TIMEOUT", "")
    try:
        value = int(text)
    except ValueError:
        if text:
            logger.warning("ignoring SHMSTORE_MODEL_TIMEOUT=%r: not an integer number of ms",
                           text)
        return DEFAULT_MODEL_TIMEOUT_MS
    return value if value > 0 else DEFAULT_MODEL_TIMEOUT_MS


def _key_list(keys: Optional[KeyList]) -> List[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    return list(keys)


def _model_bytes(model: Any) -> bytes:
    """Return TorchScript file bytes for model: bytes-like, or a torch.jit.ScriptModule."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if hasattr(model, "save") and hasattr(model, "graph"):
        import io

        import torch

        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        return buffer.getvalue()
    raise TypeError(f"model must be the bytes of a TorchScript file or a ScriptModule, not "
                    f"{type(model).__name__}")


class InferenceClientMixin:
    """Models, scripts and run requests; see the module docstring."""

    # The class that mixes this in provides name, put_tensor, get_tensor, delete_tensor,
    # key_exists and poll_tensor.
    name: str
    _infer_segment: Optional[Any] = None
    _infer_lock = threading.Lock()

    # ---- models --------------------------------------------------------------------------

    def set_model(self, key: str, model: Any, backend: str = "TORCH", device: str = "CPU",
                  batch_size: int = 0, min_batch_size: int = 0, min_batch_timeout: int = 0,
                  tag: str = "", inputs: Optional[KeyList] = None,
                  outputs: Optional[KeyList] = None) -> None:
        """Store a TorchScript model under key, with its settings, for every rank and worker.

        model: the bytes of a file saved by torch.jit.save, or a ScriptModule. device: "CPU",
        "GPU" (the worker's GPU) or "GPU:N". batch_size: max rows (sum of the requests'
        first dimensions) per model call, 0 for no batching; a larger request runs in chunks
        of at most batch_size rows. A batch waits at most min_batch_timeout ms for
        min_batch_size rows. inputs and outputs (names of graph nodes) only matter for
        TensorFlow models in RedisAI; TorchScript ignores them.
        Storing again under key switches new requests to the new model.
        """
        del inputs, outputs
        try:
            data = blob.encode(blob.KIND_MODEL, _model_bytes(model), backend, device,
                               batch_size, min_batch_size, min_batch_timeout, tag)
            internal = blob.internal_key(blob.KIND_MODEL, key)
        except ValueError as error:
            # InvalidArgumentError is both a ShmstoreError and a ValueError.
            raise make_error(-errno.EINVAL, f"set_model({key!r})", str(error), "") from None
        self.put_tensor(internal, data)

    def set_model_from_file(self, key: str, model_file: Union[str, os.PathLike],
                            backend: str = "TORCH", device: str = "CPU", batch_size: int = 0,
                            min_batch_size: int = 0, min_batch_timeout: int = 0,
                            tag: str = "", inputs: Optional[KeyList] = None,
                            outputs: Optional[KeyList] = None) -> None:
        """Store the TorchScript model saved in model_file under key; see set_model."""
        with open(model_file, "rb") as file:
            data = file.read()
        self.set_model(key, data, backend, device, batch_size, min_batch_size,
                       min_batch_timeout, tag, inputs, outputs)

    def get_model(self, key: str) -> bytes:
        """Return the TorchScript bytes stored under key; KeyNotFoundError if none."""
        return bytes(self._stored_payload(blob.KIND_MODEL, key)[1])

    def get_model_settings(self, key: str) -> Dict[str, Any]:
        """Return the settings model key was stored with (device, batch sizes, tag, ...)."""
        settings, _payload = self._stored_payload(blob.KIND_MODEL, key)
        return {
            "backend": settings.backend,
            "device": settings.device,
            "batch_size": settings.batch_size,
            "min_batch_size": settings.min_batch_size,
            "min_batch_timeout": settings.min_batch_timeout_ms,
            "tag": settings.tag,
            "version": settings.version,
            "model_bytes": settings.payload_bytes,
        }

    def delete_model(self, key: str) -> None:
        """Remove model key; requests already running finish with it."""
        self.delete_tensor(blob.internal_key(blob.KIND_MODEL, key))

    def model_exists(self, key: str) -> bool:
        return self.key_exists(blob.internal_key(blob.KIND_MODEL, key))

    def poll_model(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check for model key up to num_tries times, poll_frequency_ms apart."""
        return self.poll_tensor(blob.internal_key(blob.KIND_MODEL, key), poll_frequency_ms,
                                num_tries)

    def run_model(self, key: str, inputs: Optional[KeyList] = None,
                  outputs: Optional[KeyList] = None, timeout_ms: Optional[int] = None) -> None:
        """Run model key on the tensors under inputs and store its outputs under outputs.

        Waits at most timeout_ms (default: $SHMSTORE_MODEL_TIMEOUT, else 60000) and raises
        ShmstoreTimeoutError after that, KeyNotFoundError for an unknown model or input,
        ModelError when the model rejects the request, WorkerError when the worker died
        during it, ConnectionLostError when the daemon dies.
        """
        self._run(blob.KIND_MODEL, key, "", _key_list(inputs), _key_list(outputs),
                  timeout_ms)

    def infer(self, key: str, *arrays: Any, timeout_ms: Optional[int] = None) -> Any:
        """Run model key on arrays and return its output arrays, without naming any keys.

        Returns one read-only numpy array when the model returns one tensor, else a tuple.
        The inputs travel through the store, with one copy in. The outputs are zero-copy views
        of the store's memory, which stay valid after their temporary keys are removed.
        """
        prefix = (f"{blob.TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-"
                  f"{next(_temporary_counter)}/")
        input_keys = [f"{prefix}in{position}" for position in range(len(arrays))]
        output_prefix = prefix + "out/"
        created = list(input_keys)
        try:
            for input_key, array in zip(input_keys, arrays):
                self.put_tensor(input_key, array)
            # NOTE: when this call times out, the worker may still store the outputs
            # later; those temporary keys then stay in the store until it stops.
            self._run(blob.KIND_MODEL, key, blob.OUTPUTS_BY_INDEX, input_keys,
                      [output_prefix], timeout_ms)
            created.append(output_prefix + "n")
            count = int(self.get_tensor(output_prefix + "n"))
            output_keys = [f"{output_prefix}{position}" for position in range(count)]
            created.extend(output_keys)
            results = tuple(self.get_tensor(output_key) for output_key in output_keys)
        finally:
            for temporary_key in created:
                try:
                    self.delete_tensor(temporary_key)
                except KeyNotFoundError:
                    pass
        return results[0] if len(results) == 1 else results

    # ---- scripts -------------------------------------------------------------------------

    def set_script(self, key: str, script: str, device: str = "CPU") -> None:
        """Store TorchScript source code (functions for pre- and post-processing) under key."""
        if not isinstance(script, str):
            raise TypeError(f"script must be TorchScript source code (str), not "
                            f"{type(script).__name__}")
        try:
            data = blob.encode(blob.KIND_SCRIPT, script.encode("utf-8"), "TORCH", device)
            internal = blob.internal_key(blob.KIND_SCRIPT, key)
        except ValueError as error:
            raise make_error(-errno.EINVAL, f"set_script({key!r})", str(error), "") from None
        self.put_tensor(internal, data)

    def set_script_from_file(self, key: str, script_file: Union[str, os.PathLike],
                             device: str = "CPU") -> None:
        """Store the TorchScript source in script_file under key."""
        with open(script_file, "r", encoding="utf-8") as file:
            self.set_script(key, file.read(), device)

    def get_script(self, key: str) -> str:
        """Return the source code of script key."""
        return bytes(self._stored_payload(blob.KIND_SCRIPT, key)[1]).decode("utf-8")

    def delete_script(self, key: str) -> None:
        self.delete_tensor(blob.internal_key(blob.KIND_SCRIPT, key))

    def script_exists(self, key: str) -> bool:
        return self.key_exists(blob.internal_key(blob.KIND_SCRIPT, key))

    def run_script(self, key: str, fn_name: str, inputs: Optional[KeyList] = None,
                   outputs: Optional[KeyList] = None, timeout_ms: Optional[int] = None) -> None:
        """Run function fn_name of script key, with the conventions of run_model."""
        if not fn_name:
            raise ValueError(f"run_script({key!r}): the function name is empty")
        self._run(blob.KIND_SCRIPT, key, fn_name, _key_list(inputs), _key_list(outputs),
                  timeout_ms)

    # ---- statistics ----------------------------------------------------------------------

    def get_model_stats(self, key: str) -> Dict[str, Any]:
        """Return the statistics of model (or script) key, summed over every worker.

        Keys: requests, errors, batches, samples, mean_batch_size, max_batch_size (in rows),
        queue_wait_ms_median, queue_wait_ms_p99, compute_ms_median, compute_ms_p99 (histogram
        estimates; None before the first request). Workers publish them at most 200 ms
        after a request completes. Raises KeyNotFoundError when key is neither a stored
        model nor script and has no statistics.
        """
        merged = self.get_all_model_stats().get(key)
        if merged is None:
            if not (self.model_exists(key) or self.script_exists(key)):
                raise make_error(SHMSTORE_ENOKEY, f"get_model_stats({key!r})",
                                 f"no model or script {key!r} and no statistics for it", "")
            merged = ModelStats().summary()
        return dict(merged, key=key)

    def get_all_model_stats(self) -> Dict[str, Dict[str, Any]]:
        """Return the statistics of every model and script that workers have run, by key."""
        merged: Dict[str, ModelStats] = {}
        for index in range(self._worker_count()):
            try:
                array = self.get_tensor(worker_stats_key(index))
            except KeyNotFoundError:
                continue
            for model_key, stats in decode_worker_stats(array).items():
                merged.setdefault(model_key, ModelStats()).merge(stats)
        return {model_key: stats.summary() for model_key, stats in merged.items()}

    def get_inference_workers(self) -> List[Dict[str, Any]]:
        """Return the worker table: index, pid, state, device, counters, in-flight requests."""
        segment = self._segment()
        return [segment.worker(index) for index in range(segment.info()["worker_count"])]

    # ---- plumbing ------------------------------------------------------------------------

    def _stored_payload(self, kind: int, key: str) -> Tuple[blob.BlobSettings, memoryview]:
        stored = self.get_tensor(blob.internal_key(kind, key))
        settings = blob.decode_settings(stored, key)
        return settings, blob.payload_view(stored, settings)

    def _worker_count(self) -> int:
        try:
            return int(self._segment().info()["worker_count"])
        except ShmstoreError as error:
            if error.code == SHMSTORE_ENOWORKER:
                return 0
            raise

    def _segment(self) -> Any:
        """Return the mapped inference segment of this client's store, mapping it once."""
        with self._infer_lock:
            segment = self._infer_segment
            if segment is not None and segment.daemon_alive(100_000_000):
                return segment
            try:
                segment = _infer.Segment.open(self.name)
            except _infer.InferError as error:
                if error.code == SHMSTORE_ENOSTORE:
                    raise make_error(
                        SHMSTORE_ENOWORKER, f"store {self.name!r}",
                        f"no inference service ({error.detail}); start the daemon with "
                        f"`shmstore serve --workers N`", "") from None
                raise make_error(error.code, f"store {self.name!r}", error.detail,
                                 _infer.strerror(error.code)) from None
            self._infer_segment = segment
            return segment

    def _run(self, kind: int, key: str, function: str, inputs: List[str],
             outputs: List[str], timeout_ms: Optional[int]) -> None:
        if timeout_ms is None or timeout_ms < 0:
            timeout_ms = default_model_timeout_ms()
        if timeout_ms == 0:
            raise ValueError(f"run_model({key!r}): timeout_ms must be positive")
        blob.internal_key(kind, key)

        segment = self._segment()
        what = "run_script" if kind == blob.KIND_SCRIPT else "run_model"
        try:
            segment.call(kind, key, function, inputs, outputs, timeout_ms)
        except _infer.InferError as error:
            if error.code == SHMSTORE_ELOST:
                self._infer_segment = None
            raise make_error(error.code, f"{what}({key!r})", error.detail,
                             _infer.strerror(error.code)) from None
