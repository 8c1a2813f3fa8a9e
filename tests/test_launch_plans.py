"""Tests of the launch command lines (`--dry-run`) and option parsing, without a daemon.

No Slurm or PBS is installed here, so the srun, pbsdsh and mpiexec lines are checked as text.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from shmstore.launcher.env import rank_from_environment
from shmstore.launcher.options import OptionError, parse_model_spec
from shmstore.launcher.tagged import OpenMpiDemultiplexer, SlurmDemultiplexer
from shmstore.launcher.segments import remove_segments, segment_paths


def dry_run(options: list[str], command: list[str],
            extra_env: Optional[dict[str, str]] = None) -> tuple[int, list[str], str]:
    """Run `shmstore launch --dry-run`; return the exit code, the printed lines and stderr."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("SLURM_", "PBS_"))}
    environment.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "-m", "shmstore.launcher", "--dry-run", *options, "--", *command],
        capture_output=True, text=True, env=environment, timeout=30,
    )
    return result.returncode, result.stdout.splitlines(), result.stderr


def commands(lines: list[str]) -> list[list[str]]:
    """Split the non-comment lines of a dry run into argument lists, without a trailing &."""
    parsed = []
    for line in lines:
        if line.startswith("#"):
            continue
        parsed.append([word for word in shlex.split(line) if word != "&"])
    return parsed


@pytest.mark.timeout(30)
def test_dry_run_slurm() -> None:
    code, lines, stderr = dry_run(
        ["--name", "sim", "--scheduler", "slurm", "--nodes", "4", "--ranks", "128",
         "--memory", "8G", "--workers", "2", "--model", "eke=/models/eke.pt,batch_size=64"],
        ["./mom6", "-x", "a b"],
    )

    assert code == 0, stderr
    daemon, prepare, app, cleanup = commands(lines)
    per_node = ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--overlap", "--label"]
    assert daemon[:6] == per_node
    assert daemon[6:] == [sys.executable, "-m", "shmstore.launcher.node", "serve", "--name", "sim",
                          "--memory", "8G", "--workers", "2"]
    assert prepare[:6] == per_node
    assert prepare[9:14] == ["prepare", "--name", "sim", "--timeout", "60"]
    assert "eke=/models/eke.pt,backend=TORCH,device=CPU,batch_size=64," \
           "min_batch_size=0,min_batch_timeout=0" in prepare
    assert app == ["srun", "--nodes=4", "--ntasks=128", "--kill-on-bad-exit=1", "--label",
                   "--export=ALL,SHMSTORE_NAME=sim,SHMSTORE_NRANKS=128", "./mom6", "-x", "a b"]
    assert cleanup[:6] == per_node
    assert cleanup[9:12] == ["cleanup", "--name", "sim"]


@pytest.mark.timeout(30)
def test_dry_run_slurm_allocation_nodes() -> None:
    code, lines, stderr = dry_run(["--name", "sim", "--scheduler", "slurm", "--ranks", "8"],
                                  ["./app"], extra_env={"SLURM_JOB_NUM_NODES": "2"})

    assert code == 0, stderr
    daemon = commands(lines)[0]
    assert daemon[1:3] == ["--nodes=2", "--ntasks=2"]


