"""An inference worker process: takes requests, batches them per model, runs, replies.

Started by the daemon (`service.py`) as `python -m shmstore.inference.worker --name NAME
--index I --device D --threads T`. See NOTE [worker life cycle] below.

NOTE [worker life cycle]
  1. Map the store (a Client) and the inference segment; register as worker I (pid, device).
  2. Loop: take one request (sleeping on the worker doorbell while idle), then every request
     already queued. Look up each model once per round, so the stored version decides which
     module runs. Plan batches (batcher.py) and run them. Write the outputs into the store and
     complete every request with its own result code and message.
  3. Publish the per-model statistics under "__shmstore__/stats/w<I>" at most every 200 ms
     while busy, and once more when the queue runs dry.
  4. Exit when the daemon dies or stops (the take fails with ConnectionLostError), or when the
     parent process dies (PR_SET_PDEATHSIG). A worker that dies while holding requests has
     them failed by the daemon, which restarts it.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import logging
import os
import signal
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from shmstore import _core, _infer
from shmstore.client import _CODE_BY_DTYPE, _DTYPE_BY_CODE
from shmstore.errors import (
    SHMSTORE_EKEY,
    SHMSTORE_ELOST,
    SHMSTORE_EMODEL,
    SHMSTORE_ENOKEY,
    ShmstoreError,
)
from shmstore.inference import blob
from shmstore.inference.batcher import PendingRequest, plan_batches
from shmstore.inference.model_cache import LoadedModel, ModelCache, ModelLookupError
from shmstore.inference.stats import ModelStats, encode_worker_stats, worker_stats_key

logger = logging.getLogger("shmstore.inference.worker")

ETIMEDOUT = errno.ETIMEDOUT
BFLOAT16_CODE = _core.DTYPE_CODES["bfloat16"]
# Most requests taken in one round before the worker runs what it has.
MAX_DRAIN = 4096
# Maximum sleep on the doorbell while idle. The take itself checks daemon liveness.
IDLE_WAIT_S = 1.0
# Sleep while statistics wait to be published; a miss publishes them.
IDLE_WAIT_DIRTY_S = 0.02
STATS_INTERVAL_S = 0.2
# Default of SHMSTORE_INFER_WORKER_SPIN_US: how long a worker that has just completed
# requests polls the queue before it sleeps. A client's next request usually follows its
# result within tens of microseconds, and catching it saves the futex wake-up of a sleeping
# worker (about 40 us measured on a 2-core VM).
WORKER_SPIN_US_DEFAULT = 250
WORKER_SPIN_US_MAX = 100_000
# Maximum length of a model's message passed back to the client.
MESSAGE_LIMIT = 900


class Worker:
    """One worker process's state; run() is the loop of NOTE [worker life cycle]."""

    def __init__(self, store_name: str, index: int, device: str) -> None:
        from shmstore.client import Client

        self.store_name = store_name
        self.index = index
        self.device = device
        self.client = Client(store_name)
        self.segment = _infer.Segment.open(store_name)
        self.cache = ModelCache(self.client, device)
        self.pending: Dict[Tuple[int, str], List[PendingRequest]] = {}
        self.stats: Dict[str, ModelStats] = {}
        self.stats_dirty = False
        self.stats_published_at = 0.0
        self.wake_ns: Optional[int] = None
        # Completed requests and batches not yet added to the worker table's counters.
        self.requests_uncounted = 0
        self.batches_uncounted = 0
        self._load_previous_stats()

    # ---- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve requests until the daemon goes away; return the process exit code."""
        # Inference mode skips the autograd version counters and view tracking that
        # set_grad_enabled(False) still keeps: about 20 us less per call of the ML-EKE model.
        with torch.inference_mode():
            return self._serve()

    def _serve(self) -> int:
        self.segment.register_worker(self.index, self.device)
        logger.info("inference worker %d ready: pid %d, device %s, store %r", self.index,
                    os.getpid(), self.device, self.store_name)

        spin_s = worker_spin_seconds()
        new_requests: List[tuple] = []
        while True:
            try:
                # Spin only right after a round that took requests, so an idle worker sleeps.
                new_requests = self.segment.take_many(self.index, self._wait_seconds(),
                                                      spin_s if new_requests else 0.0,
                                                      MAX_DRAIN)
            except _infer.InferError as error:
                if error.code == SHMSTORE_ELOST:
                    logger.info("inference worker %d: the daemon stopped, exiting", self.index)
                    return 0
                raise
            for fields in new_requests:
                request = PendingRequest(*fields)
                self.pending.setdefault((request.kind, request.key), []).append(request)

            self._dispatch()
            self._publish_stats(idle=not new_requests)

    def _wait_seconds(self) -> float:
        if self.wake_ns is not None:
            return max(0.0, (self.wake_ns - time.monotonic_ns()) / 1e9)
        return IDLE_WAIT_DIRTY_S if self.stats_dirty else IDLE_WAIT_S

    # ---- dispatch ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        self.wake_ns = None
        for model_id in list(self.pending):
            requests = self.pending.pop(model_id)
            try:
                kept = self._dispatch_model(model_id, requests)
            except Exception as error:  # a bug here must not take the other models down
                logger.exception("worker %d: dispatching %d request(s) for %r failed",
                                 self.index, len(requests), model_id[1])
                for request in requests:
                    if not request.completed:
                        self._complete(request, SHMSTORE_EMODEL,
                                       f"internal error in inference worker {self.index}: "
                                       f"{type(error).__name__}: {error}")
                continue
            if kept:
                self.pending[model_id] = kept

    def _dispatch_model(self, model_id: Tuple[int, str],
                        requests: List[PendingRequest]) -> List[PendingRequest]:
        """Run what is ready of one model's requests; return the requests still waiting."""
        kind, key = model_id
        now_ns = time.monotonic_ns()

        live = []
        for request in requests:
            if request.deadline_ns <= now_ns:
                self._complete(request, -ETIMEDOUT,
                               f"request for {key!r} expired before a worker ran it")
            else:
                live.append(request)
        if not live:
            return []

        try:
            loaded = self.cache.lookup(kind, key)
        except ModelLookupError as error:
            for request in live:
                self._complete(request, error.code, str(error))
            return []

        if kind == blob.KIND_SCRIPT:
            for request in live:
                self._run_script(loaded, request)
            return []

        batching = loaded.settings.batch_size > 0
        ready = [request for request in live if self._load_inputs(request, batching)]
        batches, kept, wake_ns = plan_batches(ready, loaded.batching, now_ns)
        if wake_ns is not None:
            self.wake_ns = wake_ns if self.wake_ns is None else min(self.wake_ns, wake_ns)

        for batch in batches:
            self._run_batch(loaded, batch)
        return kept

    def _load_inputs(self, request: PendingRequest, batching: bool = False) -> bool:
        """Pin the request's input tensors (zero copy); fail the request if one is missing.

        With batching, also record the signature under which it merges with other requests.
        """
        if request.tensors is not None:
            return True
        try:
            views, request.rows, layout = self.client._core.get_views(request.inputs)
        except ShmstoreError as error:
            name = getattr(error, "key", "?")
            code = error.code or SHMSTORE_ENOKEY
            if code == SHMSTORE_ENOKEY:
                message = (f"input tensor {name!r} not found in store "
                           f"{self.store_name!r}; put it before run_model")
            else:
                message = f"cannot read input tensor {name!r}: {error}"
            self._complete(request, code, message)
            return False
        except ValueError as error:
            # The client library rejects such keys before sending; a worker must not trust that.
            self._complete(request, SHMSTORE_EKEY, f"invalid input key: {error}")
            return False
        request.tensors = views
        if batching and layout is not None:
            # Requests that name their outputs differently (by key, or by index) never merge.
            request.signature = (request.function, len(request.outputs), layout)
        return True

    # ---- running -----------------------------------------------------------------------

    def _run_batch(self, loaded: LoadedModel, batch: List[PendingRequest]) -> None:
        """Run one batch; on a model error in a batch of several, run each request alone."""
        started = time.perf_counter()
        started_ns = time.monotonic_ns()
        for request in batch:
            request.started_ns = request.started_ns or started_ns
        try:
            inputs = self._batch_inputs(batch, loaded.device)
            limit = loaded.settings.batch_size
            if 0 < limit < batch[0].rows and len(batch) == 1 and \
                    batch[0].signature is not None:
                result = self._run_in_chunks(loaded, batch, inputs, limit)
            else:
                # The worker runs in inference mode (run()), and forward() skips the hook
                # handling of nn.Module.__call__.
                result = loaded.module.forward(*inputs)
        except Exception as error:  # Any model failure is the request's error, not ours.
            if len(batch) > 1:
                self._run_each_alone(loaded, batch)
                return
            self._fail_model(loaded, batch[0], error)
            return
        compute_s = time.perf_counter() - started

        # Deliver before recording statistics, because the clients wait for the results.
        self._deliver(loaded, batch, result)
        samples = sum(request.rows for request in batch) or len(batch)
        self._model_stats(loaded.key).record_batch(samples, compute_s)
        self.batches_uncounted += 1

    def _run_each_alone(self, loaded: LoadedModel, batch: List[PendingRequest]) -> None:
        """Run every request of a failed batch alone, so that only the one at fault fails."""
        for request in batch:
            self._run_batch(loaded, [request])

    def _run_in_chunks(self, loaded: LoadedModel, batch: List[PendingRequest],
                       inputs: List[Any], limit: int) -> Any:
        """Run one request of more than batch_size rows in nearly equal chunks of at most
        batch_size rows and concatenate the outputs, as the model returns them.

        A model stored with batch_size > 0 treats rows independently, and it runs faster
        on chunks of a few thousand rows than on tens of thousands at once (ML-EKE on one
        CPU thread: about 44,000 rows/s at 4096 rows, 22,500 at 16384). When an output's
        first dimension does not follow the chunk's rows, the rows cannot be split, so the
        request runs whole on a fresh copy of its inputs (the model may have written into
        the first).
        """
        rows = batch[0].rows
        count = -(-rows // limit)
        bounds = [rows * number // count for number in range(count + 1)]
        pieces: List[List[Any]] = []
        single = True
        for start, end in zip(bounds, bounds[1:]):
            result = loaded.module.forward(*[tensor[start:end] for tensor in inputs])
            single = not isinstance(result, (tuple, list))
            outputs = [result] if single else list(result)
            if any(not isinstance(output, torch.Tensor) or output.ndim == 0 or
                   output.shape[0] != end - start for output in outputs):
                return loaded.module.forward(*self._batch_inputs(batch, loaded.device))
            pieces.append(outputs)

        merged = [torch.cat([chunk[position] for chunk in pieces])
                  for position in range(len(pieces[0]))]
        return merged[0] if single else tuple(merged)

    @staticmethod
    def _batch_inputs(batch: List[PendingRequest], device: Any) -> List[Any]:
        """Return the model inputs: the requests' rows stacked with one copy out of the
        arena, then on a GPU one transfer per input."""
        first = batch[0].tensors
        assert first is not None
        stacked = len(batch) > 1
        total_rows = sum(request.rows for request in batch) if stacked else 0
        inputs = []
        for position, view in enumerate(first):
            if stacked:
                views = [request.tensors[position] for request in batch]  # type: ignore[index]
                shape = (total_rows,) + view.shape_tuple[1:]
            elif device.type != "cpu":
                # NOTE: this GPU branch has run only in review, never in a test: the
                # development machine has no GPU.
                inputs.append(_as_torch(np.asarray(view), view).to(device))
                continue
            else:
                views = [view]
                shape = view.shape_tuple

            # A copy even for one request on the CPU: the arena view is read-only, and
            # models may write into their input (the ML-EKE model does). bfloat16 travels
            # as its uint16 bit patterns.
            code = view.dtype_code
            host = np.empty(shape, np.uint16 if code == BFLOAT16_CODE else _DTYPE_BY_CODE[code])
            try:
                _core.copy_views(views, host)
            except ValueError:
                # Fortran-order tensors: numpy reorders them into C order while it copies.
                np.concatenate([np.asarray(piece) for piece in views], out=host)
            tensor = _as_torch(host, view)
            inputs.append(tensor if device.type == "cpu" else tensor.to(device))
        return inputs

    def _deliver(self, loaded: LoadedModel, batch: List[PendingRequest], result: Any) -> None:
        """Check the model's outputs, write each request's rows into the store, complete."""
        if isinstance(result, torch.Tensor):
            outputs = [result]
            tensors_only = True
        else:
            outputs = list(result) if isinstance(result, (tuple, list)) else [result]
            tensors_only = all(isinstance(output, torch.Tensor) for output in outputs)
        by_index = batch[0].function == blob.OUTPUTS_BY_INDEX
        expected = len(outputs) if by_index else len(batch[0].outputs)
        if len(outputs) != expected or not tensors_only:
            kinds = ", ".join(type(output).__name__ for output in outputs)
            message = (f"model {loaded.key!r} returned {len(outputs)} output(s) ({kinds}) but "
                       f"the request names {expected} output key(s)")
            for request in batch:
                self._complete(request, SHMSTORE_EMODEL, message)
            return

        try:
            outputs = [_host_array(output) for output in outputs]
        except (RuntimeError, TypeError) as error:
            if len(batch) > 1:
                # As for a model that raises: the rows of one request may have caused it.
                self._run_each_alone(loaded, batch)
                return
            dtypes = ", ".join(str(output.dtype) for output in outputs)
            message = (f"model {loaded.key!r} returned outputs of dtypes {dtypes}, which "
                       f"cannot be stored: {error}")
            self._complete(batch[0], SHMSTORE_EMODEL, message)
            return

        if len(batch) > 1:
            total_rows = sum(request.rows for request in batch)
            for position, output in enumerate(outputs):
                first = int(output.shape[0]) if output.ndim > 0 else None
                if first == total_rows:
                    continue
                sizes = ", ".join(str(request.rows) for request in batch)
                message = (f"model {loaded.key!r}: output {position} has first dimension "
                           f"{first}, but the batch of {len(batch)} requests ({sizes} rows) "
                           f"has {total_rows} rows, so it cannot be split per request; store "
                           f"the model with batch_size=0 to run each request alone")
                for request in batch:
                    self._complete(request, SHMSTORE_EMODEL, message)
                return

        if not by_index and self._store_rows(batch, outputs):
            return

        offset = 0
        for request in batch:
            if len(batch) > 1:
                pieces = [output[offset:offset + request.rows] for output in outputs]
                offset += request.rows
            else:
                pieces = outputs
            self._store_outputs(request, pieces)

    def _store_rows(self, batch: List[PendingRequest], outputs: List[Any]) -> bool:
        """Write each request's rows of every output, one C call per output, then complete
        the requests. Return False, having written nothing, unless every output is a
        C-contiguous numpy array of rank 1 or more (the common case)."""
        codes_by_output = []
        for output in outputs:
            if type(output) is not np.ndarray or output.ndim == 0 or \
                    not output.flags.c_contiguous:
                return False
            code = _CODE_BY_DTYPE.get(output.dtype)
            if code is None:
                return False
            codes_by_output.append(code)

        # A request that ran alone gets its whole output, whatever its first dimension.
        single = len(batch) == 1
        rows = None if single else [request.rows for request in batch]
        failures: Dict[int, Tuple[int, str]] = {}
        for position, output in enumerate(outputs):
            names = [request.outputs[position] for request in batch]
            codes = self.client._core.put_rows(names, output, codes_by_output[position],
                                               output.shape, rows or [output.shape[0]])
            for number, code in enumerate(codes):
                if code != 0 and number not in failures:
                    failures[number] = (code, names[number])

        if not failures:
            self._complete_all(batch)
            return True
        for number, request in enumerate(batch):
            failure = failures.get(number)
            if failure is None:
                self._complete(request, 0, "")
                continue
            code, name = failure
            reason = _core.strerror(code)
            logger.warning("worker %d: cannot store output %r of %r: %s", self.index, name,
                           request.key, reason)
            self._complete(request, code, f"cannot store output {name!r}: {reason}")
        return True

    def _store_outputs(self, request: PendingRequest, pieces: List[Any]) -> None:
        names = request.outputs
        if request.function == blob.OUTPUTS_BY_INDEX:
            prefix = request.outputs[0]
            names = [f"{prefix}{position}" for position in range(len(pieces))]
            names.append(prefix + "n")
            pieces = list(pieces) + [torch.tensor(len(pieces), dtype=torch.int64)]

        for name, piece in zip(names, pieces):
            try:
                self.client.put_tensor(name, piece)
            except (ShmstoreError, TypeError, ValueError) as error:
                code = getattr(error, "code", 0) or SHMSTORE_EMODEL
                logger.warning("worker %d: cannot store output %r of %r: %s", self.index,
                               name, request.key, error)
                self._complete(request, code, f"cannot store output {name!r}: {error}")
                return
        self._complete(request, 0, "")

    def _run_script(self, loaded: LoadedModel, request: PendingRequest) -> None:
        if not self._load_inputs(request):
            return
        try:
            function = getattr(loaded.module, request.function)
        except AttributeError:
            self._complete(request, SHMSTORE_EMODEL,
                           f"script {loaded.key!r} has no function {request.function!r}")
            return

        started = time.perf_counter()
        request.started_ns = time.monotonic_ns()
        try:
            inputs = self._batch_inputs([request], loaded.device)
            result = function(*inputs)
        except Exception as error:  # Any script failure is the request's error.
            self._fail_model(loaded, request, error)
            return
        self._model_stats(loaded.key).record_batch(max(request.rows, 1),
                                                   time.perf_counter() - started)
        self.batches_uncounted += 1
        self._deliver(loaded, [request], result)

    def _fail_model(self, loaded: LoadedModel, request: PendingRequest,
                    error: Exception) -> None:
        text = _model_error_text(error)
        what = "script" if request.kind == blob.KIND_SCRIPT else "model"
        shapes = ", ".join(f"{view.shape_tuple} {view.dtype}"
                           for view in request.tensors or [])
        self._complete(request, SHMSTORE_EMODEL,
                       f"{what} {loaded.key!r} failed on inputs [{shapes}]: "
                       f"{type(error).__name__}: {text}")

    # ---- completion and statistics -----------------------------------------------------

    def _complete(self, request: PendingRequest, code: int, message: str) -> None:
        request.completed = True
        if code != 0:
            logger.info("worker %d: request for %r failed (code %d): %s", self.index,
                        request.key, code, message)
        delivered = self.segment.complete(self.index, request.slot, request.sequence, code,
                                          message)
        if not delivered:
            logger.info("worker %d: the client of a request for %r gave up before it "
                        "completed", self.index, request.key)
        request.tensors = None
        # Queue wait: from submission until the request's batch started (or until now, for
        # a request that failed before it ran).
        started_ns = request.started_ns or time.monotonic_ns()
        queue_wait_s = max(0, started_ns - request.submitted_ns) / 1e9
        self._model_stats(request.key).record_request(queue_wait_s, failed=code != 0)
        self.requests_uncounted += 1

    def _complete_all(self, batch: List[PendingRequest]) -> None:
        """Complete the requests of one batch with success, in one call into the extension."""
        slots = []
        sequences = []
        queue_waits_ns = []
        for request in batch:
            request.completed = True
            request.tensors = None      # unpins the inputs
            slots.append(request.slot)
            sequences.append(request.sequence)
            queue_waits_ns.append(request.started_ns - request.submitted_ns)
        abandoned = self.segment.complete_ok(self.index, slots, sequences)
        for position in abandoned:
            logger.info("worker %d: the client of a request for %r abandoned it before it "
                        "completed", self.index, batch[position].key)
        self._model_stats(batch[0].key).record_requests(queue_waits_ns)
        self.requests_uncounted += len(batch)

    def _model_stats(self, key: str) -> ModelStats:
        self.stats_dirty = True
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = ModelStats()
        return stats

    def _publish_stats(self, idle: bool) -> None:
        if not self.stats_dirty:
            return
        now = time.monotonic()
        if not idle and now - self.stats_published_at < STATS_INTERVAL_S:
            return
        self.segment.count(self.index, self.requests_uncounted, self.batches_uncounted)
        self.requests_uncounted = 0
        self.batches_uncounted = 0
        try:
            self.client.put_tensor(worker_stats_key(self.index),
                                   encode_worker_stats(self.stats))
        except ShmstoreError as error:
            logger.warning("worker %d: cannot publish statistics: %s", self.index, error)
            return
        self.stats_dirty = False
        self.stats_published_at = now

    def _load_previous_stats(self) -> None:
        """Continue the statistics of the worker this one replaces, if it published any."""
        from shmstore.inference.stats import decode_worker_stats

        try:
            array = self.client.get_tensor(worker_stats_key(self.index))
        except ShmstoreError:
            return
        try:
            self.stats = decode_worker_stats(array)
        except (ValueError, KeyError) as error:
            logger.warning("worker %d: ignoring unreadable earlier statistics: %s",
                           self.index, error)


def worker_spin_seconds() -> float:
    """Return SHMSTORE_INFER_WORKER_SPIN_US in seconds (0 to WORKER_SPIN_US_MAX us)."""
    text = os.environ.get("SHMSTORE_INFER_WORKER_SPIN_US", "")
    if not text:
        return WORKER_SPIN_US_DEFAULT / 1e6
    try:
        spin_us = int(text)
    except ValueError:
        spin_us = -1
    if not 0 <= spin_us <= WORKER_SPIN_US_MAX:
        logger.warning("invalid SHMSTORE_INFER_WORKER_SPIN_US=%r (expected 0 to %d "
                       "microseconds); using %d", text, WORKER_SPIN_US_MAX,
                       WORKER_SPIN_US_DEFAULT)
        return WORKER_SPIN_US_DEFAULT / 1e6
    return spin_us / 1e6


def _host_array(output: Any) -> Any:
    """Return a model output on the host, as a numpy array (zero copy for a CPU tensor).

    bfloat16 has no numpy dtype, so such outputs stay torch tensors; put_tensor stores them
    with the bfloat16 tag. This runs for every output of every batch, right after the model,
    when little of the worker's own code is still in the CPU caches, so the common case (a
    CPU tensor of a numpy dtype, without autograd or a conjugate or negative bit) is one call:
    numpy() refuses every other case.
    """
    try:
        return output.numpy()
    except (RuntimeError, TypeError):
        pass
    if output.requires_grad:
        output = output.detach()
    if not output.is_cpu:
        output = output.cpu()
    if output.dtype is torch.bfloat16:
        return output
    return output.resolve_conj().resolve_neg().numpy()


def _as_torch(host: np.ndarray, view: Any) -> Any:
    """Return host, an array of the stored input view's dtype, as a torch tensor, no copy."""
    tensor = torch.from_numpy(host)
    return tensor.view(torch.bfloat16) if view.dtype_code == BFLOAT16_CODE else tensor


def _model_error_text(error: Exception) -> str:
    """Return the useful part of a model's exception message, at most MESSAGE_LIMIT chars.

    TorchScript errors carry two tracebacks before the actual message on the last line, so
    only that line is kept.
    """
    text = str(error).strip()
    if "Traceback of TorchScript" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT] + " ..."
    return text


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when the daemon (its parent) dies."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError) as error:
        logger.warning("cannot set PR_SET_PDEATHSIG (%s); relying on the liveness check",
                       error)
    if os.getppid() != parent:
        sys.exit(0)


def configure_torch(threads: int) -> None:
    torch.set_num_threads(max(1, threads))
    # Workers never train: no autograd bookkeeping, and no per-batch no_grad() context.
    torch.set_grad_enabled(False)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        # Only allowed before the first parallel operation; the default is then kept.
        pass
    # Arena views are read-only; workers copy them before any model runs.
    warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shmstore.inference.worker",
                                     description="Run one inference worker of a store.")
    parser.add_argument("--name", required=True, help="store name")
    parser.add_argument("--index", type=int, required=True,
                        help="worker table index assigned by the daemon")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda:N")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for this worker")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=arguments.log_level,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    _die_with_parent()
    configure_torch(arguments.threads)
    try:
        worker = Worker(arguments.name, arguments.index, arguments.device)
    except (ShmstoreError, _infer.InferError) as error:
        logger.error("inference worker %d cannot attach to store %r: %s", arguments.index,
                     arguments.name, error)
        return 1
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
