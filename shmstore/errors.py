"""Exception hierarchy of shmstore, mapped from the C error codes.

Every exception raised for a failed C call is a `ShmstoreError` that keeps the C code in `.code`
(a negative errno value or one of the SHMSTORE_E* codes of shmstore.h) and the C library's
message in `.detail`. Subclasses also derive from the matching builtin exception, so that
`except KeyError` or `except MemoryError` work as in any Python program.
"""

from __future__ import annotations

import errno

# Project codes of csrc/include/shmstore.h. tests/test_client_errors.py checks that they agree
# with the compiled library.
SHMSTORE_ENOKEY = -201
SHMSTORE_ENOSTORE = -202
SHMSTORE_ELOST = -203
SHMSTORE_EABI = -204
SHMSTORE_EBUSY = -205
SHMSTORE_EMISMATCH = -206
SHMSTORE_EFULL = -207
SHMSTORE_EKEY = -208
SHMSTORE_EMODEL = -209
SHMSTORE_EWORKER = -210
SHMSTORE_ENOWORKER = -211


class ShmstoreError(Exception):
    """Failure of a shmstore call; `.code` is the C code, `.detail` the C message."""

    def __init__(self, message: str, code: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class KeyNotFoundError(ShmstoreError, KeyError):
    """A key that is not in the store."""

    # KeyError.__str__ would quote the whole message like a repr.
    def __str__(self) -> str:
        return self.message


class OutOfMemoryError(ShmstoreError, MemoryError):
    """The data arena (or /dev/shm at start-up) has too little free memory."""


class ConnectionLostError(ShmstoreError, ConnectionError):
    """The daemon died or is stopping; the store is gone."""


class ShmstoreTimeoutError(ShmstoreError, TimeoutError):
    """A wait (for a daemon, a worker or a key) ran out of time."""


class StoreNotFoundError(ShmstoreError, FileNotFoundError):
    """No daemon serves a store of that name on this node."""


class StoreBusyError(ShmstoreError):
    """A live daemon already serves the name that a new daemon was asked to create."""


class LayoutMismatchError(ShmstoreError):
    """The control segment has another magic number, ABI version or size than this library."""


class ShapeMismatchError(ShmstoreError, ValueError):
    """dtype, rank or dims of an output array differ from those of the stored tensor."""


class InvalidKeyError(ShmstoreError, ValueError):
    """A key that is empty, too long or not valid UTF-8."""


class StoreFullError(ShmstoreError):
    """A fixed table of the store is full (clients, keys or views)."""


class ModelError(ShmstoreError):
    """The model or script rejected a request; the message is the model's."""


class WorkerError(ShmstoreError):
    """The inference worker died, or the store runs no inference workers."""


class ShmstoreNotImplementedError(ShmstoreError, NotImplementedError):
    """The C library does not implement this call yet."""


class InvalidArgumentError(ShmstoreError, ValueError):
    """The C library rejected an argument as invalid."""


_CLASS_BY_CODE: dict[int, type[ShmstoreError]] = {
    SHMSTORE_ENOKEY: KeyNotFoundError,
    SHMSTORE_ENOSTORE: StoreNotFoundError,
    SHMSTORE_ELOST: ConnectionLostError,
    SHMSTORE_EABI: LayoutMismatchError,
    SHMSTORE_EBUSY: StoreBusyError,
    SHMSTORE_EMISMATCH: ShapeMismatchError,
    SHMSTORE_EFULL: StoreFullError,
    SHMSTORE_EKEY: InvalidKeyError,
    SHMSTORE_EMODEL: ModelError,
    SHMSTORE_EWORKER: WorkerError,
    SHMSTORE_ENOWORKER: WorkerError,
    -errno.ENOMEM: OutOfMemoryError,
    -errno.ENOSPC: OutOfMemoryError,
    -errno.ETIMEDOUT: ShmstoreTimeoutError,
    -errno.ENOSYS: ShmstoreNotImplementedError,
    -errno.EINVAL: InvalidArgumentError,
}


def error_class(code: int) -> type[ShmstoreError]:
    """Return the exception class for a negative C code; unknown codes give ShmstoreError."""
    return _CLASS_BY_CODE.get(code, ShmstoreError)


def make_error(code: int, context: str, detail: str, description: str) -> ShmstoreError:
    """Build the exception for a failed C call.

    context names the call and its arguments (for example "get_tensor('u')"), detail is the C
    library's message for this failure and description the fixed text of the code. The message
    is "context: detail", or "context: description" when the library left no detail.
    """
    reason = detail if detail else description
    message = f"{context}: {reason}" if context else reason
    return error_class(code)(message, code=code, detail=detail)
