"""The daemon of a store (`shmstore serve`): owns the segments, reclaims what dead clients left.

NOTE [daemon start-up and shutdown]
Start-up:
  1. check that /dev/shm has room for the arena (the C library checks again when it reserves
     the memory with posix_fallocate);
  2. install the SIGINT and SIGTERM handlers, which only record the signal, so that a signal
     that arrives from here on leads to the clean shutdown below;
  3. create the segments (shmstore_daemon_create); this removes segments of a dead daemon of
     the same name and fails with StoreBusyError when a live daemon owns the name;
  4. start the inference workers (start_inference_workers), when --workers is given;
  5. log "ready name=NAME pid=PID"; from here on clients may attach.
Serving: shmstore_daemon_poll in a loop, 100 ms per round, with the GIL released. Each round
writes the heartbeat that clients check and reclaims the slots, pins and half-made puts of
clients that died.
Shutdown, on SIGINT or SIGTERM, or when housekeeping fails:
  1. stop the inference workers;
  2. shmstore_daemon_destroy marks the store as stopping, so blocked and new client calls fail
     with ConnectionLostError at once, then unlinks every segment;
  3. restore the previous signal handlers and log "stopped".
A daemon killed with SIGKILL does none of this. Clients then notice the stale heartbeat and
the dropped flock within about 250 ms, and the next daemon of the name removes the segments.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import types
from typing import Any, List, Optional

from shmstore import _core
from shmstore.errors import ShmstoreError
from shmstore.sizes import format_size

logger = logging.getLogger("shmstore.daemon")

# Maximum wait of one housekeeping round, in ms. Clients expect a heartbeat at least this often.
POLL_TIMEOUT_MS = 100

SHM_DIR = "/dev/shm"


@dataclasses.dataclass
class ServeOptions:
    """Settings of one `shmstore serve` run."""

    name: str
    memory_bytes: int
    max_clients: int = 0        # 0: the C library's default (256)
    max_keys: int = 0           # 0: the C library's default (65536)
    workers: Optional[int] = None
    device: Optional[str] = None
    torch_threads: Optional[int] = None    # None: cores divided among the workers


def check_shm_space(memory_bytes: int) -> Optional[str]:
    """Return an error message when /dev/shm has less free space than memory_bytes, else None."""
    try:
        filesystem = os.statvfs(SHM_DIR)
    except OSError as error:
        logger.warning("cannot read the free space of %s (%s); the C library checks it when "
                       "it reserves the arena", SHM_DIR, error)
        return None

    free_bytes = filesystem.f_bavail * filesystem.f_frsize
    if memory_bytes <= free_bytes:
        return None
    return (f"the requested arena of {format_size(memory_bytes)} ({memory_bytes} bytes) is "
            f"larger than the free space of {SHM_DIR}, {format_size(free_bytes)} "
            f"({free_bytes} bytes); ask for less with --memory, or free or enlarge {SHM_DIR}")


# ---- inference workers ----------------------------------------------------------------------
# The inference service (shmstore/inference/service.py) owns the segment shmstore-NAME-infer and
# the worker processes, and returns in a list for stop_inference_workers. See NOTE [daemon start-up and shutdown] and NOTE [inference service start-up and
# shutdown] in that module.
# The segment exists even without workers, so that run_model fails at once with a clear
# WorkerError, and so that a stale segment of a dead daemon with workers is replaced.
def start_inference_workers(options: ServeOptions) -> List[Any]:
    from shmstore.inference.service import InferenceService

    service = InferenceService(options.name, options.workers or 0, options.device or "cpu",
                               threads=options.torch_threads,
                               log_level=logging.getLevelName(logger.getEffectiveLevel()))
    service.start()
    return [service]


def poll_inference_workers(workers: List[Any]) -> None:
    for service in workers:
        service.poll()


def stop_inference_workers(workers: List[Any]) -> None:
    for service in workers:
        service.stop()
# ---- end of inference workers ---------------------------------------------------------------


def log_event(name: str, event: tuple) -> None:
    """Log one housekeeping event of store name, as returned by Daemon.poll()."""
    kind, pid, reclaimed_bytes, unpinned_views = event
    if kind == _core.EVENT_ATTACH:
        logger.info("client attached: pid %d", pid)
    elif kind == _core.EVENT_DETACH:
        logger.info("client detached: pid %d", pid)
    elif kind == _core.EVENT_DIED:
        logger.warning("client pid %d died; reclaimed %s (%d bytes) and %d pinned view(s)",
                       pid, format_size(reclaimed_bytes), reclaimed_bytes, unpinned_views)
    elif kind == _core.EVENT_STALE:
        logger.warning("removed stale segments of store %r left by dead daemon pid %d",
                       name, pid)
    else:
        logger.warning("unknown housekeeping event %d (pid %d) from the C library", kind, pid)


def serve(options: ServeOptions) -> int:
    """Run the daemon of store options.name in the foreground until a signal; return the exit code.

    See NOTE [daemon start-up and shutdown] at the top of this module.
    """
    pid = os.getpid()
    logger.info("starting store %r: arena %s (%d bytes), max clients %s, max keys %s, pid %d",
                options.name, format_size(options.memory_bytes), options.memory_bytes,
                options.max_clients or "default", options.max_keys or "default", pid)

    space_error = check_shm_space(options.memory_bytes)
    if space_error is not None:
        logger.error("cannot start store %r: %s", options.name, space_error)
        return 1

    stop_signals: List[int] = []

    def request_stop(signum: int, frame: Optional[types.FrameType]) -> None:
        del frame
        stop_signals.append(signum)

    # The handlers go in before the segments exist: a SIGTERM that arrived between creating
    # them and installing the handlers would kill the process and leave the segments behind.
    previous_handlers = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }

    try:
        daemon = _core.Daemon(options.name, options.memory_bytes, options.max_clients,
                              options.max_keys)
    except ShmstoreError as error:
        logger.error("cannot start store %r: %s", options.name, error)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        return 1

    exit_code = 0
    workers: List[Any] = []
    try:
        if not stop_signals:
            workers = start_inference_workers(options)
            logger.info("ready name=%s pid=%d", options.name, pid)

        while not stop_signals:
            for event in daemon.poll(POLL_TIMEOUT_MS):
                log_event(options.name, event)
            poll_inference_workers(workers)

        logger.info("received %s; stopping store %r", signal.Signals(stop_signals[0]).name,
                    options.name)
    except ShmstoreError as error:
        logger.error("housekeeping of store %r failed, stopping it: %s", options.name, error)
        exit_code = 1
    finally:
        stop_inference_workers(workers)
        try:
            daemon.destroy()
        except ShmstoreError as error:
            logger.error("removing the segments of store %r failed: %s", options.name, error)
            exit_code = 1
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)

    logger.info("stopped store %r, pid %d", options.name, pid)
    return exit_code
