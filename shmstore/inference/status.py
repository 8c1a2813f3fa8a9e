"""The inference part of `shmstore status`: workers, queue and per-model statistics."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from shmstore import _infer


def _milliseconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_model_table(stats: Dict[str, Dict[str, Any]]) -> List[str]:
    """Return one header line and one line per model of get_all_model_stats()."""
    lines = [f"  {'model':<24} {'requests':>9} {'errors':>7} {'batches':>8} {'mean bs':>8} "
             f"{'max bs':>7} {'wait p50/p99 ms':>17} {'compute p50/p99 ms':>19}"]
    for key in sorted(stats):
        record = stats[key]
        wait = (f"{_milliseconds(record['queue_wait_ms_median'])}/"
                f"{_milliseconds(record['queue_wait_ms_p99'])}")
        compute = (f"{_milliseconds(record['compute_ms_median'])}/"
                   f"{_milliseconds(record['compute_ms_p99'])}")
        lines.append(f"  {key:<24} {record['requests']:>9} {record['errors']:>7} "
                     f"{record['batches']:>8} {record['mean_batch_size']:>8.1f} "
                     f"{record['max_batch_size']:>7} {wait:>17} {compute:>19}")
    return lines


def format_inference_status(name: str) -> Optional[str]:
    """Return the inference lines of `shmstore status` for store name, or None when the
    store runs no inference workers."""
    from shmstore.client import Client

    try:
        segment = _infer.Segment.open(name)
    except _infer.InferError:
        return None
    try:
        info = segment.info()
        workers = [segment.worker(index) for index in range(info["worker_count"])]
    finally:
        segment.close()

    if info["worker_count"] == 0:
        return "inference: no workers (start the daemon with --workers N to run models)"
    lines = [f"inference: {info['worker_count']} worker(s), {info['queue_depth']} request(s) "
             f"queued, {info['slots_in_use']} of {info['slot_count']} request slots in use, "
             f"{info['requests_submitted']} submitted"]
    for worker in workers:
        lines.append(f"  worker {worker['index']}: pid {worker['pid']}, {worker['state']}, "
                     f"{worker['device'] or '-'}, {worker['requests_completed']} requests in "
                     f"{worker['batches_run']} batches, {worker['in_flight']} in flight")

    with Client(name) as client:
        stats = client.get_all_model_stats()
    if stats:
        lines.extend(format_model_table(stats))
    else:
        lines.append("  no model has run yet")
    return "\n".join(lines)
