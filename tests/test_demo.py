"""End-to-end test of the ocean demo: Fortran ranks, daemon, workers and analysis together."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EKE_MODEL = Path(os.environ.get(
    "SHMSTORE_EKE_MODEL",
    Path(__file__).resolve().parents[2] / "shared" / "models" / "ncar_ml_eke.pt"))


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
@pytest.mark.skipif(not EKE_MODEL.is_file(), reason=f"the ML-EKE model {EKE_MODEL} is absent")
def test_demo_real_model_two_steps(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    segments_before = set(glob.glob("/dev/shm/shmstore-demo-*"))

    result = subprocess.run(
        [sys.executable, "-m", "shmstore.demo", "--model", str(EKE_MODEL), "--steps", "2",
         "--grid", "48x24", "--ranks", "2", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=280, cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "check: 64 columns per rank" in result.stdout
    assert "PASS" in result.stdout
    assert "throughput:" in result.stdout
    assert (tmp_path / "out" / "eke_last_step.png").stat().st_size > 0
    timings = (tmp_path / "out" / "timings.txt").read_text().splitlines()
    assert len(timings) == 3
    assert set(glob.glob("/dev/shm/shmstore-demo-*")) <= segments_before
