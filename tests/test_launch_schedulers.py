"""Run Slurm and PBS launches on this one node, with stand-ins for srun and pbsdsh.

No workload manager is installed here. The stand-ins below start their tasks on this node the
way srun and pbsdsh would on each allocated node, so the launcher runs its real Slurm and PBS
plans end to end: the daemon step, the node-side prepare and cleanup steps, the rank labels
and, for PBS, Open MPI's real mpiexec. The real daemon and real ranks run underneath.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

# srun for one node: runs --ntasks copies of the command with SLURM_PROCID set, applies
# --export, prefixes lines with the task number under --label, and exits with the highest
# task exit code (128+S for a task killed by signal S), as srun does.
FAKE_SRUN = """\
import os
import subprocess
import sys
import threading

arguments = sys.argv[1:]
options = {}
while arguments and arguments[0].startswith("--"):
    key, _, value = arguments.pop(0)[2:].partition("=")
    options[key] = value

environment = dict(os.environ)
for item in options.get("export", "ALL").split(",")[1:]:
    key, _, value = item.partition("=")
    environment[key] = value

lock = threading.Lock()


def relay(rank, stream):
    prefix = f"{rank}: ".encode() if "label" in options else b""
    for line in stream:
        with lock:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.buffer.flush()


tasks = []
threads = []
for rank in range(int(options.get("ntasks", "1"))):
    task_environment = dict(environment, SLURM_PROCID=str(rank))
    task = subprocess.Popen(arguments, env=task_environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    thread = threading.Thread(target=relay, args=(rank, task.stdout))
    thread.start()
    tasks.append(task)
    threads.append(thread)

codes = [task.wait() for task in tasks]
for thread in threads:
    thread.join()
sys.exit(max(128 - code if code < 0 else code for code in codes))
"""

# pbsdsh for one node: runs the command after -- in a session of its own and, like a spawn on
# a remote node, does not pass SIGTERM on to it; the launcher's cleanup step must stop it.
FAKE_PBSDSH = """\
import os
import signal
import subprocess
import sys

command = sys.argv[sys.argv.index("--") + 1:]
task = subprocess.Popen(command, start_new_session=True)
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
sys.exit(task.wait())
"""

RANK_APP = """\
import os
import numpy as np
import shmstore

rank = int(os.environ[os.environ["RANK_VARIABLE"]])
with shmstore.Client() as client:
    client.put_tensor(f"part-{rank}", np.full(8, rank + 1, dtype=np.int64))
    back = np.asarray(client.get_tensor(f"part-{rank}"))
print(f"rank={rank} nranks={os.environ['SHMSTORE_NRANKS']} sum={int(back.sum())}", flush=True)
"""


def install_tool(bin_dir: Path, tool: str, source: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / tool
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(source))
    path.chmod(0o755)


def run_launch(tmp_path: Path, name: str, options: list[str],
               extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(RANK_APP)
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("SLURM_", "PBS_"))}
    environment["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    environment.update(extra_env)
    argv = [sys.executable, "-m", "shmstore.launcher", "--name", name, "--memory", "64M",
            "--log-dir", str(tmp_path / "logs"), "--grace-period", "2", *options,
            "--", sys.executable, str(app)]
    return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=100)


def assert_launch_gone(name: str) -> None:
    assert glob.glob(f"/dev/shm/shmstore-{name}-*") == []
    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        if name in (process.info["cmdline"] or []):
            leftovers.append(process)
    assert leftovers == []


@pytest.mark.timeout(120)
def test_slurm_launch_one_node(tmp_path: Path) -> None:
    name = f"test-launch-slurm-{os.getpid()}"
    install_tool(tmp_path / "bin", "srun", FAKE_SRUN)

    result = run_launch(tmp_path, name, ["--scheduler", "slurm", "--ranks", "2"],
                        {"SLURM_JOB_NUM_NODES": "1", "RANK_VARIABLE": "SLURM_PROCID"})

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[rank 0] rank=0 nranks=2 sum=8" in lines
    assert "[rank 1] rank=1 nranks=2 sum=16" in lines
    assert "rank=1" in (tmp_path / "logs" / "rank-1.log").read_text()
    assert "ready" in (tmp_path / "logs" / "daemon.log").read_text()
    assert_launch_gone(name)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("mpiexec") is None,
                    reason="mpiexec not found; install openmpi-bin to run the PBS launch test")
def test_pbs_launch_one_node(tmp_path: Path) -> None:
    name = f"test-launch-pbs-{os.getpid()}"
    install_tool(tmp_path / "bin", "pbsdsh", FAKE_PBSDSH)
    node_file = tmp_path / "nodes"
    node_file.write_text("localhost\nlocalhost\n")

    result = run_launch(tmp_path, name, ["--scheduler", "pbs", "--ranks", "2"],
                        {"PBS_NODEFILE": str(node_file), "RANK_VARIABLE": "OMPI_COMM_WORLD_RANK"})

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[rank 0] rank=0 nranks=2 sum=8" in lines
    assert "[rank 1] rank=1 nranks=2 sum=16" in lines
    # The stand-in pbsdsh left the daemon running, so the cleanup step had to stop it.
    cleanup_log = (tmp_path / "logs" / "cleanup.log").read_text()
    assert "still runs; sending SIGTERM" in cleanup_log
    assert_launch_gone(name)
