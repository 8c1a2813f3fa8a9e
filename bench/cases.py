"""The operations that the benchmark times, one class per implementation.

Every class is built for one tensor and offers three operations: `put` stores the tensor and
replaces the previous version, `get` reads it back as a numpy array and drops that array, and
`put_get` does both in a row. The report and the pytest-benchmark suite time these same
methods.
"""

from __future__ import annotations

import itertools
import os
from multiprocessing import shared_memory

import numpy as np

KIB = 1024
MIB = 1024 * KIB

# Tensor sizes of the benchmark, in bytes, with the label printed for each.
SIZES = {"8 KiB": 8 * KIB, "1 MiB": 1 * MIB, "64 MiB": 64 * MIB}


def make_tensor(nbytes: int) -> np.ndarray:
    """Return a float64 vector of nbytes bytes with random contents."""
    if nbytes % 8:
        raise ValueError(f"tensor size must be a multiple of 8 bytes, got {nbytes}")
    return np.random.default_rng(nbytes).standard_normal(nbytes // 8)


class ShmstoreCase:
    """put_tensor and zero-copy get_tensor through a shmstore.Client."""

    def __init__(self, client: object, tensor: np.ndarray, key: str) -> None:
        self.client = client
        self.tensor = tensor
        self.key = key
        self.put()

    def put(self) -> None:
        self.client.put_tensor(self.key, self.tensor)

    def get(self) -> None:
        # The view pins one version of the tensor until it is dropped on return, so the
        # timing includes both the pin and the unpin.
        view = self.client.get_tensor(self.key)
        assert view.nbytes == self.tensor.nbytes

    def put_get(self) -> None:
        self.put()
        self.get()

    def close(self) -> None:
        self.client.delete_tensor(self.key)


class RedisCase:
    """SET and GET of the tensor's bytes through redis-py with the hiredis parser."""

    def __init__(self, connection: object, tensor: np.ndarray, key: str) -> None:
        self.connection = connection
        self.tensor = tensor
        self.key = key
        self.put()

    def put(self) -> None:
        # redis-py sends a memoryview without copying it into a bytes object first.
        self.connection.set(self.key, memoryview(self.tensor).cast("B"))

    def get(self) -> None:
        array = np.frombuffer(self.connection.get(self.key), dtype=self.tensor.dtype)
        assert array.nbytes == self.tensor.nbytes

    def put_get(self) -> None:
        self.put()
        self.get()

    def close(self) -> None:
        self.connection.delete(self.key)


class SharedMemoryCase:
    """multiprocessing.shared_memory: create a segment and copy in, attach and view out.

    A put creates a new segment, copies the tensor into it and unlinks the segment of the
    previous put, as a store replaces the old version of a key. A get attaches by name and
    wraps the segment in a numpy array without copying.
    """

    def __init__(self, tensor: np.ndarray) -> None:
        self.tensor = tensor
        self.names = (f"bench-shared-memory-{os.getpid()}-{n}" for n in itertools.count())
        self.segment: shared_memory.SharedMemory | None = None
        self.put()

    def put(self) -> None:
        segment = shared_memory.SharedMemory(name=next(self.names), create=True,
                                             size=self.tensor.nbytes)
        destination = np.ndarray(self.tensor.shape, self.tensor.dtype, buffer=segment.buf)
        destination[...] = self.tensor
        del destination

        previous, self.segment = self.segment, segment
        if previous is not None:
            previous.close()
            previous.unlink()

    def get(self) -> None:
        assert self.segment is not None
        segment = shared_memory.SharedMemory(name=self.segment.name)
        view = np.ndarray(self.tensor.shape, self.tensor.dtype, buffer=segment.buf)
        assert view.nbytes == self.tensor.nbytes

        # close() raises BufferError while a numpy array still exports the buffer.
        del view
        segment.close()

    def put_get(self) -> None:
        self.put()
        self.get()

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment.unlink()
            self.segment = None


class MemcpyCase:
    """numpy copyto into a preallocated, already touched array: the bandwidth reference."""

    def __init__(self, tensor: np.ndarray) -> None:
        self.tensor = tensor
        self.destination = np.ones_like(tensor)

    def copy(self) -> None:
        np.copyto(self.destination, self.tensor)
