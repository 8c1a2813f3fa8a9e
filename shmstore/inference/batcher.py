"""Dynamic batching: which pending requests of one model run together.

Requests of one model are merged along dimension 0 when every input has at least one
dimension, all inputs of a request share the same first dimension (its row count), and the
requests agree on the number of outputs and on each input's dtype and remaining dimensions.
A batch holds at most batch_size rows (a request larger than that runs alone, in chunks:
Worker._run_in_chunks). A group of mergeable requests waits, counted from the time its oldest
request was taken, until it has min_batch_size rows or min_batch_timeout ms have passed; with min_batch_size 0 it runs at
once with whatever is pending. With batch_size 0 every request runs alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple


@dataclasses.dataclass(slots=True)
class PendingRequest:
    """A request a worker took and has not completed yet."""

    slot: int
    sequence: int
    submitted_ns: int          # CLOCK_MONOTONIC, as written by the client
    deadline_ns: int
    kind: int
    key: str
    function: str
    inputs: List[str]
    outputs: List[str]
    taken_ns: int              # CLOCK_MONOTONIC when this worker took it
    started_ns: int = 0        # CLOCK_MONOTONIC when its batch started to run; 0: not yet
    completed: bool = False    # the worker sent its result
    tensors: Optional[List[Any]] = None   # pinned input Views of the store, once loaded
    rows: int = 0
    signature: Optional[Tuple] = None     # None: never merged with another request


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    batch_size: int
    min_batch_size: int
    min_batch_timeout_ms: int


def plan_batches(requests: List[PendingRequest], settings: BatchSettings,
                 now_ns: int) -> Tuple[List[List[PendingRequest]], List[PendingRequest],
                                       Optional[int]]:
    """Split the pending requests of one model into batches to run now and requests to keep.

    requests are in the order they were taken. Returns (batches, kept, wake_ns): wake_ns is
    the CLOCK_MONOTONIC time at which a kept group's timeout expires, or None when the kept
    requests wait only for more rows (or nothing is kept).
    """
    if not requests:
        return [], [], None
    if settings.batch_size == 0 or (len(requests) == 1 and settings.min_batch_size == 0):
        return [[request] for request in requests], [], None
    if settings.min_batch_size == 0 and _one_batch(requests, settings.batch_size):
        return [requests], [], None

    groups: Dict[Any, List[PendingRequest]] = {}
    alone: List[List[PendingRequest]] = []
    for request in requests:
        if request.signature is None:
            alone.append([request])
        else:
            groups.setdefault(request.signature, []).append(request)

    batches: List[List[PendingRequest]] = list(alone)
    kept: List[PendingRequest] = []
    wake_ns: Optional[int] = None

    for group in groups.values():
        total_rows = sum(request.rows for request in group)
        oldest_ns = min(request.taken_ns for request in group)
        expiry_ns = oldest_ns + settings.min_batch_timeout_ms * 1_000_000
        timed_out = settings.min_batch_timeout_ms > 0 and now_ns >= expiry_ns

        if settings.min_batch_size > 0 and total_rows < settings.min_batch_size \
                and not timed_out:
            kept.extend(group)
            if settings.min_batch_timeout_ms > 0:
                wake_ns = expiry_ns if wake_ns is None else min(wake_ns, expiry_ns)
            continue

        batches.extend(_pack(group, settings.batch_size))

    return batches, kept, wake_ns


def _one_batch(requests: List[PendingRequest], batch_size: int) -> bool:
    """Return True when all requests merge and fit one batch: the common case of a round,
    checked without hashing any signature."""
    signature = requests[0].signature
    if signature is None:
        return False
    rows = 0
    for request in requests:
        if request.signature != signature:
            return False
        rows += request.rows
    return rows <= batch_size


def _pack(group: List[PendingRequest], batch_size: int) -> List[List[PendingRequest]]:
    """Pack requests, in order, into batches of at most batch_size rows."""
    batches: List[List[PendingRequest]] = []
    current: List[PendingRequest] = []
    current_rows = 0
    for request in group:
        if current and current_rows + request.rows > batch_size:
            batches.append(current)
            current, current_rows = [], 0
        current.append(request)
        current_rows += request.rows
    if current:
        batches.append(current)
    return batches
