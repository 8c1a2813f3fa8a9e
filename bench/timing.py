"""Time one operation many times and summarize the samples."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Summary:
    """Median and 99th percentile of a series of timings, in seconds."""

    median_s: float
    p99_s: float
    samples: int

    def to_json(self) -> dict[str, float]:
        return {"median_us": self.median_s * 1e6, "p99_us": self.p99_s * 1e6,
                "samples": self.samples}


def summarize(samples_s: list[float]) -> Summary:
    """Return the median and the 99th percentile (nearest rank) of samples_s."""
    if not samples_s:
        raise ValueError("cannot summarize an empty list of timings")

    ordered = sorted(samples_s)
    p99_index = min(len(ordered) - 1, int(0.99 * len(ordered)))
    return Summary(statistics.median(ordered), ordered[p99_index], len(ordered))


def time_operation(operation: Callable[[], object], repetitions: int,
                   warmup: int) -> Summary:
    """Run operation warmup times untimed, then time each of repetitions calls.

    The garbage collector is paused while timing, as timeit does, so that a collection
    triggered by the harness does not land in one sample.
    """
    if repetitions < 1:
        raise ValueError(f"repetitions must be at least 1, got {repetitions}")

    for _ in range(warmup):
        operation()

    samples_s = []
    collector_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repetitions):
            start = time.perf_counter_ns()
            operation()
            samples_s.append((time.perf_counter_ns() - start) * 1e-9)
    finally:
        if collector_was_enabled:
            gc.enable()

    return summarize(samples_s)
