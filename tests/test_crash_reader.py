"""Readers that die or exit: their pins go, and nothing else changes."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import shmstore
from conftest import read_line_with_timeout, run_python, segments_of, start_python, wait_until

# Gets key, checks its checksum, reports "pinned SUM" and sleeps with the view alive.
PIN_AND_SLEEP = r"""
import sys, time
import shmstore

client = shmstore.Client(sys.argv[1])
view = client.get_tensor(sys.argv[2])
print("pinned", int(view.sum()), flush=True)
time.sleep(120)
"""

# Attaches, reads key and exits; closes the client only when asked.
READ_AND_EXIT = r"""
import sys
import shmstore

client = shmstore.Client(sys.argv[1])
view = client.get_tensor(sys.argv[2])
print(int(view.sum()))
if sys.argv[3] == "close":
    client.close()
"""


def used_bytes(name: str) -> int:
    return shmstore.store_stats(name)["used_bytes"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("change", ["overwrite", "delete"])
def test_killed_reader_pin_reclaimed(daemon, change):
    field = np.arange(1 << 18, dtype=np.int64)
    with shmstore.Client(daemon.name) as client:
        baseline = used_bytes(daemon.name)
        client.put_tensor("field", field)
        reader = start_python(PIN_AND_SLEEP, daemon.name, "field")
        try:
            assert read_line_with_timeout(reader, 20) == f"pinned {int(field.sum())}"

            if change == "overwrite":
                client.put_tensor("field", np.zeros(1, dtype=np.int64))
            else:
                client.delete_tensor("field")
            expected_after = used_bytes(daemon.name) - field.nbytes
            assert used_bytes(daemon.name) >= baseline + field.nbytes
        finally:
            reader.send_signal(signal.SIGKILL)
            reader.communicate(timeout=10)

        assert wait_until(lambda: used_bytes(daemon.name) <= expected_after, timeout_s=5)
        # The daemon logs the reclaim just after it happens, so wait for the line too.
        assert wait_until(lambda: f"pid {reader.pid} died" in daemon.log_text(), timeout_s=5)
        if change == "delete":
            assert wait_until(lambda: used_bytes(daemon.name) == baseline, timeout_s=5)


@pytest.mark.timeout(60)
def test_view_survives_while_reader_alive(daemon):
    field = np.arange(5000, dtype=np.float32)
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("field", field)
        view = client.get_tensor("field")
        reader = start_python(PIN_AND_SLEEP, daemon.name, "field")
        try:
            assert read_line_with_timeout(reader, 20).startswith("pinned")
            client.delete_tensor("field")
        finally:
            reader.send_signal(signal.SIGKILL)
            reader.communicate(timeout=10)

        # The daemon clears only the dead reader's pin, never this process's.
        assert wait_until(lambda: f"pid {reader.pid} died" in daemon.log_text(), timeout_s=5)
        assert np.array_equal(view, field)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ending", ["close", "exit"])
def test_reader_exit_removes_nothing(daemon, ending):
    field = np.arange(100, dtype=np.int32)
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("field", field)
    segments = segments_of(daemon.name)
    used = used_bytes(daemon.name)

    result = run_python(READ_AND_EXIT, daemon.name, "field", ending)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(int(field.sum()))
    assert daemon.alive()
    assert segments_of(daemon.name) == segments
    assert wait_until(lambda: shmstore.store_stats(daemon.name)["client_count"] == 0,
                      timeout_s=5)
    assert used_bytes(daemon.name) == used
    with shmstore.Client(daemon.name) as client:
        assert np.array_equal(client.get_tensor("field"), field)
