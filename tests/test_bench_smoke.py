"""End-to-end run of the benchmark report in quick mode (`python -m bench.report --quick`)."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLEMENTATIONS = ["shmstore Python", "shmstore C", "Redis", "shared_memory",
                   "memcpy numpy", "memcpy C"]
SIZES = ["8 KiB", "1 MiB", "64 MiB"]


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a report that is still running: SIGTERM lets it stop its servers, SIGKILL follows."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every process of the group has exited already
    process.wait()


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="redis-server is not installed (apt-get install -y redis-server)")
def test_report_quick_run(tmp_path: pathlib.Path) -> None:
    json_path = tmp_path / "report.json"
    # A session of its own puts the report, its redis-server and its shmstore daemon in one
    # process group, so that a report that hangs can be stopped with everything it started.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.report", "--quick", "--json", str(json_path)],
        cwd=REPOSITORY_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=200)
    finally:
        if process.poll() is None:
            stop_process_group(process)

    assert process.returncode == 0, output
    assert "Performance bars" in output
    assert "NOT MEASURED" not in output

    with open(json_path, encoding="utf-8") as report_file:
        report = json.load(report_file)
    assert report["quick"] is True
    assert report["c_error"] == ""
    for implementation in IMPLEMENTATIONS:
        assert sorted(report["results"][implementation]) == sorted(SIZES), implementation
    for size in SIZES:
        for operation in ["put", "get", "put+get"]:
            timing = report["results"]["shmstore Python"][size][operation]
            assert timing["median_us"] > 0, (size, operation)
    assert len(report["bars"]) == 6
    assert all(bar["passed"] is not None for bar in report["bars"]), report["bars"]

    # The report names its store and its shared_memory segments after its own pid.
    assert glob.glob(f"/dev/shm/shmstore-bench-{process.pid}-*") == []
    assert glob.glob(f"/dev/shm/bench-shared-memory-{process.pid}-*") == []
