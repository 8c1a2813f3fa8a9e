"""A daemon SIGKILLed: clients fail fast with ConnectionLostError, a restart cleans up."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import shmstore
from conftest import read_line_with_timeout, segments_of, start_python

# Polls a key that never comes (100 s in all) and reports how the poll ended.
BLOCKED_POLL = r"""
import sys, time
import shmstore

client = shmstore.Client(sys.argv[1])
print("polling", flush=True)
started = time.monotonic()
try:
    client.poll_tensor("never", 100, 1000)
    print("returned")
except shmstore.ConnectionLostError as error:
    print(f"ConnectionLostError after {time.monotonic() - started:.2f} s: {error}")
"""

# Puts a tensor, pins a view of it, reports "ready" and sleeps until killed.
PUT_PIN_SLEEP = r"""
import sys, time
import numpy as np
import shmstore

client = shmstore.Client(sys.argv[1])
client.put_tensor("field", np.ones(1 << 18))
view = client.get_tensor("field")
print("ready", flush=True)
time.sleep(120)
"""

# Maximum time a client may take to notice a dead daemon, in seconds. The C library notices a
# stale heartbeat after 250 ms; the rest covers slow process start-up on a loaded machine.
DETECTION_LIMIT_S = 5.0


def allocated_bytes(paths: list) -> int:
    return sum(os.stat(path).st_blocks * 512 for path in paths)


@pytest.mark.timeout(60)
def test_blocked_poll_fails_after_kill(start_daemon):
    daemon = start_daemon()
    poller = start_python(BLOCKED_POLL, daemon.name)
    try:
        assert read_line_with_timeout(poller, 20) == "polling"
        time.sleep(0.3)
        daemon.kill()
        killed_at = time.monotonic()
        stdout, stderr = poller.communicate(timeout=20)
        elapsed = time.monotonic() - killed_at
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.communicate()

    assert stdout.startswith("ConnectionLostError"), stderr
    assert elapsed < DETECTION_LIMIT_S

    # Restart under the same name so that the segments of the dead daemon go.
    start_daemon(name=daemon.name)


@pytest.mark.timeout(60)
def test_new_call_fails_after_kill(start_daemon):
    daemon = start_daemon()
    client = shmstore.Client(daemon.name)
    client.put_tensor("field", np.arange(10))
    view = client.get_tensor("field")

    daemon.kill()
    started = time.monotonic()
    with pytest.raises(shmstore.ConnectionLostError) as caught:
        deadline = started + DETECTION_LIMIT_S
        while time.monotonic() < deadline:
            client.put_tensor("other", np.zeros(3))
            time.sleep(0.05)
    elapsed = time.monotonic() - started

    assert elapsed < DETECTION_LIMIT_S
    assert isinstance(caught.value, ConnectionError)
    assert np.array_equal(view, np.arange(10))
    with pytest.raises(shmstore.ConnectionLostError):
        client.get_tensor("field")

    client.close()
    del view
    start_daemon(name=daemon.name)


@pytest.mark.timeout(60)
def test_restart_after_kill(start_daemon):
    daemon = start_daemon()
    clean_segments = segments_of(daemon.name)
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("field", np.arange(10))
    daemon.kill()
    assert segments_of(daemon.name) == clean_segments

    restarted = start_daemon(name=daemon.name)

    assert f"dead daemon pid {daemon.pid}" in restarted.log_text()
    assert segments_of(daemon.name) == clean_segments
    with shmstore.Client(daemon.name) as client:
        assert client.keys() == []
        client.put_tensor("field", np.arange(5))
        assert np.array_equal(client.get_tensor("field"), np.arange(5))

    assert restarted.stop() == 0
    assert segments_of(daemon.name) == []


@pytest.mark.timeout(60)
def test_old_client_stays_lost(start_daemon):
    daemon = start_daemon()
    old_client = shmstore.Client(daemon.name)
    daemon.kill()
    start_daemon(name=daemon.name)
    # Within 250 ms of the death the old heartbeat still looks fresh, by design.
    time.sleep(0.5)

    with pytest.raises(shmstore.ConnectionLostError):
        old_client.put_tensor("field", np.zeros(2))
    old_client.close()

    with shmstore.Client(daemon.name) as new_client:
        new_client.put_tensor("field", np.zeros(2))


@pytest.mark.timeout(240)
def test_twenty_kill_cycles_flat(start_daemon):
    daemon = start_daemon(memory="8M")
    usage = []

    for cycle in range(20):
        if cycle:
            daemon = start_daemon(memory="8M", name=daemon.name)
        holder = start_python(PUT_PIN_SLEEP, daemon.name)
        try:
            assert read_line_with_timeout(holder, 20) == "ready"
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.communicate(timeout=10)
        usage.append(allocated_bytes(segments_of(daemon.name)))
        daemon.kill()

    assert usage == [usage[0]] * 20
    start_daemon(memory="8M", name=daemon.name)
    assert allocated_bytes(segments_of(daemon.name)) == usage[0]
