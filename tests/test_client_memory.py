"""A full arena: puts fail with OutOfMemoryError and the tensors already stored stay intact."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

import shmstore
from conftest import run_python, start_python

ARENA = "8M"
ARENA_BYTES = 8 << 20

# Puts 256 KiB tensors under its own keys until the store is full; prints a JSON report.
FILL_SCRIPT = r"""
import json, sys, zlib
import numpy as np
import shmstore

name, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(seed)
stored = {}
report = {"stored": stored, "error": None, "message": ""}
with shmstore.Client(name) as client:
    for index in range(10_000):
        data = rng.integers(0, 256, size=256 * 1024, dtype=np.uint8)
        key = f"{prefix}-{index}"
        try:
            client.put_tensor(key, data)
        except shmstore.ShmstoreError as error:
            report["error"] = type(error).__name__
            report["message"] = str(error)
            report["is_memory_error"] = isinstance(error, MemoryError)
            break
        stored[key] = zlib.crc32(data.tobytes())
print(json.dumps(report))
"""


@pytest.mark.timeout(120)
def test_parallel_puts_fill_arena(start_daemon, seed):
    daemon = start_daemon(memory=ARENA)
    writers = [start_python(FILL_SCRIPT, daemon.name, f"writer{index}", str(seed + index))
               for index in range(4)]
    reports = []
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=90)
        assert writer.returncode == 0, stderr
        reports.append(json.loads(stdout))

    for report in reports:
        assert report["error"] == "OutOfMemoryError", report["message"]
        assert report["is_memory_error"]
    stored = {key: crc for report in reports for key, crc in report["stored"].items()}
    assert 0 < len(stored) * 256 * 1024 <= ARENA_BYTES

    with shmstore.Client(daemon.name) as client:
        assert sorted(client.keys()) == sorted(stored)
        for key, crc in stored.items():
            assert zlib.crc32(client.get_tensor(key).tobytes()) == crc, key

        # Room comes back once a tensor is deleted.
        victim = next(iter(stored))
        client.delete_tensor(victim)
        client.put_tensor("after-delete", np.ones(128 * 1024, dtype=np.uint8))
        assert client.tensor_exists("after-delete")


@pytest.mark.timeout(60)
def test_tensor_larger_than_arena(start_daemon):
    daemon = start_daemon(memory=ARENA)
    with shmstore.Client(daemon.name) as client:
        kept = np.arange(1000, dtype=np.float64)
        client.put_tensor("kept", kept)
        used_before = shmstore.store_stats(daemon.name)["used_bytes"]

        with pytest.raises(shmstore.OutOfMemoryError) as caught:
            client.put_tensor("huge", np.zeros(ARENA_BYTES + 1, dtype=np.uint8))

        message = str(caught.value)
        assert "huge" in message
        assert isinstance(caught.value, MemoryError)
        assert not client.tensor_exists("huge")
        assert np.array_equal(client.get_tensor("kept"), kept)
        assert shmstore.store_stats(daemon.name)["used_bytes"] == used_before


@pytest.mark.timeout(60)
def test_strided_put_out_of_memory(start_daemon):
    daemon = start_daemon(memory=ARENA)
    with shmstore.Client(daemon.name) as client:
        baseline = shmstore.store_stats(daemon.name)["used_bytes"]
        strided = np.zeros((2, ARENA_BYTES), dtype=np.uint8)[:, ::2]

        with pytest.raises(shmstore.OutOfMemoryError):
            client.put_tensor("strided", strided)

        assert shmstore.store_stats(daemon.name)["used_bytes"] == baseline
        assert not client.tensor_exists("strided")


@pytest.mark.timeout(60)
def test_memory_error_in_other_process(start_daemon):
    daemon = start_daemon(memory=ARENA)
    result = run_python(
        "import sys, numpy as np, shmstore\n"
        "client = shmstore.Client(sys.argv[1])\n"
        "try:\n"
        "    client.put_tensor('big', np.zeros(16 << 20, dtype=np.uint8))\n"
        "except MemoryError as error:\n"
        "    print('MemoryError:', error)\n",
        daemon.name)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MemoryError:")
    assert "big" in result.stdout
