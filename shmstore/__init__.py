"""shmstore: a node-local shared-memory tensor store for HPC simulations.

`Client` puts and gets tensors; `shmstore serve` (or `python -m shmstore serve`) runs the
daemon that owns a store's shared memory.
"""

from typing import Any

from shmstore.errors import (
    ConnectionLostError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    LayoutMismatchError,
    ModelError,
    OutOfMemoryError,
    ShapeMismatchError,
    ShmstoreError,
    ShmstoreNotImplementedError,
    ShmstoreTimeoutError,
    StoreBusyError,
    StoreFullError,
    StoreNotFoundError,
    WorkerError,
)

__version__ = "0.1.0"

# Names that need the compiled extension load on first use, so that `shmstore config` and
# the error classes work even where the extension cannot be loaded.
_LAZY_NAMES = {
    "Client": "shmstore.client",
    "store_stats": "shmstore.status",
    "wait_for_store": "shmstore.status",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'shmstore' has no attribute {name!r}")

    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "Client",
    "ConnectionLostError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "KeyNotFoundError",
    "LayoutMismatchError",
    "ModelError",
    "OutOfMemoryError",
    "ShapeMismatchError",
    "ShmstoreError",
    "ShmstoreNotImplementedError",
    "ShmstoreTimeoutError",
    "StoreBusyError",
    "StoreFullError",
    "StoreNotFoundError",
    "WorkerError",
    "store_stats",
    "wait_for_store",
]
