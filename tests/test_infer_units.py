"""Unit tests of the inference pieces that need no daemon: stored-model format, batch
planning, statistics and device names."""

from __future__ import annotations

import pytest

from shmstore.inference import blob
from shmstore.inference.batcher import BatchSettings, PendingRequest, plan_batches
from shmstore.inference.devices import parse_worker_devices
from shmstore.inference.stats import (
    Histogram,
    ModelStats,
    decode_worker_stats,
    encode_worker_stats,
)


def make_request(number: int, rows: int, signature=("f", 1, ("torch.float32", (4,))),
                 taken_ns: int = 0) -> PendingRequest:
    return PendingRequest(slot=number, sequence=1, submitted_ns=0, deadline_ns=10**18,
                          kind=blob.KIND_MODEL, key="m", function="", inputs=["x"],
                          outputs=["y"], taken_ns=taken_ns, tensors=[], rows=rows,
                          signature=signature)


@pytest.mark.timeout(10)
def test_blob_round_trip():
    data = blob.encode(blob.KIND_MODEL, b"model bytes", "torch", "gpu:2", 64, 8, 5, "v1")
    settings = blob.decode_settings(data, "m")

    assert settings.kind == blob.KIND_MODEL
    assert settings.backend == "TORCH"
    assert settings.device == "GPU:2"
    assert (settings.batch_size, settings.min_batch_size, settings.min_batch_timeout_ms) == \
        (64, 8, 5)
    assert settings.tag == "v1"
    assert bytes(blob.payload_view(data, settings)) == b"model bytes"


@pytest.mark.timeout(10)
def test_blob_new_version_each_store():
    first = blob.decode_settings(blob.encode(blob.KIND_MODEL, b"x"), "m")
    second = blob.decode_settings(blob.encode(blob.KIND_MODEL, b"x"), "m")
    assert first.version != second.version


@pytest.mark.timeout(10)
@pytest.mark.parametrize("arguments, message", [
    (dict(backend="TF"), "unsupported backend"),
    (dict(device="TPU"), "invalid device"),
    (dict(batch_size=-1), "batch_size"),
    (dict(min_batch_size=4), "need batching"),
    (dict(batch_size=4, min_batch_size=8), "exceeds"),
])
def test_blob_invalid_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        blob.encode(blob.KIND_MODEL, b"x", **arguments)


@pytest.mark.timeout(10)
def test_blob_rejects_plain_tensor():
    with pytest.raises(ValueError, match="not a stored model"):
        blob.decode_settings(bytearray(600), "m")


@pytest.mark.timeout(10)
def test_plan_no_batching_runs_each_alone():
    requests = [make_request(number, rows=2) for number in range(3)]
    batches, kept, wake_ns = plan_batches(requests, BatchSettings(0, 0, 0), now_ns=0)
    assert [len(batch) for batch in batches] == [1, 1, 1]
    assert kept == []
    assert wake_ns is None


@pytest.mark.timeout(10)
def test_plan_no_requests():
    assert plan_batches([], BatchSettings(8, 0, 0), now_ns=0) == ([], [], None)


@pytest.mark.timeout(10)
def test_plan_packs_up_to_batch_size():
    requests = [make_request(number, rows) for number, rows in enumerate([3, 4, 2, 9, 1])]
    batches, kept, _ = plan_batches(requests, BatchSettings(8, 0, 0), now_ns=0)
    assert [[request.slot for request in batch] for batch in batches] == [[0, 1], [2], [3], [4]]
    assert kept == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("rows, sizes", [
    ([3, 4, 1], [3]),
    ([3, 4, 2], [2, 1]),
    ([8], [1]),
])
def test_plan_one_batch_when_all_fit(rows, sizes):
    requests = [make_request(number, count) for number, count in enumerate(rows)]

    batches, kept, _ = plan_batches(requests, BatchSettings(8, 0, 0), now_ns=0)

    assert [len(batch) for batch in batches] == sizes
    assert [request.slot for batch in batches for request in batch] == list(range(len(rows)))
    assert kept == []


@pytest.mark.timeout(10)
def test_plan_separates_signatures():
    other = ("f", 1, ("torch.float64", (4,)))
    requests = [make_request(0, 1), make_request(1, 1, signature=other), make_request(2, 1),
                make_request(3, 1, signature=None)]
    batches, _, _ = plan_batches(requests, BatchSettings(16, 0, 0), now_ns=0)
    groups = sorted(sorted(request.slot for request in batch) for batch in batches)
    assert groups == [[0, 2], [1], [3]]


@pytest.mark.timeout(10)
def test_plan_waits_for_min_batch_size():
    requests = [make_request(0, 2, taken_ns=1_000_000), make_request(1, 2, taken_ns=2_000_000)]
    settings = BatchSettings(16, 8, 5)

    batches, kept, wake_ns = plan_batches(requests, settings, now_ns=3_000_000)
    assert batches == []
    assert len(kept) == 2
    assert wake_ns == 6_000_000

    batches, kept, _ = plan_batches(requests, settings, now_ns=6_000_000)
    assert [len(batch) for batch in batches] == [2]
    assert kept == []


@pytest.mark.timeout(10)
def test_plan_runs_once_min_batch_size_reached():
    requests = [make_request(number, 4) for number in range(2)]
    batches, kept, _ = plan_batches(requests, BatchSettings(16, 8, 1000), now_ns=0)
    assert [len(batch) for batch in batches] == [2]
    assert kept == []


@pytest.mark.timeout(10)
def test_histogram_quantiles_within_bucket():
    histogram = Histogram()
    for microseconds in range(1, 1001):
        histogram.add(microseconds / 1e6)

    median = histogram.quantile(0.5)
    p99 = histogram.quantile(0.99)
    assert median is not None and p99 is not None
    assert 500e-6 / 1.2 < median < 500e-6 * 1.2
    assert 990e-6 / 1.2 < p99 < 990e-6 * 1.2
    assert Histogram().quantile(0.5) is None


@pytest.mark.timeout(10)
def test_stats_merge_and_encode():
    first, second = ModelStats(), ModelStats()
    first.record_batch(samples=8, compute_s=0.001)
    first.record_request(queue_wait_s=0.0001, failed=False)
    second.record_batch(samples=2, compute_s=0.002)
    second.record_request(queue_wait_s=0.0002, failed=True)

    decoded = decode_worker_stats(encode_worker_stats({"m": first}))["m"]
    decoded.merge(second)
    summary = decoded.summary()

    assert summary["requests"] == 2
    assert summary["errors"] == 1
    assert summary["batches"] == 2
    assert summary["samples"] == 10
    assert summary["mean_batch_size"] == 5.0
    assert summary["max_batch_size"] == 8


@pytest.mark.timeout(10)
def test_worker_devices_parse():
    assert parse_worker_devices("cpu") == ["cpu"]
    assert parse_worker_devices("cuda") == ["cuda:0"]
    assert parse_worker_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    with pytest.raises(ValueError, match="invalid device"):
        parse_worker_devices("gpu0")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text, seconds", [
    ("", 250e-6),
    ("0", 0.0),
    ("1000", 1e-3),
    ("100000", 0.1),
    ("100001", 250e-6),
    ("-5", 250e-6),
    ("fast", 250e-6),
])
def test_worker_spin_from_env(monkeypatch, text, seconds):
    from shmstore.inference.worker import worker_spin_seconds

    monkeypatch.setenv("SHMSTORE_INFER_WORKER_SPIN_US", text)

    assert worker_spin_seconds() == pytest.approx(seconds)