@pytest.mark.timeout(30)
def test_dry_run_pbs(tmp_path: Path) -> None:
    node_file = tmp_path / "nodes"
    node_file.write_text("n1\nn1\nn2\nn2\nn3\nn3\n")

    code, lines, stderr = dry_run(
        ["--name", "sim", "--scheduler", "pbs", "--nodes", "2", "--ranks", "4"], ["./mom6"],
        extra_env={"PBS_NODEFILE": str(node_file)},
    )

    assert code == 0, stderr
    parsed = commands(lines)
    assert len(parsed) == 7
    daemons, prepares, app, cleanups = parsed[0:2], parsed[2:4], parsed[4], parsed[5:7]
    assert daemons[0][:5] == ["pbsdsh", "-o", "-n", "0", "--"]
    assert daemons[1][:5] == ["pbsdsh", "-o", "-n", "2", "--"]
    assert daemons[0][5:] == [sys.executable, "-m", "shmstore.launcher.node", "serve", "--name",
                              "sim", "--memory", "1G"]
    assert [step[8] for step in prepares] == ["prepare", "prepare"]
    assert [step[8] for step in cleanups] == ["cleanup", "cleanup"]
    assert app[:5] == ["SHMSTORE_NAME=sim", "SHMSTORE_NRANKS=4", "mpiexec", "-n", "4"]
    assert app[app.index("--host") + 1] == "n1:2,n2:2"
    assert app[app.index("-x") + 1] == "SHMSTORE_NAME"
    assert app[-1] == "./mom6"


@pytest.mark.timeout(30)
def test_dry_run_pbs_without_node_file() -> None:
    code, _lines, stderr = dry_run(["--scheduler", "pbs"], ["./mom6"])

    assert code == 2
    assert "PBS_NODEFILE is not set" in stderr


@pytest.mark.timeout(30)
def test_dry_run_local_mpi() -> None:
    code, lines, stderr = dry_run(["--name", "sim", "--mpi", "--ranks", "3"], ["./mom6"])

    assert code == 0, stderr
    daemon, prepare, app = commands(lines)
    assert daemon[3:] == ["serve", "--name", "sim", "--memory", "1G"]
    assert prepare[3:6] == ["prepare", "--name", "sim"]
    assert os.path.basename(app[2]) == "mpirun"
    assert app[3:5] == ["-n", "3"]
    assert "--tag-output" in app
    assert app[-1] == "./mom6"
    assert "# (the launcher removes /dev/shm/shmstore-sim-* itself)" in lines


@pytest.mark.timeout(30)
@pytest.mark.parametrize("options, message", [
    (["--ranks", "0"], "must be at least 1"),
    (["--name=-bad"], "invalid store name"),
    (["--name", "a/b"], "invalid store name"),
    (["--model", "nokey"], "expected KEY=PATH"),
    (["--model", "k=p,batch_size=x"], "batch_size must be an integer"),
    (["--model", "k=p,colour=red"], "unknown --model setting"),
    (["--mpi", "--scheduler", "slurm"], "--mpi applies to --scheduler local only"),
    (["--nodes", "2"], "runs on one node"),
])
def test_dry_run_invalid_options(options: list[str], message: str) -> None:
    code, _lines, stderr = dry_run(options, ["./mom6"])

    assert code == 2
    assert message in stderr


