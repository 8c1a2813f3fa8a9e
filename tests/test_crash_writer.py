"""A writer SIGKILLed between put_begin and commit leaves no half tensor and no leaked bytes."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import shmstore
from conftest import read_line_with_timeout, start_python, wait_until

# Begins a put of a 16 MiB tensor, fills half of it, reports "begun" and sleeps until killed.
BEGIN_AND_SLEEP = r"""
import sys, time
import shmstore
from shmstore import _core

name, key = sys.argv[1], sys.argv[2]
client = shmstore.Client(name)
pending = client._core.put_begin(key, _core.DTYPE_CODES["uint8"], (16 << 20,), _core.ORDER_C)
pending.memory[: 8 << 20] = b"\xab" * (8 << 20)
print("begun", flush=True)
time.sleep(120)
"""


def used_bytes(name: str) -> int:
    return shmstore.store_stats(name)["used_bytes"]


@pytest.mark.timeout(60)
def test_killed_writer_leaks_nothing(daemon):
    baseline = used_bytes(daemon.name)
    writer = start_python(BEGIN_AND_SLEEP, daemon.name, "half")
    try:
        assert read_line_with_timeout(writer, 20) == "begun"
        assert used_bytes(daemon.name) >= baseline + (16 << 20)

        with shmstore.Client(daemon.name) as client:
            assert not client.tensor_exists("half")
            assert "half" not in client.keys()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=10)

    assert wait_until(lambda: used_bytes(daemon.name) == baseline, timeout_s=5)
    with shmstore.Client(daemon.name) as client:
        assert not client.tensor_exists("half")
    # The daemon logs the reclaim just after it happens, so wait for the line too.
    assert wait_until(lambda: f"pid {writer.pid} died" in daemon.log_text(), timeout_s=5)


@pytest.mark.timeout(60)
def test_killed_overwrite_keeps_old(daemon):
    with shmstore.Client(daemon.name) as client:
        original = np.arange(1000, dtype=np.uint8)
        client.put_tensor("field", original)
        with_original = used_bytes(daemon.name)

        writer = start_python(BEGIN_AND_SLEEP, daemon.name, "field")
        try:
            assert read_line_with_timeout(writer, 20) == "begun"
            assert np.array_equal(client.get_tensor("field"), original)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.communicate(timeout=10)

        assert wait_until(lambda: used_bytes(daemon.name) == with_original, timeout_s=5)
        assert np.array_equal(client.get_tensor("field"), original)
        client.put_tensor("field", np.zeros(4))
        assert np.array_equal(client.get_tensor("field"), np.zeros(4))


@pytest.mark.timeout(60)
def test_failed_copy_aborts_put(client, store, monkeypatch):
    baseline = used_bytes(store)

    def failing_copyto(*args, **kwargs):
        raise RuntimeError("copy failed on purpose")

    # The strided input takes the put_begin + np.copyto path; the copy fails after put_begin.
    monkeypatch.setattr(np, "copyto", failing_copyto)
    with pytest.raises(RuntimeError, match="on purpose"):
        client.put_tensor("broken", np.arange(100, dtype=np.float64)[::2])
    monkeypatch.undo()

    assert used_bytes(store) == baseline
    assert not client.tensor_exists("broken")


@pytest.mark.timeout(60)
def test_dropped_pending_put_aborts(client, store):
    baseline = used_bytes(store)

    pending = client._core.put_begin("dropped", shmstore._core.DTYPE_CODES["int32"], (1000,),
                                     shmstore._core.ORDER_C)
    assert used_bytes(store) > baseline
    del pending

    assert used_bytes(store) == baseline
    assert not client.tensor_exists("dropped")


@pytest.mark.timeout(60)
def test_unreaped_writer_reclaimed(daemon):
    baseline = used_bytes(daemon.name)
    writer = start_python(BEGIN_AND_SLEEP, daemon.name, "half")
    try:
        assert read_line_with_timeout(writer, 20) == "begun"
        writer.send_signal(signal.SIGKILL)

        # The killed writer stays a zombie until it is reaped below; the daemon must not wait
        # for that.
        assert wait_until(lambda: used_bytes(daemon.name) == baseline, timeout_s=5)
    finally:
        writer.kill()
        writer.communicate(timeout=10)
