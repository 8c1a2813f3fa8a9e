"""put_tensor / get_tensor round trips: shapes, dtypes, layouts, byte order, torch."""

from __future__ import annotations

import numpy as np
import pytest

import shmstore

ALL_NUMPY_DTYPES = [
    np.float16, np.float32, np.float64,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.bool_, np.complex64, np.complex128,
]


def sample(dtype: type, shape: tuple, seed: int = 7) -> np.ndarray:
    """Return an array of dtype and shape whose bytes cover the dtype's range."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        parts = rng.standard_normal(size=shape + (2,)) * 1e3
        return (parts[..., 0] + 1j * parts[..., 1]).astype(dtype)
    return (rng.standard_normal(size=shape) * 1e3).astype(dtype)


def assert_same_tensor(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.tobytes() == expected.tobytes()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2,), (1, 416, 416, 3), ()],
                         ids=["empty", "empty-2d", "vector", "image", "scalar"])
def test_roundtrip_shapes(client, shape):
    expected = sample(np.float32, shape)
    client.put_tensor("tensor", expected)

    actual = client.get_tensor("tensor")

    assert_same_tensor(actual, expected)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dtype", ALL_NUMPY_DTYPES, ids=lambda dtype: np.dtype(dtype).name)
def test_roundtrip_dtype(client, dtype):
    expected = sample(dtype, (3, 5))
    client.put_tensor(f"tensor-{np.dtype(dtype).name}", expected)

    actual = client.get_tensor(f"tensor-{np.dtype(dtype).name}")

    assert_same_tensor(actual, expected)


@pytest.mark.timeout(60)
def test_roundtrip_dtype_extremes(client):
    for dtype in [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                  np.uint64]:
        info = np.iinfo(dtype)
        expected = np.array([info.min, info.max, 0], dtype=dtype)
        client.put_tensor("extremes", expected)
        assert_same_tensor(client.get_tensor("extremes"), expected)

    special = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324], dtype=np.float64)
    client.put_tensor("special", special)
    assert_same_tensor(client.get_tensor("special"), special)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value, dtype", [(3.5, np.float64), (7, np.int64), (True, np.bool_),
                                          (1 + 2j, np.complex128)],
                         ids=["float", "int", "bool", "complex"])
def test_put_python_scalar(client, value, dtype):
    client.put_tensor("scalar", value)

    actual = client.get_tensor("scalar")

    assert actual.shape == ()
    assert actual.dtype == np.dtype(dtype)
    assert actual[()] == value


@pytest.mark.timeout(60)
def test_get_is_readonly_zero_copy(client):
    client.put_tensor("field", np.arange(1000, dtype=np.float64))

    first = client.get_tensor("field")
    second = client.get_tensor("field")

    assert not first.flags.writeable
    assert not first.flags.owndata
    assert np.shares_memory(first, second)
    with pytest.raises(ValueError):
        first[0] = 1.0


@pytest.mark.timeout(60)
def test_get_base_chain_holds_view(client):
    client.put_tensor("field", np.arange(10, dtype=np.int32))

    array = client.get_tensor("field")

    base = array.base
    while base is not None and not isinstance(base, shmstore._core.View):
        base = getattr(base, "obj", None) or getattr(base, "base", None)
    assert isinstance(base, shmstore._core.View)
    assert not base.released


@pytest.mark.timeout(60)
@pytest.mark.parametrize("label", ["middle-column", "transpose", "stride-2"])
def test_put_strided_input(client, label):
    cube = np.arange(125, dtype=np.int64).reshape(5, 5, 5)
    source = {
        "middle-column": cube[:, 1],
        "transpose": cube.transpose(),
        "stride-2": cube[::2, :, ::2],
    }[label]

    client.put_tensor(label, source)
    actual = client.get_tensor(label)

    expected = np.ascontiguousarray(source)
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected)


@pytest.mark.timeout(60)
def test_fortran_order_kept(client):
    source = np.asfortranarray(np.arange(24, dtype=np.float64).reshape(4, 6))

    client.put_tensor("fortran", source)
    first = client.get_tensor("fortran")
    second = client.get_tensor("fortran")

    assert first.flags.f_contiguous
    assert not first.flags.c_contiguous
    assert np.array_equal(first, source)
    assert np.shares_memory(first, second)
    assert first[1, 2] == source[1, 2]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dtype", [">f8", ">i4", ">c16", ">u2"])
def test_big_endian_input(client, dtype):
    source = np.arange(12).reshape(3, 4).astype(dtype)

    client.put_tensor("big-endian", source)
    actual = client.get_tensor("big-endian")

    assert actual.dtype == np.dtype(dtype).newbyteorder("=")
    assert actual.dtype.isnative
    assert np.array_equal(actual, source)


@pytest.mark.timeout(60)
def test_big_endian_fortran_input(client):
    source = np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4))

    client.put_tensor("big-endian-f", source)
    actual = client.get_tensor("big-endian-f")

    assert actual.flags.f_contiguous
    assert np.array_equal(actual, source)


@pytest.mark.timeout(60)
def test_unpack_into_output(client):
    source = sample(np.float32, (4, 5))
    client.put_tensor("field", source)

    out_c = np.empty((4, 5), dtype=np.float32)
    client.unpack_tensor("field", out_c)
    out_f = np.empty((4, 5), dtype=np.float32, order="F")
    client.unpack_tensor("field", out_f)

    assert np.array_equal(out_c, source)
    assert np.array_equal(out_f, source)


@pytest.mark.timeout(60)
def test_unpack_wrong_shape(client):
    client.put_tensor("field", np.zeros((4, 5), dtype=np.float32))

    with pytest.raises(shmstore.ShapeMismatchError) as caught:
        client.unpack_tensor("field", np.empty((5, 4), dtype=np.float32))
    assert "field" in str(caught.value)

    with pytest.raises(shmstore.ShapeMismatchError):
        client.unpack_tensor("field", np.empty((4, 5), dtype=np.float64))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32", "int64", "bool",
                                        "complex64", "uint8"])
def test_torch_roundtrip(client, dtype_name):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install "
                                                "torch==2.13.0)")
    dtype = getattr(torch, dtype_name)
    generator = torch.Generator().manual_seed(3)
    if dtype == torch.bool:
        source = torch.randint(0, 2, (3, 7), generator=generator).to(torch.bool)
    elif dtype in (torch.int64, torch.uint8):
        source = torch.randint(0, 100, (3, 7), generator=generator).to(dtype)
    else:
        source = (torch.randn(3, 7, generator=generator) * 100).to(dtype)

    client.put_tensor("torch", source)
    actual = client.get_tensor("torch", framework="torch")

    assert actual.dtype == dtype
    assert tuple(actual.shape) == (3, 7)
    assert torch.equal(actual, source)


@pytest.mark.timeout(120)
def test_torch_bfloat16_stored_as_bits(client):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install "
                                                "torch==2.13.0)")
    source = torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16)

    client.put_tensor("bf16", source)
    bits = client.get_tensor("bf16")
    view = client.get_view("bf16")

    assert view.dtype == "bfloat16"
    assert bits.dtype == np.uint16
    assert np.array_equal(bits, source.view(torch.int16).numpy().view(np.uint16))


@pytest.mark.timeout(120)
def test_torch_noncontiguous_input(client):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install "
                                                "torch==2.13.0)")
    source = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5).permute(2, 0, 1)[:, 1]

    client.put_tensor("torch-strided", source)
    actual = client.get_tensor("torch-strided", framework="torch")

    assert torch.equal(actual, source.contiguous())


@pytest.mark.timeout(120)
def test_unpack_into_torch_views(client):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install "
                                                "torch==2.13.0)")
    client.put_tensor("complex", np.array([1 + 2j, 3 - 4j], dtype=np.complex64))
    client.put_tensor("real", np.array([1.5, -2.0, 3.0], dtype=np.float32))

    # A conjugate or negative view reads its base through the conjugation or negation, so
    # the stored values must come back out of the view itself.
    base = torch.zeros(2, dtype=torch.complex64)
    conjugate = base.conj()
    client.unpack_tensor("complex", conjugate)
    assert torch.equal(conjugate, torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64))
    assert torch.equal(base, torch.tensor([1 - 2j, 3 + 4j], dtype=torch.complex64))

    negative = torch.zeros(3)._neg_view()
    client.unpack_tensor("real", negative)
    assert torch.equal(negative, torch.tensor([1.5, -2.0, 3.0]))

    with_grad = torch.zeros(3, requires_grad=True)
    client.unpack_tensor("real", with_grad)
    assert torch.equal(with_grad.detach(), torch.tensor([1.5, -2.0, 3.0]))


@pytest.mark.timeout(60)
def test_put_unsupported_dtype(client):
    for value in [np.array(["text"]), np.array([1.0], dtype=np.longdouble),
                  np.array([object()], dtype=object), np.zeros(2, dtype="datetime64[s]")]:
        with pytest.raises(TypeError) as caught:
            client.put_tensor("bad", value)
        assert str(value.dtype) in str(caught.value)
        assert "bad" in str(caught.value)
    assert not client.tensor_exists("bad")


@pytest.mark.timeout(60)
def test_overwrite_replaces_tensor(client):
    client.put_tensor("key", np.zeros(3, dtype=np.float32))
    client.put_tensor("key", np.ones((2, 2), dtype=np.int16))

    actual = client.get_tensor("key")

    assert actual.dtype == np.int16
    assert actual.shape == (2, 2)
    assert np.array_equal(actual, np.ones((2, 2), dtype=np.int16))
