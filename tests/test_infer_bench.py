"""Smoke test of the inference benchmark: it runs end to end and prints its bars.

Timings are not checked: the bars are printed with PASS or FAIL by the benchmark itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the inference benchmark needs torch (pip install torch==2.13.0)")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_bench_infer_quick_run(tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench.bench_infer", "--quick", "--json",
                             str(output)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=280)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "| batching on / off, 8 clients x 1 row |" in result.stdout
    assert "| service latency - direct call, 1 client x 1 row, batching off |" in result.stdout
    assert output.is_file()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("mean_rows, request_rows, sizes", [
    (4.8, 1, {4, 5}),
    (2.67, 1, {2, 3}),
    (134.0, 64, {128, 192}),
    (5.0, 1, {5}),
    (0.5, 1, {1}),
])
def test_raw_batch_sizes_keep_mean(monkeypatch, mean_rows, request_rows, sizes):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from bench.bench_infer import raw_batch_sizes

    found = raw_batch_sizes(mean_rows, request_rows, calls=100)

    assert len(found) == 100
    assert set(found) == sizes
    assert sum(found) / 100 == pytest.approx(max(mean_rows, request_rows),
                                             abs=request_rows / 100)
