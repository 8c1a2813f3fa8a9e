"""The Python client of a shmstore store, with SmartRedis method names.

A put copies the tensor once, into arena memory that the store allocated for it. A get copies
nothing: it returns a read-only numpy array (or torch tensor) over the store's memory. The
array's `.base` chain keeps a reference to the `View` that pins that version, so the memory
stays valid for as long as the array lives, even if the key is overwritten or deleted, and
after close().
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from shmstore import _core
from shmstore.inference.blob import INTERNAL_PREFIX
from shmstore.inference.client_api import InferenceClientMixin

logger = logging.getLogger("shmstore.client")

# numpy dtype (native byte order) -> shmstore dtype code. bfloat16 has no numpy dtype: it
# travels as uint16 bit patterns with the code BFLOAT16 and comes back as torch.bfloat16.
_CODE_BY_DTYPE = {
    np.dtype(name): code for name, code in _core.DTYPE_CODES.items() if name != "bfloat16"
}
_DTYPE_BY_CODE = {code: dtype for dtype, code in _CODE_BY_DTYPE.items()}
_BFLOAT16 = _core.DTYPE_CODES["bfloat16"]
_SUPPORTED_NAMES = ", ".join(sorted(_core.DTYPE_CODES))


def _dtype_code(dtype: np.dtype, key: str) -> int:
    """Return the shmstore code of a numpy dtype, or raise TypeError naming it."""
    code = _CODE_BY_DTYPE.get(dtype.newbyteorder("="))
    if code is None:
        raise TypeError(
            f"tensor {key!r} has the unsupported dtype {dtype}; supported dtypes are "
            f"{_SUPPORTED_NAMES}")
    return code


def _is_torch_tensor(value: Any) -> bool:
    # Checking the type's module avoids importing torch for numpy-only programs.
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _torch_to_numpy(tensor: Any) -> Tuple[np.ndarray, Optional[int]]:
    """Return a numpy array over a CPU copy or view of tensor, and a dtype code override.

    bfloat16 becomes an int16 view of the same bits with the override BFLOAT16; other dtypes
    have no override.
    """
    import torch

    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.resolve_conj().resolve_neg()

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16), _BFLOAT16
    return tensor.numpy(), None


def _storage_order(array: np.ndarray) -> str:
    """Return "F" for an array that is Fortran-contiguous but not C-contiguous, else "C"."""
    if array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous:
        return "F"
    return "C"


def _order_code(order: str) -> int:
    return _core.ORDER_F if order == "F" else _core.ORDER_C


class Client(InferenceClientMixin):
    """A connection to a store on this node.

    name: the store name (default: $SHMSTORE_NAME, else "default"). timeout_ms: how long a
    call waits on a daemon that does not respond before it raises ConnectionLostError
    (default: $SHMSTORE_TIMEOUT_MS, else 3000).

    Raises StoreNotFoundError when no daemon serves the name.
    """

    def __init__(self, name: Optional[str] = None, timeout_ms: Optional[int] = None) -> None:
        if name is None:
            name = os.environ.get("SHMSTORE_NAME") or "default"
        self.name = name
        self._core = _core.Client(name, timeout_ms)
        logger.debug("attached to store %r (pid %d)", name, os.getpid())

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Detach from the store. Arrays returned by get_tensor stay readable."""
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<shmstore.Client name={self.name!r} {state}>"

    # ---- tensors -------------------------------------------------------------------------

    def put_tensor(self, key: str, value: Any) -> None:
        """Store a copy of value under key, replacing any earlier tensor in one atomic step.

        value: a numpy array, a Python scalar (stored as a 0-d array) or a torch tensor (a
        CUDA tensor is copied to the CPU first). A Fortran-contiguous array keeps its column
        order; any other non-contiguous layout is stored in C order. Foreign byte order is
        converted to native order during the copy.
        """
        if type(value) is np.ndarray:
            array = value
            # None for foreign byte order and unsupported dtypes; _dtype_code sorts them out.
            code = _CODE_BY_DTYPE.get(array.dtype)
        elif _is_torch_tensor(value):
            array, code = _torch_to_numpy(value)
        else:
            array = np.asarray(value)
            code = None
        if code is None:
            code = _dtype_code(array.dtype, key)

        # Fast path: one C call that copies the bytes as they lie. An array that is both C-
        # and Fortran-contiguous (rank 1, or extents of 1) is stored in C order.
        flags = array.flags
        if array.dtype.isnative and (flags.c_contiguous or flags.f_contiguous):
            order_code = _core.ORDER_C if flags.c_contiguous else _core.ORDER_F
            self._core.put_buffer(key, array, code, array.shape, order_code)
            return

        self._put_with_copyto(key, array, code, _storage_order(array))

    def _put_with_copyto(self, key: str, array: np.ndarray, code: int, order: str) -> None:
        """Reserve arena memory, copy array into it with numpy (strides, byte order), commit."""
        pending = self._core.put_begin(key, code, array.shape, _order_code(order))
        try:
            if array.size > 0:
                target = np.frombuffer(pending.memory, dtype=array.dtype.newbyteorder("="))
                target = target.reshape(array.shape, order=order)
                np.copyto(target, array, casting="equiv")
                del target
            pending.commit()
        except BaseException:
            pending.abort()
            raise

    def get_tensor(self, key: str, framework: str = "numpy") -> Any:
        """Return the tensor under key without copying it.

        framework "numpy": a read-only numpy array over the store's memory. framework
        "torch": a CPU torch tensor over the same memory (do not write to it). Raises
        KeyNotFoundError when key is absent.
        """
        if framework not in ("numpy", "torch"):
            raise ValueError(f"framework must be 'numpy' or 'torch', got {framework!r}")

        view = self._core.get(key)
        array = np.asarray(view)
        if framework == "numpy":
            return array
        return _numpy_to_torch(array, view.dtype_code == _BFLOAT16)

    def get_view(self, key: str) -> "_core.View":
        """Return the pinned View of key (buffer protocol, shape, dtype, order, release())."""
        return self._core.get(key)

    def unpack_tensor(self, key: str, out: Any) -> None:
        """Copy the tensor under key into out, a writable contiguous numpy array or tensor.

        dtype, rank and dims of out must match the stored tensor (ShapeMismatchError
        otherwise). When only the memory order differs, out[i, j, ...] still receives the
        stored [i, j, ...].
        """
        code_override = None
        if _is_torch_tensor(out):
            if out.device.type != "cpu":
                raise ValueError(f"unpack_tensor({key!r}): out must be a CPU tensor, "
                                 f"got one on {out.device}")
            if out.is_conj() or out.is_neg():
                self._unpack_through_copy(key, out)
                return
            array, code_override = _torch_to_numpy(out)
        elif isinstance(out, np.ndarray):
            array = out
        else:
            raise TypeError(f"unpack_tensor({key!r}): out must be a numpy array or a torch "
                            f"tensor, got {type(out).__name__}")

        if not array.flags.writeable:
            raise ValueError(f"unpack_tensor({key!r}): out is read-only")
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            raise ValueError(f"unpack_tensor({key!r}): out must be C- or Fortran-contiguous")
        if not array.dtype.isnative:
            raise ValueError(f"unpack_tensor({key!r}): out must be in native byte order, "
                             f"got {array.dtype}")

        code = code_override if code_override is not None else _dtype_code(array.dtype, key)
        order = _storage_order(array)
        self._core.unpack(key, array, code, array.shape, _order_code(order))

    def _unpack_through_copy(self, key: str, out: Any) -> None:
        """Unpack into a plain tensor, then copy it into out, a conjugate or negative view.

        Such a view reads its memory through a conjugation or negation, so writing the stored
        bytes into that memory would give the wrong values, and resolving the view would give
        a new tensor instead of out.
        """
        import torch

        staging = torch.empty(out.shape, dtype=out.dtype)
        self.unpack_tensor(key, staging)
        with torch.no_grad():
            out.copy_(staging)

    def delete_tensor(self, key: str) -> None:
        """Remove key. Arrays already returned by get_tensor stay valid."""
        self._core.delete(key)

    def copy_tensor(self, src_key: str, dst_key: str) -> None:
        """Store a copy of the tensor under src_key under dst_key."""
        self._core.copy(src_key, dst_key)

    def rename_tensor(self, old_key: str, new_key: str) -> None:
        """Move the tensor under old_key to new_key, replacing new_key if it exists."""
        self._core.rename(old_key, new_key)

    def tensor_exists(self, key: str) -> bool:
        return self._core.exists(key)

    def key_exists(self, key: str) -> bool:
        return self._core.exists(key)

    def poll_tensor(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check for key up to num_tries times, poll_frequency_ms apart; return whether found.

        Ctrl-C raises KeyboardInterrupt within about 50 ms; a daemon that dies meanwhile
        raises ConnectionLostError.
        """
        return self._core.poll(key, poll_frequency_ms, num_tries)

    def poll_key(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._core.poll(key, poll_frequency_ms, num_tries)

    def keys(self, pattern: str = "*") -> List[str]:
        """Return the keys matching the fnmatch(3) glob pattern.

        Keys under "__shmstore__/" (stored models and scripts, worker statistics) are
        internal: they are listed only when pattern itself starts with that prefix.
        """
        found = self._core.keys(pattern)
        if pattern.startswith(INTERNAL_PREFIX):
            return found
        return [key for key in found if not key.startswith(INTERNAL_PREFIX)]


def _numpy_to_torch(array: np.ndarray, is_bfloat16: bool) -> Any:
    """Wrap a read-only numpy array as a torch tensor over the same memory."""
    import torch

    # torch warns that it cannot mark the tensor read-only. get_tensor documents that callers
    # must not write to it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        tensor = torch.from_numpy(array.view(np.int16) if is_bfloat16 else array)

    if is_bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor
