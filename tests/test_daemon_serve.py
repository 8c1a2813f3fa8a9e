"""`shmstore serve`: start-up checks, logs, signals, segment modes and idle CPU."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

import shmstore
from conftest import segments_of, unique_store_name, wait_until


def serve_command(name: str, memory: str, *extra: str) -> list:
    return [sys.executable, "-m", "shmstore", "serve", "--name", name, "--memory", memory,
            *extra]


@pytest.mark.timeout(60)
def test_serve_logs_lifecycle(daemon):
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("field", np.zeros(4))
        client_pid = os.getpid()

    assert wait_until(lambda: f"client detached: pid {client_pid}" in daemon.log_text(), 5)
    assert daemon.stop(signal.SIGTERM) == 0

    log = daemon.log_text()
    assert f"starting store '{daemon.name}': arena 64.0 MiB ({64 << 20} bytes)" in log
    assert f"shmstore: ready name={daemon.name} pid={daemon.pid}" in log
    assert f"client attached: pid {client_pid}" in log
    assert "received SIGTERM" in log
    assert f"stopped store '{daemon.name}'" in log
    assert segments_of(daemon.name) == []


@pytest.mark.timeout(60)
def test_sigint_stops_serve(daemon):
    code = daemon.stop(signal.SIGINT)

    assert code == 0
    assert "received SIGINT" in daemon.log_text()
    assert "Traceback" not in daemon.log_text()
    assert segments_of(daemon.name) == []


@pytest.mark.timeout(60)
def test_second_daemon_rejected(daemon):
    second = subprocess.run(serve_command(daemon.name, "16M"), capture_output=True, text=True,
                            timeout=30)

    assert second.returncode == 1
    assert daemon.name in second.stderr
    assert str(daemon.pid) in second.stderr
    assert daemon.alive()
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("still-served", np.ones(1))


@pytest.mark.timeout(60)
def test_memory_beyond_shm_rejected():
    name = unique_store_name()
    free_bytes = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    requested = free_bytes + (1 << 30)

    result = subprocess.run(serve_command(name, str(requested)), capture_output=True,
                            text=True, timeout=30)

    assert result.returncode == 1
    assert str(requested) in result.stderr
    assert "/dev/shm" in result.stderr
    assert "--memory" in result.stderr
    assert segments_of(name) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("memory", ["lots", "0", "-5M", "1.5X"])
def test_invalid_memory_rejected(memory):
    name = unique_store_name()

    # "--memory=VALUE" so that argparse does not take "-5M" for an option.
    command = [sys.executable, "-m", "shmstore", "serve", "--name", name, f"--memory={memory}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert f"invalid size {memory!r}" in result.stderr
    assert segments_of(name) == []


@pytest.mark.timeout(60)
def test_segments_mode_0600(daemon):
    segments = segments_of(daemon.name)

    assert len(segments) >= 2
    for path in segments:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, f"{path} has mode {oct(mode)}"


@pytest.mark.timeout(60)
def test_idle_daemon_cpu(daemon):
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("field", np.zeros(1000))
    process = psutil.Process(daemon.pid)
    time.sleep(0.5)

    before = process.cpu_times()
    started = time.monotonic()
    time.sleep(2.0)
    after = process.cpu_times()
    elapsed = time.monotonic() - started

    used = (after.user - before.user) + (after.system - before.system)
    assert used / elapsed < 0.02, f"idle daemon used {used:.3f} s of CPU in {elapsed:.2f} s"


@pytest.mark.timeout(60)
def test_limits_options(start_daemon):
    daemon = start_daemon(memory="1.5M", args=["--max-clients", "3", "--max-keys", "100"])

    stats = shmstore.store_stats(daemon.name)

    assert stats["max_clients"] == 3
    assert stats["max_keys"] >= 100
    assert stats["arena_bytes"] <= int(1.5 * (1 << 20))
    assert stats["arena_bytes"] > (1 << 20)


@pytest.mark.timeout(60)
def test_reconnect_loop_reuses_slots(start_daemon):
    daemon = start_daemon(memory="4M", args=["--max-clients", "2"])

    # Each close leaves its slot to the daemon to free; a connect that finds every slot
    # taken must wait for those frees instead of failing.
    for round_number in range(300):
        client = shmstore.Client(daemon.name)
        client.put_tensor("round", np.full(1, round_number))
        client.close()

    with shmstore.Client(daemon.name) as client:
        assert int(client.get_tensor("round")[0]) == 299

    held = [shmstore.Client(daemon.name), shmstore.Client(daemon.name)]
    try:
        started = time.monotonic()
        with pytest.raises(shmstore.StoreFullError):
            shmstore.Client(daemon.name)
        # No slot is being freed, so the connect fails at once.
        assert time.monotonic() - started < 1.0
    finally:
        for client in held:
            client.close()


@pytest.mark.timeout(60)
def test_name_from_environment(tmp_path):
    name = unique_store_name()
    log_path = tmp_path / "serve.log"
    environment = dict(os.environ, SHMSTORE_NAME=name)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "shmstore", "serve", "--memory", "4M"],
                                   stdout=log_file, stderr=log_file, env=environment)
    try:
        assert wait_until(lambda: f"ready name={name}" in log_path.read_text(), 20)
        assert shmstore.store_stats(name)["daemon_pid"] == process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert process.returncode == 0
    assert segments_of(name) == []


@pytest.mark.timeout(60)
def test_library_rejects_oversized_arena():
    from shmstore import _core

    name = unique_store_name()
    free_bytes = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize

    with pytest.raises(shmstore.OutOfMemoryError) as caught:
        _core.Daemon(name, free_bytes + (1 << 30))

    assert "/dev/shm" in str(caught.value)
    assert str(free_bytes + (1 << 30)) in str(caught.value)
    assert segments_of(name) == []
