"""shmstore: a node-local shared-memory tensor store for HPC simulations.

`Client` puts and gets tensors; `shmstore serve` (or `python -m shmstore serve`) runs the
daemon that owns a store's shared memory.
"""

from shmstore.errors import (
    ConnectionLostError,
    KeyNotFoundError,
    LayoutMismatchError,
    OutOfMemoryError,
    ShapeMismatchError,
    ShmstoreError,
    ShmstoreTimeoutError,
    StoreBusyError,
    StoreNotFoundError,
)

__version__ = "0.1.0"
