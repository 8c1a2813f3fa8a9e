"""Lifetime of zero-copy views: overwrite, delete, release, closed clients, reclaimed memory."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import shmstore
from conftest import run_python, wait_until


def used_bytes(store: str) -> int:
    return shmstore.store_stats(store)["used_bytes"]


@pytest.mark.timeout(60)
def test_view_survives_overwrite(client):
    original = np.arange(100_000, dtype=np.float64)
    client.put_tensor("field", original)
    view = client.get_tensor("field")

    client.put_tensor("field", np.zeros(100_000, dtype=np.float64))

    assert np.array_equal(view, original)
    assert np.array_equal(client.get_tensor("field"), np.zeros(100_000))


@pytest.mark.timeout(60)
def test_view_survives_delete(client):
    original = np.arange(50_000, dtype=np.int32)
    client.put_tensor("field", original)
    view = client.get_tensor("field")

    client.delete_tensor("field")

    assert not client.tensor_exists("field")
    assert np.array_equal(view, original)


@pytest.mark.timeout(60)
def test_old_version_reclaimed_after_release(store, client):
    baseline = used_bytes(store)
    client.put_tensor("field", np.ones(1 << 20, dtype=np.uint8))
    with_first = used_bytes(store)
    view = client.get_tensor("field")

    client.put_tensor("field", np.zeros(1 << 20, dtype=np.uint8))
    assert used_bytes(store) >= with_first + (1 << 20)

    del view
    gc.collect()
    assert wait_until(lambda: used_bytes(store) == with_first, timeout_s=5)

    client.delete_tensor("field")
    assert wait_until(lambda: used_bytes(store) == baseline, timeout_s=5)


@pytest.mark.timeout(60)
def test_explicit_release_blocked_by_array(client):
    client.put_tensor("field", np.arange(10))
    view = client.get_view("field")
    array = np.asarray(view)

    with pytest.raises(BufferError):
        view.release()

    del array
    view.release()
    assert view.released
    with pytest.raises(BufferError):
        memoryview(view)


def read_through_dropped_client(store: str) -> np.ndarray:
    """Return a view from a client that goes out of scope here."""
    client = shmstore.Client(store)
    client.put_tensor("dropped", np.arange(64, dtype=np.int16) * 3)
    return client.get_tensor("dropped")


@pytest.mark.timeout(60)
def test_view_outlives_dropped_client(store):
    view = read_through_dropped_client(store)
    gc.collect()

    assert np.array_equal(view, np.arange(64, dtype=np.int16) * 3)
    assert int(view.sum()) == 3 * sum(range(64))


@pytest.mark.timeout(60)
def test_close_with_live_views(store):
    client = shmstore.Client(store)
    client.put_tensor("field", np.arange(1000, dtype=np.float32))
    views = [client.get_tensor("field") for _ in range(3)]
    torn_copy = views[0].copy()

    client.close()
    gc.collect()

    for view in views:
        assert np.array_equal(view, torn_copy)
    del views
    gc.collect()


@pytest.mark.timeout(60)
def test_many_views_one_version(store, client):
    client.put_tensor("field", np.arange(1 << 16, dtype=np.uint8))
    with_tensor = used_bytes(store)
    views = [client.get_tensor("field") for _ in range(200)]
    client.delete_tensor("field")

    del views[:199]
    gc.collect()
    assert used_bytes(store) == with_tensor
    assert np.array_equal(views[0], np.arange(1 << 16, dtype=np.uint8))

    del views
    gc.collect()
    assert wait_until(lambda: used_bytes(store) < with_tensor, timeout_s=5)


# Connects, pins a version, forks. The child tries the inherited client, then exits through
# the interpreter's finalisation, which releases the inherited view and the client. The parent
# then overwrites the key many times and checks that its view still contains the first version.
FORK_WITH_CLIENT = r"""
import os, sys
import numpy as np
import shmstore

client = shmstore.Client(sys.argv[1])
client.put_tensor("field", np.full(1000, 7.0))
view = client.get_tensor("field")

child = os.fork()
if child == 0:
    try:
        client.get_tensor("field")
        print("child get succeeded", flush=True)
    except shmstore.ConnectionLostError as error:
        print("child get failed:", error, flush=True)
    sys.exit(0)

_, status = os.waitpid(child, 0)
print("child status", status, flush=True)
for version in range(20):
    client.put_tensor("field", np.full(1000, float(version)))
print("parent view", float(view.min()), float(view.max()), flush=True)
print("parent clients", shmstore.store_stats(sys.argv[1])["client_count"], flush=True)
"""


@pytest.mark.timeout(60)
def test_fork_child_leaves_parent_client(store):
    result = run_python(FORK_WITH_CLIENT, store)
    lines = result.stdout.splitlines()

    assert result.returncode == 0, result.stderr
    assert "child get failed:" in lines[0]
    assert "connect a new client in the child" in lines[0]
    assert lines[1] == "child status 0"
    assert lines[2] == "parent view 7.0 7.0"
    assert lines[3] == "parent clients 1"
