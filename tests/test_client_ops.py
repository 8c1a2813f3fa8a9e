"""Key operations of the client: delete, copy, rename, exists, poll, keys, context manager."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import shmstore
from conftest import run_python


@pytest.mark.timeout(60)
def test_delete_removes_key(client):
    client.put_tensor("key", np.arange(4))

    client.delete_tensor("key")

    assert not client.tensor_exists("key")
    assert not client.key_exists("key")
    with pytest.raises(shmstore.KeyNotFoundError):
        client.get_tensor("key")


@pytest.mark.timeout(60)
def test_copy_makes_independent_tensor(client):
    source = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    client.put_tensor("source", source)

    client.copy_tensor("source", "target")
    client.delete_tensor("source")

    target = client.get_tensor("target")
    assert np.array_equal(target, source)
    assert target.flags.f_contiguous


@pytest.mark.timeout(60)
def test_rename_moves_tensor(client):
    client.put_tensor("old", np.arange(5))
    client.put_tensor("new", np.zeros(1))

    client.rename_tensor("old", "new")

    assert not client.tensor_exists("old")
    assert np.array_equal(client.get_tensor("new"), np.arange(5))
    with pytest.raises(shmstore.KeyNotFoundError):
        client.rename_tensor("old", "other")


@pytest.mark.timeout(60)
def test_keys_pattern(client):
    for key in ["field/u", "field/v", "other", "field/long/name"]:
        client.put_tensor(key, np.zeros(1))

    assert sorted(client.keys()) == ["field/long/name", "field/u", "field/v", "other"]
    assert sorted(client.keys("field/?")) == ["field/u", "field/v"]
    assert client.keys("absent*") == []


# Lists the keys that match "a?" and "?本" under the locale of the environment it runs in.
KEYS_UNDER_LOCALE = r"""
import sys
import shmstore

