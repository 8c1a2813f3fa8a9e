"""Clients SIGKILLed at random moments of put/get/delete/rename/copy loops leave a consistent
store: every key readable with intact bytes, used bytes back to zero once the keys are gone, and
every descriptor free again.
"""

from __future__ import annotations

import random
import signal
import time

import numpy as np
import pytest

import shmstore
from conftest import read_line_with_timeout, start_python, wait_until

ROUNDS = 16
WORKERS_PER_ROUND = 2
MAX_KEYS = 16

# Runs random key operations on eight keys until killed. Every tensor is uint8 filled with its
# own length modulo 251, so any reader can check a tensor's bytes against its size. Some views
# are kept alive so that the kill also hits processes that pin old versions.
OPERATION_LOOP = r"""
import random, sys
import numpy as np
import shmstore

name, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
client = shmstore.Client(name)
keys = [f"k{i}" for i in range(8)]
held = []
print("ready", flush=True)
while True:
    operation = rng.randrange(6)
    key = rng.choice(keys)
    other = rng.choice(keys)
    try:
        if operation == 0:
            length = rng.randrange(0, 20000)
            client.put_tensor(key, np.full(length, length % 251, dtype=np.uint8))
        elif operation == 1:
            view = client.get_tensor(key)
            if not (view == view.size % 251).all():
                sys.exit(f"corrupt tensor under {key}: {view.size} bytes")
            held = (held + [view])[-10:]
        elif operation == 2:
            client.delete_tensor(key)
        elif operation == 3:
            client.rename_tensor(key, other)
        elif operation == 4:
            client.copy_tensor(key, other)
        else:
            pending = client._core.put_begin(key, 9, (100,), 0)
            pending.memory[:] = bytes([100]) * 100
            if rng.random() < 0.5:
                pending.commit()
            else:
                pending.abort()
    except shmstore.KeyNotFoundError:
        pass
"""


def check_all_keys(client: shmstore.Client) -> None:
    for key in client.keys():
        try:
            view = client.get_tensor(key)
        except shmstore.KeyNotFoundError:
            continue
        assert (view == view.size % 251).all(), f"tensor under {key!r} is corrupt"


@pytest.mark.timeout(120)
def test_random_kills_leak_nothing(start_daemon, seed):
    daemon = start_daemon(memory="16M", args=["--max-keys", str(MAX_KEYS)])
    rng = random.Random(seed)

    with shmstore.Client(daemon.name) as client:
        baseline = shmstore.store_stats(daemon.name)["used_bytes"]

        for round_number in range(ROUNDS):
            workers = [start_python(OPERATION_LOOP, daemon.name, str(rng.randrange(1 << 30)))
                       for _ in range(WORKERS_PER_ROUND)]
            for worker in workers:
                assert read_line_with_timeout(worker, 20) == "ready"
            time.sleep(rng.uniform(0.02, 0.3))

            for worker in workers:
                worker.send_signal(signal.SIGKILL)
            for worker in workers:
                _, stderr = worker.communicate(timeout=10)
                assert worker.returncode == -signal.SIGKILL, f"round {round_number}: {stderr}"
            check_all_keys(client)

        def only_this_client() -> bool:
            return shmstore.store_stats(daemon.name)["client_count"] == 1

        assert wait_until(only_this_client, timeout_s=5)
        for key in client.keys():
            client.delete_tensor(key)
        assert shmstore.store_stats(daemon.name)["key_count"] == 0
        assert shmstore.store_stats(daemon.name)["used_bytes"] == baseline

        # The store has twice MAX_KEYS descriptors; a leaked one makes the last put fail.
        views = []
        for version in range(2 * MAX_KEYS):
            client.put_tensor("version", np.full(1, version))
            views.append(client.get_tensor("version"))
        assert [int(view[0]) for view in views] == list(range(2 * MAX_KEYS))
        del views
        client.delete_tensor("version")
        assert shmstore.store_stats(daemon.name)["used_bytes"] == baseline
