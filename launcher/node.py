"""Node-side actions of a launch: `python -m shmstore.launcher.node serve|prepare|cleanup`.

The launcher runs these on every node: directly for a local launch, through srun or pbsdsh
under a workload manager.

- serve: run the daemon (`shmstore serve`) in this process, its log on stdout.
- prepare: wait until the store of this node accepts clients, then store the models in it.
- cleanup: stop a daemon of the store that still runs on this node (SIGTERM, then SIGKILL),
  then remove the store's leftover segments.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from typing import Optional

import psutil

from .options import OptionError, parse_model_spec
from .segments import remove_segments

logger = logging.getLogger("shmstore.launcher")

RETRY_INTERVAL_S = 0.05


def serve(name: str, memory: str, workers: Optional[int], device: Optional[str]) -> int:
    """Run the daemon in this process until it stops; return its exit code."""
    from shmstore import cli

    # pbsdsh -o returns only stdout, so the daemon's log (stderr) joins it.
    sys.stderr.flush()
    os.dup2(sys.stdout.fileno(), sys.stderr.fileno())

    argv = ["serve", "--name", name, "--memory", memory]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if device is not None:
        argv += ["--device", device]
    result = cli.main(argv)
    return int(result or 0)


def wait_until_ready(name: str, timeout_s: float) -> None:
    """Wait until store `name` accepts clients, for at most timeout_s seconds.

    A control segment that the daemon has created but not yet initialized reads as a layout
    mismatch, so that error is retried like a missing store until the deadline. After the
    deadline the last error is raised.
    """
    import shmstore

    deadline = time.monotonic() + timeout_s
    while True:
        remaining_s = max(deadline - time.monotonic(), 0.0)
        try:
            shmstore.wait_for_store(name, remaining_s)
            return
        except shmstore.LayoutMismatchError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_INTERVAL_S)


def prepare(name: str, timeout_s: float, model_arguments: list[str]) -> int:
    """Wait until store `name` on this node is ready, then store the models; return 0 on success."""
    import shmstore

    host = socket.gethostname()
    try:
        models = [parse_model_spec(argument) for argument in model_arguments]
    except OptionError as error:
        logger.error("%s", error)
        return 2

    try:
        wait_until_ready(name, timeout_s)
    except shmstore.ShmstoreError as error:
        logger.error("waiting %g s for store %r on %s failed: %s", timeout_s, name, host, error)
        return 1

    try:
        with shmstore.Client(name) as client:
            for model in models:
                client.set_model_from_file(
                    model.key,
                    model.path,
                    backend=model.backend,
                    device=model.device,
                    batch_size=model.batch_size,
                    min_batch_size=model.min_batch_size,
                    min_batch_timeout=model.min_batch_timeout,
                )
                logger.info("stored model %r from %s in store %r on %s",
                            model.key, model.path, name, host)
    except (shmstore.ShmstoreError, OSError) as error:
        logger.error("storing the models in store %r on %s failed: %s", name, host, error)
        return 1

    logger.info("store %r on %s is ready (%d model(s))", name, host, len(models))
    return 0


def find_daemons(name: str) -> list[psutil.Process]:
    """Find the live processes on this node that run the daemon of store `name`.

    They are interpreters started as `PYTHON -m shmstore.launcher.node serve --name NAME ...`.
    A tool that only carries that command line in its arguments (srun, pbsdsh) does not match.
    """
    daemons = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = process.info["cmdline"] or []
        if cmdline[1:6] == ["-m", "shmstore.launcher.node", "serve", "--name", name]:
            daemons.append(process)
    return daemons


def wait_for_exit(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until the processes exit; return those still alive after timeout_s.

    A zombie counts as exited: its parent (often the launcher) reaps it later.
    """
    deadline = time.monotonic() + timeout_s
    alive = list(processes)
    while alive:
        alive = [process for process in alive if process_is_running(process)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(RETRY_INTERVAL_S)
    return alive


def process_is_running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cleanup(name: str, grace_period_s: float) -> int:
    """Stop the daemons of store `name` on this node, then remove its segments; return 0."""
    daemons = find_daemons(name)
    for daemon in daemons:
        logger.warning("daemon of store %r (pid %d) still runs; sending SIGTERM", name, daemon.pid)
        try:
            daemon.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue

    alive = wait_for_exit(daemons, grace_period_s)
    for daemon in alive:
        logger.warning("daemon of store %r (pid %d) ignored SIGTERM for %g s; sending SIGKILL",
                       name, daemon.pid, grace_period_s)
        try:
            daemon.kill()
        except psutil.NoSuchProcess:
            continue
    wait_for_exit(alive, grace_period_s)

    remove_segments(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shmstore.launcher.node",
                                     description="Node-side steps of `shmstore launch`.")
    actions = parser.add_subparsers(dest="action", required=True)

    serve_parser = actions.add_parser("serve", help="run the daemon of this node")
    serve_parser.add_argument("--name", required=True, help="store name")
    serve_parser.add_argument("--memory", required=True, help="arena size, like 512M or 4G")
    serve_parser.add_argument("--workers", type=int, help="number of inference workers")
    serve_parser.add_argument("--device", help="inference device, like cpu or cuda:0")

    prepare_parser = actions.add_parser("prepare", help="wait for the store, store the models")
    prepare_parser.add_argument("--name", required=True, help="store name")
    prepare_parser.add_argument("--timeout", type=float, default=60.0,
                                help="seconds to wait for the store to become ready (default 60)")
    prepare_parser.add_argument("--model", action="append", default=[],
                                help="KEY=PATH[,setting=value...], as for shmstore launch")

    cleanup_parser = actions.add_parser("cleanup", help="stop the daemon, remove segments")
    cleanup_parser.add_argument("--name", required=True, help="store name")
    cleanup_parser.add_argument("--grace-period", type=float, default=5.0,
                                help="seconds between SIGTERM and SIGKILL (default 5)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run one node-side action; return its exit code."""
    arguments = build_parser().parse_args(argv)
    if arguments.action == "serve":
        # The daemon configures its own logging, which it skips when handlers already exist.
        return serve(arguments.name, arguments.memory, arguments.workers, arguments.device)

    logging.basicConfig(level=logging.INFO, format="shmstore launch (node): %(message)s")
    if arguments.action == "prepare":
        return prepare(arguments.name, arguments.timeout, arguments.model)
    return cleanup(arguments.name, arguments.grace_period)


if __name__ == "__main__":
    sys.exit(main())
