"""Run a private shmstore daemon (`shmstore serve`) for the benchmark, and stop it."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import time

log = logging.getLogger("bench.store")


class StoreDaemonError(RuntimeError):
    """The shmstore command is missing, or the daemon did not start or stop cleanly."""


def shmstore_command() -> list[str]:
    """Return the argv prefix that runs the `shmstore` command of this Python environment."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "shmstore")
    if os.access(beside_python, os.X_OK):
        return [beside_python]

    on_path = shutil.which("shmstore")
    if on_path is not None:
        return [on_path]

    raise StoreDaemonError("the shmstore command is not installed; run "
                           "`pip install -e .` in the repository root first")


def store_segments(name: str) -> list[str]:
    """Return the paths of the shared-memory segments of store name that exist now."""
    return sorted(glob.glob(f"/dev/shm/shmstore-{name}-*"))


class StoreDaemon:
    """A `shmstore serve` process with a unique store name.

    Use it as a context manager: the daemon starts on entry, and on exit it is stopped with
    SIGTERM and its segments are checked to be gone.
    """

    def __init__(self, memory: str = "512M", start_timeout_s: float = 15.0) -> None:
        self.name = f"bench-{os.getpid()}"
        self.memory = memory
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "StoreDaemon":
        command = shmstore_command() + ["serve", "--name", self.name, "--memory", self.memory]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("started shmstore serve (pid %d) for store %s with %s of arena memory",
                 self.process.pid, self.name, self.memory)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_until_ready(self) -> None:
        """Wait until `shmstore status` reads the statistics of the new store."""
        assert self.process is not None
        status_command = shmstore_command() + ["status", "--name", self.name]
        deadline = time.monotonic() + self.start_timeout_s

        while True:
            if self.process.poll() is not None:
                raise StoreDaemonError(f"shmstore serve for store {self.name} exited with "
                                       f"code {self.process.returncode} at start-up")
            status = subprocess.run(status_command, stdin=subprocess.DEVNULL,
                                    capture_output=True, timeout=30)
            if status.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise StoreDaemonError(
                    f"store {self.name} was not ready within {self.start_timeout_s} s; "
                    f"last `shmstore status` output: {status.stderr.decode(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after 10 s).

        Raises StoreDaemonError if segments of the store are left behind.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("shmstore serve (pid %d) ignored SIGTERM for 10 s; killing it",
                            self.process.pid)
                self.process.kill()
                self.process.wait()
            log.info("stopped shmstore serve (pid %d)", self.process.pid)
        self.process = None

        # The daemon removes its segments when it stops. Any that are left are removed here,
        # so that the benchmark leaves nothing in /dev/shm, and then reported as a failure.
        left_behind = store_segments(self.name)
        for path in left_behind:
            os.unlink(path)
        if left_behind:
            raise StoreDaemonError(f"shmstore serve left segments behind: {left_behind}")
