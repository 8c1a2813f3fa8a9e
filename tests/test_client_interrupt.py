"""Ctrl-C (SIGINT) reaches Python code that is blocked in a client call."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import read_line_with_timeout, start_python

# Polls a key that never comes (100 s in all) and reports KeyboardInterrupt.
BLOCKED_POLL = r"""
import sys, time
import shmstore

client = shmstore.Client(sys.argv[1])
print("polling", flush=True)
try:
    client.poll_tensor("never", int(sys.argv[2]), 1000)
    print("returned")
except KeyboardInterrupt:
    print("KeyboardInterrupt")
    sys.exit(3)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interval_ms", [100, 10_000], ids=["short-sleeps", "long-sleeps"])
def test_sigint_interrupts_poll(store, interval_ms):
    poller = start_python(BLOCKED_POLL, store, str(interval_ms))
    try:
        assert read_line_with_timeout(poller, 20) == "polling"
        time.sleep(0.3)
        poller.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        stdout, stderr = poller.communicate(timeout=10)
        elapsed = time.monotonic() - interrupted_at
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.communicate()

    assert poller.returncode == 3, stderr
    assert stdout.strip() == "KeyboardInterrupt"
    # About 50 ms to notice the signal; the rest is process exit on a loaded machine.
    assert elapsed < 2.0