@pytest.mark.timeout(30)
def test_launch_without_command() -> None:
    result = subprocess.run([sys.executable, "-m", "shmstore.launcher", "--ranks", "2"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert "missing COMMAND" in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_launch_help(flag: str) -> None:
    result = subprocess.run([sys.executable, "-m", "shmstore", "launch", flag],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert "usage: shmstore launch" in result.stdout
    assert "--ranks" in result.stdout
    assert "missing COMMAND" not in result.stderr


@pytest.mark.timeout(30)
def test_top_help_lists_launch() -> None:
    result = subprocess.run([sys.executable, "-m", "shmstore", "--help"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert "launch" in result.stdout


@pytest.mark.timeout(10)
def test_model_spec_defaults() -> None:
    spec = parse_model_spec("eke=/m/eke.pt")

    assert spec.key == "eke"
    assert spec.path == "/m/eke.pt"
    assert (spec.backend, spec.device) == ("TORCH", "CPU")
    assert (spec.batch_size, spec.min_batch_size, spec.min_batch_timeout) == (0, 0, 0)


@pytest.mark.timeout(10)
def test_model_spec_settings() -> None:
    spec = parse_model_spec("eke=m.pt,batch_size=64,min_batch_size=8,min_batch_timeout=5,device=GPU")

    assert (spec.batch_size, spec.min_batch_size, spec.min_batch_timeout) == (64, 8, 5)
    assert spec.device == "GPU"
    assert parse_model_spec(spec.to_argument()) == spec


@pytest.mark.timeout(10)
def test_model_spec_negative() -> None:
    with pytest.raises(OptionError, match="must be >= 0"):
        parse_model_spec("k=p,batch_size=-1")


@pytest.mark.timeout(10)
def test_open_mpi_whole_lines() -> None:
    demultiplexer = OpenMpiDemultiplexer()

    assert demultiplexer.feed(b"[1,3]<stdout>:hello\n") == [(3, b"hello\n")]
    assert demultiplexer.feed(b"[12,0]<stderr>: warn\n") == [(0, b" warn\n")]
    assert demultiplexer.feed(b"mpirun noticed\n") == [(None, b"mpirun noticed\n")]
    assert demultiplexer.flush() == []


@pytest.mark.timeout(10)
def test_open_mpi_split_chunks() -> None:
    demultiplexer = OpenMpiDemultiplexer()

    # Open MPI tags each chunk it reads, so a line split over two reads carries two tags.
    assert demultiplexer.feed(b"[1,1]<stdout>:sum=16[1,1]<stdout>:\n") == [(1, b"sum=16\n")]
    assert demultiplexer.feed(b"[1,0]<stdout>:abc[1,1]<stdout>:def\n") == [(1, b"def\n")]
    assert demultiplexer.feed(b"[1,0]<stdout>:ghi\n") == [(0, b"abcghi\n")]
    assert demultiplexer.feed(b"[1,2]<stdout>:no newline") == []
    assert demultiplexer.flush() == [(2, b"no newline\n")]


@pytest.mark.timeout(10)
def test_slurm_labels() -> None:
    demultiplexer = SlurmDemultiplexer()

    assert demultiplexer.feed(b" 7: step\n") == [(7, b"step\n")]
    assert demultiplexer.feed(b"120: x: y\n") == [(120, b"x: y\n")]
    assert demultiplexer.feed(b"srun: error\n") == [(None, b"srun: error\n")]
    assert demultiplexer.flush() == []


@pytest.mark.timeout(10)
def test_rank_environment_order() -> None:
    assert rank_from_environment({"SHMSTORE_RANK": "2", "OMPI_COMM_WORLD_RANK": "5"}) == 2
    assert rank_from_environment({"OMPI_COMM_WORLD_RANK": "5", "SLURM_PROCID": "9"}) == 5
    assert rank_from_environment({"SLURM_PROCID": "9"}) == 9
    assert rank_from_environment({}) is None


@pytest.mark.timeout(10)
def test_segment_paths_exact_name(tmp_path: Path) -> None:
    for entry in ["shmstore-a-ctl", "shmstore-a-data", "shmstore-a-b-ctl", "shmstore-ab-ctl"]:
        (tmp_path / entry).write_bytes(b"")

    paths = segment_paths("a", str(tmp_path))
    removed = remove_segments("a", str(tmp_path))

    assert paths == [str(tmp_path / "shmstore-a-ctl"), str(tmp_path / "shmstore-a-data")]
    assert removed == paths
    assert sorted(os.listdir(tmp_path)) == ["shmstore-a-b-ctl", "shmstore-ab-ctl"]


@pytest.mark.timeout(30)
def test_launch_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    result = subprocess.run(
        [sys.executable, "-m", "shmstore.launcher", "--name", f"test-plans-{os.getpid()}",
         "--log-dir", str(tmp_path / "logs"), "--model", f"eke={missing}", "--", "true"],
        capture_output=True, text=True, timeout=30,
    )

    assert result.returncode == 2
    assert f"model file not found for key 'eke': {missing}" in result.stderr
    assert not (tmp_path / "logs").exists()
