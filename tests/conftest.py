"""Fixtures shared by the Python tests: real daemons, a seed, helper processes.

Every daemon runs as a real `python -m shmstore serve` subprocess under a name unique to this
test process. At teardown each daemon gets SIGTERM, and the fixture fails the test if the
daemon does not stop, or if any /dev/shm/shmstore-<name>-* segment remains.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

logger = logging.getLogger("shmstore.tests")

READY_MARK = "ready name="
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

_store_numbers = itertools.count()


def unique_store_name(label: str = "t") -> str:
    """Return a store name that no other test (of this or another test process) uses."""
    return f"{label}-{os.getpid()}-{next(_store_numbers)}"


def segments_of(name: str) -> List[str]:
    return sorted(glob.glob(f"/dev/shm/shmstore-{name}-*"))


class DaemonProcess:
    """One `python -m shmstore serve` subprocess, its log in a file."""

    def __init__(self, name: str, memory: str, log_path: Path, extra_args: List[str]) -> None:
        self.name = name
        self.memory = memory
        self.log_path = log_path
        self.extra_args = extra_args
        self.process: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> List[str]:
        return [sys.executable, "-m", "shmstore", "serve", "--name", self.name,
                "--memory", self.memory, *self.extra_args]

    def start(self, wait: bool = True) -> "DaemonProcess":
        log_file = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=log_file, stderr=log_file)
        finally:
            log_file.close()
        if wait:
            self.wait_ready()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for the ready line of this start; fail with the log if it does not come."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        mark = f"{READY_MARK}{self.name} pid={self.process.pid}"
        while time.monotonic() < deadline:
            if mark in self.log_text():
                return
            if self.process.poll() is not None:
                pytest.fail(f"shmstore serve {self.name} exited with {self.process.returncode} "
                            f"before it was ready; log:\n{self.log_text()}")
            time.sleep(0.02)
        pytest.fail(f"shmstore serve {self.name} not ready within {timeout_s} s; "
                    f"log:\n{self.log_text()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon and reap it; its segments stay behind."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send signum, wait for the exit and return the exit code; SIGKILL after the timeout."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"shmstore serve {self.name} ignored signal {signum} for "
                            f"{STOP_TIMEOUT_S} s; log:\n{self.log_text()}")
        return self.process.returncode


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Return a function that starts a daemon: start_daemon(memory="64M", name=None, args=[]).

    Teardown stops every daemon it started, then checks that no segment of their names
    remains.
    """
    daemons: List[DaemonProcess] = []

    def start(memory: str = "64M", name: Optional[str] = None,
              args: Optional[List[str]] = None, wait: bool = True) -> DaemonProcess:
        name = name or unique_store_name()
        log_path = tmp_path / f"daemon-{name}.log"
        daemon = DaemonProcess(name, memory, log_path, list(args or []))
        daemons.append(daemon)
        return daemon.start(wait=wait)

    yield start

    failures = []
    for daemon in daemons:
        if daemon.alive():
            code = daemon.stop()
            if code != 0:
                failures.append(f"shmstore serve {daemon.name} exited with {code}; log:\n"
                                f"{daemon.log_text()}")
    for name in sorted({daemon.name for daemon in daemons}):
        left = segments_of(name)
        if left:
            failures.append(f"segments of store {name} left behind: {left}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def daemon(start_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A running daemon with a 64 MiB arena."""
    return start_daemon()


@pytest.fixture
def store(daemon: DaemonProcess) -> str:
    """The name of a running store with a 64 MiB arena."""
    return daemon.name


@pytest.fixture
def client(store: str) -> Iterator["object"]:
    import shmstore

    with shmstore.Client(store) as connected:
        yield connected


@pytest.fixture
def seed() -> int:
    """Random seed of a concurrency test: $SHMSTORE_TEST_SEED, else a fresh one (logged)."""
    text = os.environ.get("SHMSTORE_TEST_SEED")
    value = int(text) if text else random.SystemRandom().randrange(1 << 31)
    logger.warning("SHMSTORE_TEST_SEED=%d", value)
    print(f"SHMSTORE_TEST_SEED={value}")
    return value


def run_python(code: str, *args: str, timeout: float = 60.0,
               env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run code in a new Python process and return the finished process (output captured)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def start_python(code: str, *args: str) -> subprocess.Popen:
    """Start code in a new Python process with stdout and stderr piped, text mode."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_line_with_timeout(process: subprocess.Popen, timeout_s: float) -> str:
    """Read one stdout line of process, failing the test after timeout_s."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            process.kill()
            _, stderr = process.communicate()
            pytest.fail(f"helper process wrote no line within {timeout_s} s; stderr:\n{stderr}")
    return process.stdout.readline().strip()


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll condition until it returns True or timeout_s passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
