"""Per-model statistics of the inference workers (like RedisAI's AI.INFO).

Each worker keeps a `ModelStats` per model key and publishes all of them, as JSON in a uint8
tensor, under "__shmstore__/stats/w<index>". A reader merges the workers' records: counters
add, and times are kept as histograms with four buckets per octave, so merged medians and
p99s are estimates within about 19% of the true value.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from shmstore.inference.blob import STATS_PREFIX

BUCKETS_PER_OCTAVE = 4
BUCKET_COUNT = 4 * 32          # 1 microsecond to about 70 minutes
STATS_FORMAT = 1


def worker_stats_key(index: int) -> str:
    """Return the internal key under which worker index publishes its statistics."""
    return f"{STATS_PREFIX}w{index}"


class Histogram:
    """Counts of durations in logarithmic buckets; bucket i covers [2**(i/4), 2**((i+1)/4)) us."""

    def __init__(self, counts: Optional[List[int]] = None) -> None:
        self.counts = list(counts) if counts else [0] * BUCKET_COUNT

    def add(self, seconds: float) -> None:
        """Add one duration given in seconds."""
        self.add_many_ns((seconds * 1e9,))

    def add_many_ns(self, durations_ns: Sequence[float]) -> None:
        """Add durations given in nanoseconds (one call for a batch of requests)."""
        counts = self.counts
        last = BUCKET_COUNT - 1
        log2 = math.log2
        for nanoseconds in durations_ns:
            microseconds = nanoseconds / 1000 if nanoseconds > 1000 else 1.0
            bucket = int(log2(microseconds) * BUCKETS_PER_OCTAVE)
            counts[bucket if bucket < last else last] += 1

    def merge(self, other: "Histogram") -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> Optional[float]:
        """Return an estimate of quantile q in seconds (the bucket's geometric middle)."""
        total = self.total
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count > 0:
                microseconds = 2.0 ** ((bucket + 0.5) / BUCKETS_PER_OCTAVE)
                return microseconds / 1e6
        return None


class ModelStats:
    """Counters and time histograms of one model (or script) key."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.batches = 0
        self.samples = 0
        self.max_batch_size = 0
        self.queue_wait = Histogram()
        self.compute = Histogram()

    def record_batch(self, samples: int, compute_s: float) -> None:
        self.batches += 1
        self.samples += samples
        self.max_batch_size = max(self.max_batch_size, samples)
        self.compute.add(compute_s)

    def record_request(self, queue_wait_s: float, failed: bool) -> None:
        self.requests += 1
        self.queue_wait.add(queue_wait_s)
        if failed:
            self.errors += 1

    def record_requests(self, queue_waits_ns: List[int]) -> None:
        """Record requests that succeeded, given their queue waits in nanoseconds."""
        self.requests += len(queue_waits_ns)
        self.queue_wait.add_many_ns(queue_waits_ns)

    def merge(self, other: "ModelStats") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.batches += other.batches
        self.samples += other.samples
        self.max_batch_size = max(self.max_batch_size, other.max_batch_size)
        self.queue_wait.merge(other.queue_wait)
        self.compute.merge(other.compute)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "batches": self.batches,
            "samples": self.samples,
            "max_batch_size": self.max_batch_size,
            "queue_wait": self.queue_wait.counts,
            "compute": self.compute.counts,
        }

    @classmethod
    def from_dict(cls, record: Dict[str, Any]) -> "ModelStats":
        stats = cls()
        stats.requests = int(record["requests"])
        stats.errors = int(record["errors"])
        stats.batches = int(record["batches"])
        stats.samples = int(record["samples"])
        stats.max_batch_size = int(record["max_batch_size"])
        stats.queue_wait = Histogram(record["queue_wait"])
        stats.compute = Histogram(record["compute"])
        return stats

    def summary(self) -> Dict[str, Any]:
        """Return the figures a user reads: counts, batch sizes in samples, times in ms."""

        def milliseconds(value: Optional[float]) -> Optional[float]:
            return None if value is None else value * 1e3

        return {
            "requests": self.requests,
            "errors": self.errors,
            "batches": self.batches,
            "samples": self.samples,
            "mean_batch_size": self.samples / self.batches if self.batches else 0.0,
            "max_batch_size": self.max_batch_size,
            "queue_wait_ms_median": milliseconds(self.queue_wait.quantile(0.5)),
            "queue_wait_ms_p99": milliseconds(self.queue_wait.quantile(0.99)),
            "compute_ms_median": milliseconds(self.compute.quantile(0.5)),
            "compute_ms_p99": milliseconds(self.compute.quantile(0.99)),
        }


def encode_worker_stats(models: Dict[str, ModelStats]) -> np.ndarray:
    """Return the uint8 tensor a worker publishes for its per-model statistics."""
    document = {"format": STATS_FORMAT,
                "models": {key: stats.to_dict() for key, stats in models.items()}}
    return np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)


def decode_worker_stats(array: np.ndarray) -> Dict[str, ModelStats]:
    """Return the per-model statistics in a published tensor; {} for an unknown format."""
    document = json.loads(bytes(memoryview(array).cast("B")).decode("utf-8"))
    if document.get("format") != STATS_FORMAT:
        return {}
    return {key: ModelStats.from_dict(record) for key, record in document["models"].items()}
