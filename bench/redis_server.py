"""Start a private redis-server on a unix socket for the benchmark, and stop it."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time

log = logging.getLogger("bench.redis")

MIN_MAJOR_VERSION = 7


class RedisServerError(RuntimeError):
    """redis-server is missing, too old, or did not start."""


def redis_server_path() -> str:
    """Return the path of redis-server, or raise RedisServerError if it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisServerError(
            "redis-server not found on PATH; install it with "
            "`apt-get install -y redis-server` (bash scripts/install.sh does)")
    return path


def redis_server_version(path: str) -> str:
    """Return the version that `redis-server --version` prints, such as "7.0.15"."""
    output = subprocess.run([path, "--version"], check=True, capture_output=True,
                            text=True, timeout=10).stdout
    match = re.search(r"v=(\d+\.\d+\.\d+)", output)
    if match is None:
        raise RedisServerError(f"cannot read the version from {path} --version: {output!r}")
    return match.group(1)


class RedisServer:
    """A redis-server without persistence that listens only on a unix socket in a temp dir.

    Use it as a context manager: the server starts on entry and is stopped, and its
    directory removed, on exit.
    """

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.path = redis_server_path()
        self.version = redis_server_version(self.path)
        if int(self.version.split(".")[0]) < MIN_MAJOR_VERSION:
            raise RedisServerError(f"redis-server {self.version} is older than "
                                   f"{MIN_MAJOR_VERSION}; install Redis 7 or newer")

        self.start_timeout_s = start_timeout_s
        self.directory = ""
        self.socket_path = ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "RedisServer":
        self.directory = tempfile.mkdtemp(prefix="shmstore-bench-redis-")
        self.socket_path = os.path.join(self.directory, "redis.sock")
        command = [
            self.path,
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--logfile", os.path.join(self.directory, "redis.log"),
            "--daemonize", "no",
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("started redis-server %s (pid %d) on %s", self.version, self.process.pid,
                 self.socket_path)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_until_ready(self) -> None:
        """Wait until the server answers PING on its socket."""
        import redis

        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with code {self.process.returncode} at start-up; "
                    f"see {os.path.join(self.directory, 'redis.log')}")
            if os.path.exists(self.socket_path):
                try:
                    redis.Redis(unix_socket_path=self.socket_path).ping()
                    return
                except redis.ConnectionError:
                    pass
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server did not answer on {self.socket_path} within "
                    f"{self.start_timeout_s} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("redis-server (pid %d) ignored SIGTERM for 10 s; killing it",
                            self.process.pid)
                self.process.kill()
                self.process.wait()
            log.info("stopped redis-server (pid %d)", self.process.pid)
        self.process = None

        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""
