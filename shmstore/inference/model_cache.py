"""The worker's cache of loaded TorchScript models and scripts, by key and version.

A lookup reads the stored blob's version field (a zero-copy get, no bytes copied) and reuses
the loaded module while the version matches. A new version (the key was stored again) is loaded
on the next lookup; batches that already hold the old module finish with it.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
from typing import Any, Optional

import numpy as np

from shmstore.errors import SHMSTORE_EMODEL, SHMSTORE_ENOKEY, KeyNotFoundError
from shmstore.inference import blob
from shmstore.inference.batcher import BatchSettings
from shmstore.inference.devices import model_device

logger = logging.getLogger("shmstore.inference.model_cache")

# Loaded modules kept per worker; the least recently used goes first.
DEFAULT_CAPACITY = 16


class ModelLookupError(Exception):
    """A model or script that cannot be used; `code` is the C result code to send back."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class LoadedModel:
    """A loaded module with the settings it was stored with."""

    key: str
    settings: blob.BlobSettings
    module: Any                 # torch.jit.ScriptModule, or torch.jit.CompilationUnit
    device: Any                 # torch.device the module runs on
    batching: Optional[BatchSettings] = None   # from settings, built once

    def __post_init__(self) -> None:
        self.batching = BatchSettings(self.settings.batch_size, self.settings.min_batch_size,
                                      self.settings.min_batch_timeout_ms)


class ModelCache:
    """Loaded modules of one worker, keyed by (kind, key) and checked against the version."""

    def __init__(self, client: Any, worker_device: str,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._client = client
        self._worker_device = worker_device
        self._capacity = capacity
        self._loaded: "collections.OrderedDict[tuple, LoadedModel]" = collections.OrderedDict()

    def lookup(self, kind: int, key: str) -> LoadedModel:
        """Return the current version of model (or script) key, loading it if needed.

        Raises ModelLookupError when no model is stored under key, or it cannot be loaded.
        """
        what = "script" if kind == blob.KIND_SCRIPT else "model"
        try:
            stored = self._client.get_view(blob.internal_key(kind, key))
        except KeyNotFoundError:
            raise ModelLookupError(
                f"{what} {key!r} not found; store it with set_{what}() first",
                SHMSTORE_ENOKEY) from None

        # Fast path: reading the version field alone is enough to reuse the cached module.
        cache_key = (kind, key)
        loaded = self._loaded.get(cache_key)
        if loaded is not None and loaded.settings.version == blob.read_version(stored):
            self._loaded.move_to_end(cache_key)
            return loaded

        stored = np.asarray(stored)
        try:
            settings = blob.decode_settings(stored, key)
        except ValueError as error:
            raise ModelLookupError(str(error), SHMSTORE_EMODEL) from None

        loaded = self._load(kind, key, stored, settings)
        self._loaded[cache_key] = loaded
        self._loaded.move_to_end(cache_key)
        while len(self._loaded) > self._capacity:
            evicted_key, _evicted = self._loaded.popitem(last=False)
            logger.info("evicted %s %r from the model cache", what, evicted_key[1])
        return loaded

    def _load(self, kind: int, key: str, stored: Any,
              settings: blob.BlobSettings) -> LoadedModel:
        import torch

        what = "script" if kind == blob.KIND_SCRIPT else "model"
        try:
            device = model_device(settings.device, self._worker_device)
        except ValueError as error:
            raise ModelLookupError(f"{what} {key!r}: {error}", SHMSTORE_EMODEL) from None

        payload = blob.payload_view(stored, settings)
        try:
            if kind == blob.KIND_SCRIPT:
                module = torch.jit.CompilationUnit(bytes(payload).decode("utf-8"))
            else:
                module = torch.jit.load(io.BytesIO(bytes(payload)), map_location=device)
                module.eval()
        except Exception as error:  # torch raises many types for a bad file or source.
            message = _first_lines(str(error))
            logger.warning("cannot load %s %r (version %x): %s", what, key, settings.version,
                           message)
            raise ModelLookupError(f"cannot load {what} {key!r}: {message}",
                                   SHMSTORE_EMODEL) from None

        logger.info("loaded %s %r version %x (%d bytes) on %s", what, key, settings.version,
                    settings.payload_bytes, device)
        return LoadedModel(key=key, settings=settings, module=module, device=device)

    def forget(self, kind: int, key: str) -> Optional[LoadedModel]:
        """Drop a cached module (used after its key was deleted)."""
        return self._loaded.pop((kind, key), None)


def _first_lines(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ..."