client = shmstore.Client(sys.argv[1])
print(sorted(client.keys("a?")), sorted(client.keys("?本")))
"""


@pytest.mark.timeout(60)
def test_keys_pattern_utf8_any_locale(client, store):
    for key in ["aé", "ab", "abc", "日本"]:
        client.put_tensor(key, np.ones(1))

    for locale_name in ["C", "C.UTF-8"]:
        environment = dict(os.environ, LC_ALL=locale_name)
        result = run_python(KEYS_UNDER_LOCALE, store, env=environment)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['ab', 'aé'] ['日本']", locale_name


@pytest.mark.timeout(60)
def test_keys_many(client):
    expected = {f"key-{index:05d}-{'x' * (index % 50)}" for index in range(2000)}
    for key in expected:
        client.put_tensor(key, np.int8(1))

    assert set(client.keys("key-*")) == expected


@pytest.mark.timeout(60)
def test_poll_finds_late_key(store):
    with shmstore.Client(store) as reader, shmstore.Client(store) as writer:
        timer = threading.Timer(0.3, lambda: writer.put_tensor("late", np.ones(2)))
        timer.start()
        try:
            started = time.monotonic()
            found = reader.poll_tensor("late", 20, 100)
            elapsed = time.monotonic() - started
        finally:
            timer.join()

    assert found
    # Upper bounds leave room for a loaded 2-core machine.
    assert 0.2 < elapsed < 5.0


@pytest.mark.timeout(60)
def test_poll_gives_up(client):
    started = time.monotonic()
    found = client.poll_key("never", 30, 5)
    elapsed = time.monotonic() - started

    assert not found
    assert 0.1 <= elapsed < 3.0


@pytest.mark.timeout(60)
def test_poll_invalid_arguments(client):
    with pytest.raises(ValueError):
        client.poll_tensor("key", 10, 0)
    with pytest.raises(ValueError):
        client.poll_tensor("key", -1, 3)


@pytest.mark.timeout(60)
def test_context_manager_closes(store):
    with shmstore.Client(store) as client:
        client.put_tensor("key", np.zeros(2))

    assert client.closed
    with shmstore.Client(store) as other:
        assert other.tensor_exists("key")


@pytest.mark.timeout(60)
def test_default_name_from_environment(store, monkeypatch):
    monkeypatch.setenv("SHMSTORE_NAME", store)

    with shmstore.Client() as client:
        client.put_tensor("env", np.ones(1))
        assert client.name == store
        assert client.tensor_exists("env")


@pytest.mark.timeout(60)
def test_threads_share_client(client, seed):
    rng = np.random.default_rng(seed)
    payloads = {f"thread-{index}": rng.integers(0, 1 << 30, size=2048) for index in range(4)}
    failures = []

    def work(key: str, payload: np.ndarray) -> None:
        try:
            for round_number in range(50):
                client.put_tensor(key, payload + round_number)
                view = client.get_tensor(key)
                if int(view.sum()) != int(payload.sum()) + round_number * payload.size:
                    failures.append(f"{key} round {round_number}: checksum differs")
        except Exception as error:  # collected so that the main thread reports it
            failures.append(f"{key}: {error!r}")

    threads = [threading.Thread(target=work, args=item) for item in payloads.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    for key, payload in payloads.items():
        assert int(client.get_tensor(key).sum()) == int(payload.sum()) + 49 * payload.size


@pytest.mark.timeout(30)
def test_c_list_hides_internal_keys(client) -> None:
    client.put_tensor("__shmstore__/model/probe", np.zeros(3, dtype=np.uint8))
    client.put_tensor("plain", np.zeros(3))

    # The C listing itself (used by C and Fortran programs) hides the internal prefix.
    assert client._core.keys("*") == ["plain"]
    assert client._core.keys("__shmstore__/*") == ["__shmstore__/model/probe"]


@pytest.mark.timeout(60)
def test_put_rows_splits_by_rows(client):
    from shmstore import _core

    data = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    code = _core.DTYPE_CODES["float32"]

    codes = client._core.put_rows(["a", "b", "c"], data, code, data.shape, [1, 0, 5])

    assert codes == [0, 0, 0]
    np.testing.assert_array_equal(client.get_tensor("a"), data[:1])
    assert client.get_tensor("b").shape == (0, 2, 2)
    np.testing.assert_array_equal(client.get_tensor("c"), data[1:])


@pytest.mark.timeout(60)
def test_put_rows_invalid_key_fails_alone(client):
    from shmstore import _core

    data = np.arange(4, dtype=np.int64)
    code = _core.DTYPE_CODES["int64"]

    codes = client._core.put_rows(["first", "", "last"], data, code, data.shape, [1, 1, 2])

    assert codes[0] == 0
    assert codes[1] < 0
    assert codes[2] == 0
    np.testing.assert_array_equal(client.get_tensor("last"), data[2:])


@pytest.mark.timeout(60)
def test_put_rows_rejects_wrong_counts(client):
    from shmstore import _core

    data = np.zeros((3, 2), dtype=np.float64)
    code = _core.DTYPE_CODES["float64"]

    with pytest.raises(ValueError, match="add up to 2"):
        client._core.put_rows(["a", "b"], data, code, data.shape, [1, 1])
    with pytest.raises(ValueError, match="2 keys for 1 row counts"):
        client._core.put_rows(["a", "b"], data, code, data.shape, [3])
    with pytest.raises(ValueError, match="invalid row counts"):
        client._core.put_rows(["a", "b"], data, code, data.shape, [4, -1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arrays, rows, stackable", [
    ([((3, 4), "float32")], 3, True),
    ([((3, 4), "float32"), ((3,), "int64")], 3, True),
    ([((3, 4), "float32"), ((2, 4), "float32")], 3, False),
    ([((), "float32")], 0, False),
    ([], 0, False),
])
def test_get_views_rows_and_layout(client, arrays, rows, stackable):
    keys = [f"input{number}" for number in range(len(arrays))]
    for key, (shape, dtype) in zip(keys, arrays):
        client.put_tensor(key, np.zeros(shape, dtype))

    views, found_rows, layout = client._core.get_views(keys)

    assert [view.key for view in views] == keys
    assert found_rows == rows
    assert (layout is not None) == stackable


@pytest.mark.timeout(60)
def test_get_views_layout_tells_tensors_apart(client):
    import torch

    def layout(value):
        client.put_tensor("input", value)
        return client._core.get_views(["input"])[2]

    assert layout(np.zeros((2, 4), np.float32)) == layout(np.zeros((5, 4), np.float32))
    assert layout(np.zeros((2, 4), np.float32)) != layout(np.zeros((2, 4), np.float64))
    assert layout(np.zeros((2, 4), np.float32)) != layout(np.zeros((2, 5), np.float32))
    assert layout(np.zeros((2, 4), np.uint16)) != layout(torch.zeros((2, 4),
                                                                    dtype=torch.bfloat16))
    assert layout(np.zeros((2, 4), np.float32)) == layout(np.zeros((2, 4), np.float32,
                                                                   order="F"))


@pytest.mark.timeout(60)
def test_get_views_names_missing_key(client):
    client.put_tensor("present", np.zeros(2))

    with pytest.raises(shmstore.KeyNotFoundError) as caught:
        client._core.get_views(["present", "absent"])

    assert caught.value.key == "absent"


@pytest.mark.timeout(60)
def test_copy_views_stacks_rows(client):
    from shmstore import _core

    client.put_tensor("a", np.arange(4, dtype=np.float32).reshape(2, 2))
    client.put_tensor("b", np.arange(4, 10, dtype=np.float32).reshape(3, 2))
    views, _rows, _layout = client._core.get_views(["a", "b"])
    target = np.empty((5, 2), np.float32)

    _core.copy_views(views, target)

    np.testing.assert_array_equal(target, np.arange(10, dtype=np.float32).reshape(5, 2))


@pytest.mark.timeout(60)
def test_copy_views_rejects_bad_targets(client):
    from shmstore import _core

    client.put_tensor("c_order", np.zeros((2, 3), np.float32))
    client.put_tensor("f_order", np.zeros((2, 3), np.float32, order="F"))
    c_views = client._core.get_views(["c_order"])[0]
    f_views = client._core.get_views(["f_order"])[0]

    with pytest.raises(ValueError, match="hold 24 bytes"):
        _core.copy_views(c_views, np.empty(7, np.float32))
    with pytest.raises(ValueError, match="Fortran order"):
        _core.copy_views(f_views, np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        _core.copy_views(c_views, np.empty((3, 2), np.float32).T)
