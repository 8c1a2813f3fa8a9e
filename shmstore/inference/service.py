"""The daemon's side of inference: the segment and the pool of worker processes.

NOTE [inference service start-up and shutdown]
Start (called by the daemon after its own segments exist, before it reports ready):
  1. create /dev/shm/shmstore-NAME-infer with the worker count (a stale one left by a dead
     daemon is replaced);
  2. start the N worker processes (`python -m shmstore.inference.worker`); each registers in
     the worker table once it has loaded torch and attached.
Each housekeeping round (poll, about every 100 ms):
  - a worker process that exited is reaped, and the requests it held fail with an error
    naming the worker and its pid (infer_daemon_fail_worker). It is started again at once the
    first time. While it keeps dying within 5 s of starting, each restart waits longer, up to
    10 s;
  - about once a second, the request slots of dead client processes are freed.
Stop (called by the daemon before it destroys its own segments):
  1. SIGTERM every worker, wait up to 5 s, then SIGKILL what is left;
  2. destroy the segment: waiting clients fail with ConnectionLostError, the file is unlinked.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import subprocess
import sys
import time
from typing import List, Optional

from shmstore import _infer
from shmstore.errors import make_error
from shmstore.inference.devices import parse_worker_devices

logger = logging.getLogger("shmstore.inference.service")

STOP_GRACE_S = 5.0
RECLAIM_INTERVAL_S = 1.0
# A worker that dies this soon after its start counts as a crash loop.
EARLY_DEATH_S = 5.0
MAX_RESTART_DELAY_S = 10.0


@dataclasses.dataclass
class WorkerProcess:
    """One worker slot of the pool and the process currently filling it."""

    index: int
    device: str
    process: Optional[subprocess.Popen] = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


def default_threads(workers: int) -> int:
    """Return torch threads per worker: the usable cores divided among the workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, workers))


class InferenceService:
    """The inference segment of one store and its worker processes.

    See NOTE [inference service start-up and shutdown]. With workers 0 the segment exists,
    and run requests fail at once with WorkerError.
    """

    def __init__(self, store_name: str, workers: int, device: str = "cpu",
                 threads: Optional[int] = None, slots: int = 0,
                 log_level: str = "INFO") -> None:
        if workers < 0 or workers > _infer.MAX_WORKERS:
            raise make_error(-errno.EINVAL, f"--workers {workers}",
                             f"invalid worker count: use 0 to {_infer.MAX_WORKERS}", "")
        try:
            devices = parse_worker_devices(device)
        except ValueError as error:
            raise make_error(-errno.EINVAL, f"--device {device}", str(error), "") from None
        self.store_name = store_name
        self.threads = threads if threads else default_threads(workers)
        self.log_level = log_level
        try:
            self.segment = _infer.Segment.create(store_name, slots, workers)
        except _infer.InferError as error:
            raise make_error(error.code, f"inference segment of store {store_name!r}",
                             error.detail, _infer.strerror(error.code)) from None
        self.workers = [WorkerProcess(index=index, device=devices[index % len(devices)])
                        for index in range(workers)]
        self._last_reclaim = time.monotonic()
        if workers == 0:
            logger.info("store %r runs no inference workers; run requests fail with "
                        "WorkerError", store_name)
            return
        logger.info("inference service of store %r: %d worker(s) on %s, %d torch thread(s) "
                    "each, %d request slots", store_name, workers,
                    ",".join(sorted(set(devices))), self.threads,
                    self.segment.info()["slot_count"])

    def start(self) -> None:
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: WorkerProcess) -> None:
        command = [sys.executable, "-m", "shmstore.inference.worker",
                   "--name", self.store_name, "--index", str(worker.index),
                   "--device", worker.device, "--threads", str(self.threads),
                   "--log-level", self.log_level]
        worker.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True)
        worker.started_at = time.monotonic()
        logger.info("started inference worker %d: pid %d, device %s", worker.index,
                    worker.process.pid, worker.device)

    def poll(self) -> None:
        """Reap and restart dead workers, and free the slots of dead clients."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is None:
                if now >= worker.restart_at:
                    self._spawn(worker)
                continue
            status = worker.process.poll()
            if status is None:
                continue
            self._reap(worker, status, now)

        if now - self._last_reclaim >= RECLAIM_INTERVAL_S:
            self._last_reclaim = now
            freed = self.segment.reclaim_clients()
            if freed:
                logger.info("freed %d inference request slot(s) of dead clients", freed)

    def _reap(self, worker: WorkerProcess, status: int, now: float) -> None:
        assert worker.process is not None
        pid = worker.process.pid
        failed_keys = self.segment.fail_worker(worker.index, pid)
        cause = f"signal {-status}" if status < 0 else f"exit code {status}"
        logger.error("inference worker %d (pid %d) died with %s; failed %d in-flight "
                     "request(s)%s", worker.index, pid, cause, len(failed_keys),
                     f" for {sorted(set(failed_keys))}" if failed_keys else "")
        worker.process = None

        if now - worker.started_at < EARLY_DEATH_S:
            worker.quick_deaths += 1
        else:
            worker.quick_deaths = 0
        delay = 0.0 if worker.quick_deaths <= 1 else min(
            MAX_RESTART_DELAY_S, 0.5 * 2 ** (worker.quick_deaths - 2))
        worker.restart_at = now + delay
        if delay > 0:
            logger.warning("inference worker %d keeps dying soon after start; restarting it "
                           "in %.1f s", worker.index, delay)
        else:
            self._spawn(worker)

    def stop(self) -> None:
        """Stop every worker and remove the segment."""
        running = [worker for worker in self.workers if worker.process is not None]
        for worker in running:
            assert worker.process is not None
            if worker.process.poll() is None:
                worker.process.terminate()

        deadline = time.monotonic() + STOP_GRACE_S
        for worker in running:
            assert worker.process is not None
            remaining = max(0.0, deadline - time.monotonic())
            try:
                worker.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                logger.warning("inference worker %d (pid %d) ignored SIGTERM for %.0f s; "
                               "killing it", worker.index, worker.process.pid, STOP_GRACE_S)
                worker.process.kill()
                worker.process.wait()
            worker.process = None

        self.segment.close()
        logger.info("stopped the inference service of store %r", self.store_name)

    def worker_pids(self) -> List[int]:
        return [worker.process.pid for worker in self.workers if worker.process is not None]
