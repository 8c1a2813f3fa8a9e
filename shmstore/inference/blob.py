"""The stored form of models and scripts: a 512-byte settings header, then the payload.

A model stored under KEY is a uint8 tensor under the internal key "__shmstore__/model/KEY"
(a script: "__shmstore__/script/KEY"). csrc/infer_model.h defines the same header for the C
API; both sides must agree field by field.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from typing import Any, Union

import numpy as np

INTERNAL_PREFIX = "__shmstore__/"
MODEL_PREFIX = INTERNAL_PREFIX + "model/"
SCRIPT_PREFIX = INTERNAL_PREFIX + "script/"
STATS_PREFIX = INTERNAL_PREFIX + "stats/"
TEMP_PREFIX = INTERNAL_PREFIX + "tmp/"

KIND_MODEL = 1
KIND_SCRIPT = 2

# Function name of a model request whose single output key is a prefix: the worker stores
# output i under PREFIX + str(i) and the number of outputs under PREFIX + "n" (an int64).
# Client.infer() uses it, because it cannot know the output count in advance.
OUTPUTS_BY_INDEX = "__outputs_by_index__"

MAGIC = b"SHMMODL1"
HEADER_BYTES = 512
KEY_MAX = 1024

# magic, header_bytes, kind, batch_size, min_batch_size, min_batch_timeout_ms, reserved,
# version, payload_bytes, backend[16], device[32], tag[256]; native byte order, no padding.
_HEADER = struct.Struct("=8sIIiiiIQQ16s32s256s")
assert _HEADER.size == 352

_DEVICE_PATTERN = re.compile(r"^(CPU|GPU|GPU:(\d+))$")


@dataclasses.dataclass(frozen=True)
class BlobSettings:
    """Settings stored in front of a model or script."""

    kind: int
    backend: str
    device: str
    batch_size: int
    min_batch_size: int
    min_batch_timeout_ms: int
    version: int
    payload_bytes: int
    tag: str


def internal_key(kind: int, key: str) -> str:
    """Return the internal key of model or script key; raise ValueError for an invalid key."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid model key {key!r}: it must be a non-empty str")
    prefix = SCRIPT_PREFIX if kind == KIND_SCRIPT else MODEL_PREFIX
    full = prefix + key
    if len(full.encode("utf-8")) > KEY_MAX:
        raise ValueError(f"invalid model key {key[:60]!r}...: it must have at most "
                         f"{KEY_MAX - len(prefix)} bytes")
    return full


def canonical_device(device: str) -> str:
    """Return device as "CPU", "GPU" or "GPU:N"; raise ValueError for anything else."""
    text = str(device).strip().upper()
    match = _DEVICE_PATTERN.match(text)
    if match is None:
        raise ValueError(f"invalid device {device!r}: use CPU, GPU (the first GPU) or GPU:N")
    if match.group(2) is not None:
        return f"GPU:{int(match.group(2))}"
    return text


def check_batch_settings(batch_size: int, min_batch_size: int, min_batch_timeout: int) -> None:
    """Raise ValueError unless the batch settings are consistent (as in csrc/infer_model.c)."""
    values = {"batch_size": batch_size, "min_batch_size": min_batch_size,
              "min_batch_timeout": min_batch_timeout}
    for name, value in values.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"invalid {name}={value!r}: it must be an int >= 0")
    if batch_size == 0 and (min_batch_size > 0 or min_batch_timeout > 0):
        raise ValueError(f"min_batch_size={min_batch_size} and min_batch_timeout="
                         f"{min_batch_timeout} need batching: set batch_size > 0")
    if min_batch_size > batch_size:
        raise ValueError(f"min_batch_size={min_batch_size} exceeds batch_size={batch_size}")


def encode(kind: int, payload: Union[bytes, bytearray, memoryview], backend: str = "TORCH",
           device: str = "CPU", batch_size: int = 0, min_batch_size: int = 0,
           min_batch_timeout: int = 0, tag: str = "") -> np.ndarray:
    """Return the uint8 array to store for a model or script with these settings."""
    if str(backend).upper() != "TORCH":
        raise ValueError(f"unsupported backend {backend!r}: only TORCH (TorchScript) is "
                         f"supported")
    device = canonical_device(device)
    check_batch_settings(batch_size, min_batch_size, min_batch_timeout)
    tag_bytes = str(tag).encode("utf-8")
    if len(tag_bytes) >= 256:
        raise ValueError(f"tag has {len(tag_bytes)} bytes; at most 255 fit")
    payload = memoryview(payload).cast("B")
    if payload.nbytes == 0:
        raise ValueError("the model or script is empty (0 bytes)")

    version = int.from_bytes(os.urandom(8), "little") or 1
    header = _HEADER.pack(MAGIC, HEADER_BYTES, kind, batch_size, min_batch_size,
                          min_batch_timeout, 0, version, payload.nbytes, b"TORCH",
                          device.encode(), tag_bytes)

    blob = np.zeros(HEADER_BYTES + payload.nbytes, dtype=np.uint8)
    blob[:len(header)] = np.frombuffer(header, dtype=np.uint8)
    blob[HEADER_BYTES:] = np.frombuffer(payload, dtype=np.uint8)
    return blob


def decode_settings(blob: np.ndarray, key: str) -> BlobSettings:
    """Return the settings in front of a stored blob; raise ValueError if it is not one."""
    data = memoryview(blob).cast("B")
    if data.nbytes < HEADER_BYTES:
        raise ValueError(f"{key!r} is not a stored model or script ({data.nbytes} bytes)")
    fields = _HEADER.unpack_from(data, 0)
    (magic, header_bytes, kind, batch_size, min_batch_size, min_batch_timeout_ms, _reserved,
     version, payload_bytes, backend, device, tag) = fields
    if magic != MAGIC or header_bytes != HEADER_BYTES:
        raise ValueError(f"{key!r} is not a stored model or script (magic {magic!r})")
    if HEADER_BYTES + payload_bytes > data.nbytes:
        raise ValueError(f"stored model {key!r} is truncated: {payload_bytes} payload bytes "
                         f"announced, {data.nbytes - HEADER_BYTES} present")
    return BlobSettings(
        kind=kind,
        backend=backend.rstrip(b"\0").decode(),
        device=device.rstrip(b"\0").decode(),
        batch_size=batch_size,
        min_batch_size=min_batch_size,
        min_batch_timeout_ms=min_batch_timeout_ms,
        version=version,
        payload_bytes=payload_bytes,
        tag=tag.rstrip(b"\0").decode("utf-8", "replace"),
    )


_VERSION = struct.Struct("=Q")
_VERSION_OFFSET = 32     # magic, header_bytes, kind, three batch settings, reserved


def read_version(blob: Any) -> int:
    """Return the version field of a stored blob without decoding the rest (0 if too short).

    blob is a C-contiguous object with the buffer protocol and an nbytes attribute: an
    array, or the store's View of the key.
    """
    if blob.nbytes < HEADER_BYTES:
        return 0
    return _VERSION.unpack_from(blob, _VERSION_OFFSET)[0]


def payload_view(blob: np.ndarray, settings: BlobSettings) -> memoryview:
    """Return a zero-copy view of the payload of a stored blob."""
    return memoryview(blob).cast("B")[HEADER_BYTES:HEADER_BYTES + settings.payload_bytes]
