"""Writers and readers in several processes on the same keys: no torn tensor, nothing leaked."""

from __future__ import annotations

import json

import numpy as np
import pytest

import shmstore
from conftest import start_python, wait_until

# Overwrites the shared keys with tensors whose last element is the sum of the others.
WRITER = r"""
import json, sys
import numpy as np
import shmstore

name, writer, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
total = 0
with shmstore.Client(name) as client:
    for round_number in range(rounds):
        size = int(rng.integers(1, 20_000))
        tensor = rng.integers(0, 1 << 20, size=size + 1, dtype=np.int64)
        tensor[-1] = tensor[:-1].sum()
        client.put_tensor(f"shared-{round_number % 3}", tensor)
        total += int(tensor[-1])
print(json.dumps({"writer": writer, "puts": rounds, "total": total}))
"""

# Reads the shared keys until the key writers-done appears; checks every tensor's checksum.
READER = r"""
import json, sys
import numpy as np
import shmstore

name = sys.argv[1]
reads = torn = 0
with shmstore.Client(name) as client:
    while not client.tensor_exists("writers-done"):
        for index in range(3):
            try:
                tensor = client.get_tensor(f"shared-{index}")
            except KeyError:
                continue
            reads += 1
            if int(tensor[:-1].sum()) != int(tensor[-1]):
                torn += 1
print(json.dumps({"reads": reads, "torn": torn}))
"""


@pytest.mark.timeout(180)
def test_concurrent_overwrites_consistent(store, seed):
    baseline = shmstore.store_stats(store)["used_bytes"]
    rounds = 300
    readers = [start_python(READER, store) for _ in range(2)]
    writers = [start_python(WRITER, store, str(index), str(seed + index), str(rounds))
               for index in range(2)]

    writer_reports = []
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=150)
        assert writer.returncode == 0, stderr
        writer_reports.append(json.loads(stdout))

    with shmstore.Client(store) as client:
        client.put_tensor("writers-done", np.ones(1))
        reader_reports = []
        for reader in readers:
            stdout, stderr = reader.communicate(timeout=60)
            assert reader.returncode == 0, stderr
            reader_reports.append(json.loads(stdout))

        # Each writer's checksum total matches a replay of its random stream.
        for report in writer_reports:
            rng = np.random.default_rng(seed + report["writer"])
            expected_total = 0
            for _ in range(rounds):
                size = int(rng.integers(1, 20_000))
                tensor = rng.integers(0, 1 << 20, size=size + 1, dtype=np.int64)
                expected_total += int(tensor[:-1].sum())
            assert report["puts"] == rounds
            assert report["total"] == expected_total

        for report in reader_reports:
            assert report["torn"] == 0
            assert report["reads"] > 0

        # Only the latest version of each key remains once every reader has gone.
        latest = sum(client.get_tensor(f"shared-{index}").nbytes for index in range(3))
        client.delete_tensor("writers-done")
        assert wait_until(
            lambda: shmstore.store_stats(store)["used_bytes"] - baseline < latest + 3 * 4096,
            timeout_s=5)
        for index in range(3):
            tensor = client.get_tensor(f"shared-{index}")
            assert int(tensor[:-1].sum()) == int(tensor[-1])
