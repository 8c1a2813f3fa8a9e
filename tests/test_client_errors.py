"""Exceptions of the client: invalid keys, missing keys and stores, class hierarchy, codes."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import shmstore
from shmstore import errors


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key, shown", [
    ("", "empty"),
    ("k" * 1025, "1025 bytes"),
    ("a\0b", "NUL"),
    (b"bytes-key", "bytes"),
    (17, "int"),
    (None, "NoneType"),
], ids=["empty", "too-long", "nul", "bytes", "int", "none"])
def test_invalid_key_rejected(client, key, shown):
    operations = [
        lambda: client.put_tensor(key, np.zeros(2)),
        lambda: client.get_tensor(key),
        lambda: client.delete_tensor(key),
        lambda: client.tensor_exists(key),
        lambda: client.poll_tensor(key, 10, 1),
        lambda: client.unpack_tensor(key, np.zeros(2)),
        lambda: client.copy_tensor(key, "target"),
        lambda: client.rename_tensor("source", key),
    ]
    for operation in operations:
        with pytest.raises(ValueError) as caught:
            operation()
        assert shown in str(caught.value)


@pytest.mark.timeout(60)
def test_key_limits_accepted(client):
    longest = "é" * 512
    client.put_tensor(longest, np.arange(3))
    client.put_tensor("ключ/🙂", np.arange(3))

    assert client.tensor_exists(longest)
    assert np.array_equal(client.get_tensor("ключ/🙂"), np.arange(3))


@pytest.mark.timeout(60)
def test_missing_key_error(client):
    with pytest.raises(shmstore.KeyNotFoundError) as caught:
        client.get_tensor("absent")

    error = caught.value
    assert isinstance(error, KeyError)
    assert isinstance(error, shmstore.ShmstoreError)
    assert error.code == errors.SHMSTORE_ENOKEY
    assert "absent" in str(error)
    assert not str(error).startswith("'")

    with pytest.raises(KeyError):
        client.delete_tensor("absent")
    with pytest.raises(KeyError):
        client.unpack_tensor("absent", np.zeros(1))


@pytest.mark.timeout(60)
def test_missing_store_error():
    name = f"absent-{id(object())}"

    with pytest.raises(shmstore.StoreNotFoundError) as caught:
        shmstore.Client(name)

    assert isinstance(caught.value, shmstore.ShmstoreError)
    assert caught.value.code == errors.SHMSTORE_ENOSTORE
    assert name in str(caught.value)


@pytest.mark.timeout(30)
def test_error_classes_builtin_bases():
    expected = {
        errors.SHMSTORE_ENOKEY: (shmstore.KeyNotFoundError, KeyError),
        -errno.ENOMEM: (shmstore.OutOfMemoryError, MemoryError),
        errors.SHMSTORE_ELOST: (shmstore.ConnectionLostError, ConnectionError),
        -errno.ETIMEDOUT: (shmstore.ShmstoreTimeoutError, TimeoutError),
        errors.SHMSTORE_ENOSTORE: (shmstore.StoreNotFoundError, shmstore.ShmstoreError),
        errors.SHMSTORE_EBUSY: (shmstore.StoreBusyError, shmstore.ShmstoreError),
        errors.SHMSTORE_EABI: (shmstore.LayoutMismatchError, shmstore.ShmstoreError),
        errors.SHMSTORE_EMISMATCH: (shmstore.ShapeMismatchError, shmstore.ShmstoreError),
    }
    for code, (cls, builtin) in expected.items():
        error = errors.make_error(code, "call('k')", "detail text", "description")
        assert type(error) is cls
        assert isinstance(error, builtin)
        assert isinstance(error, shmstore.ShmstoreError)
        assert error.code == code
        assert error.detail == "detail text"
        assert str(error) == "call('k'): detail text"


@pytest.mark.timeout(30)
def test_error_without_detail():
    error = errors.make_error(-12345, "call", "", "fixed description")

    assert type(error) is shmstore.ShmstoreError
    assert str(error) == "call: fixed description"
    assert error.code == -12345


@pytest.mark.timeout(30)
def test_error_codes_match_library():
    from shmstore import _core

    for name, code in _core.ERROR_CODES.items():
        assert getattr(errors, name) == code, name
        assert _core.strerror(code)


@pytest.mark.timeout(60)
def test_closed_client_rejects_calls(store):
    client = shmstore.Client(store)
    client.close()
    client.close()

    assert client.closed
    with pytest.raises(shmstore.ShmstoreError) as caught:
        client.put_tensor("key", np.zeros(1))
    assert "closed" in str(caught.value)


@pytest.mark.timeout(60)
def test_core_buffer_length_checked(client):
    from shmstore import _core

    float64 = _core.DTYPE_CODES["float64"]
    client.put_tensor("field", np.arange(3, dtype=np.float64))

    with pytest.raises(ValueError) as caught:
        client._core.put_buffer("short", b"abc", float64, (1000,), _core.ORDER_C)
    assert "8000 bytes" in str(caught.value)
    assert not client.tensor_exists("short")

    target = bytearray(8)
    with pytest.raises(ValueError) as caught:
        client._core.unpack("field", target, float64, (3,), _core.ORDER_C)
    assert "24 bytes" in str(caught.value)
    assert target == bytearray(8)


@pytest.mark.timeout(60)
def test_put_extents_overflow_rejected(client):
    from shmstore import _core

    float64 = _core.DTYPE_CODES["float64"]
    for shape in [(2 ** 32, 2 ** 32, 2 ** 32), (2 ** 62, 4), (2 ** 63 - 1,),
                  (0, 2 ** 62, 2 ** 62), (2 ** 62, 2 ** 62, 0)]:
        with pytest.raises(shmstore.ShmstoreError) as caught:
            client._core.put_begin("huge", float64, shape, _core.ORDER_C)
        assert caught.value.code == -errno.EOVERFLOW, shape
        assert not client.tensor_exists("huge")

    # A zero extent with a product of the others that fits is a valid empty tensor.
    client._core.put_begin("empty", float64, (0, 2 ** 40), _core.ORDER_C).commit()
    assert client.get_tensor("empty").shape == (0, 2 ** 40)


@pytest.mark.timeout(30)
def test_package_exports_every_error():
    classes = [value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, shmstore.ShmstoreError)]

    assert len(classes) > 10
    for error_class in classes:
        assert getattr(shmstore, error_class.__name__) is error_class
        assert error_class.__name__ in shmstore.__all__
