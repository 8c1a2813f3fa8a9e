"""End-to-end tests of `shmstore launch` against the real daemon, real ranks and /dev/shm.

Every test runs the launcher as `python -m shmstore.launcher` in a subprocess, with a tiny
Python application written to tmp_path as the COMMAND, and checks afterwards that no segment
of the store and no process of the launch is left.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import numpy as np
import psutil
import pytest

_name_counter = 0


def unique_store_name(case: str) -> str:
    global _name_counter
    _name_counter += 1
    return f"test-launch-{os.getpid()}-{case}-{_name_counter}"


def write_app(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def start_launch(tmp_path: Path, name: str, options: list[str], command: list[str],
                 extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    environment = dict(os.environ)
    environment.update(extra_env or {})
    argv = [sys.executable, "-m", "shmstore.launcher", "--name", name, "--memory", "64M",
            "--log-dir", str(tmp_path / "logs" / name), "--grace-period", "2",
            "--start-timeout", "30", *options, "--", *command]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=environment, cwd=tmp_path, start_new_session=True)


def run_launch(tmp_path: Path, name: str, options: list[str], command: list[str],
               extra_env: Optional[dict[str, str]] = None,
               timeout_s: float = 60.0) -> tuple[int, str, str]:
    launcher = start_launch(tmp_path, name, options, command, extra_env)
    stdout, stderr = launcher.communicate(timeout=timeout_s)
    return launcher.returncode, stdout.decode(), stderr.decode()


def stop_launcher(launcher: subprocess.Popen) -> None:
    """Stop a launcher that a failed check left running, letting it clean up first."""
    if launcher.poll() is not None:
        return
    launcher.terminate()
    try:
        launcher.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.communicate()


def segments_of(name: str) -> list[str]:
    return glob.glob(f"/dev/shm/shmstore-{name}-*")


def processes_of(name: str, pids: tuple[int, ...] = ()) -> list[psutil.Process]:
    """Find live processes of a launch: the daemon (by --name), ranks (by env) or listed pids."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
            continue
        try:
            cmdline = process.info["cmdline"] or []
            in_cmdline = name in cmdline
            in_env = process.environ().get("SHMSTORE_NAME") == name
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if in_cmdline or in_env or process.pid in pids:
            found.append(process)
    return found


def recorded_pids(directory: Path) -> tuple[int, ...]:
    return tuple(int(path.read_text()) for path in directory.glob("*.pid"))


def assert_launch_gone(name: str, pid_dir: Optional[Path] = None) -> None:
    pids = recorded_pids(pid_dir) if pid_dir is not None else ()
    assert segments_of(name) == []
    assert processes_of(name, pids) == []


PUT_GET_APP = """\
import os
import numpy as np
import shmstore

rank = int(os.environ["SHMSTORE_RANK"])
name = os.environ["SHMSTORE_NAME"]
nranks = int(os.environ["SHMSTORE_NRANKS"])

data = np.arange(1000, dtype=np.float64) * (rank + 1)
with shmstore.Client(name) as client:
    client.put_tensor(f"rank-{rank}", data)
    back = np.array(client.get_tensor(f"rank-{rank}"))
assert np.array_equal(back, data)
print(f"rank={rank} name={name} nranks={nranks} sum={back.sum():.1f}", flush=True)
"""


@pytest.mark.timeout(90)
def test_launch_success(tmp_path: Path) -> None:
    name = unique_store_name("ok")
    app = write_app(tmp_path, "app.py", PUT_GET_APP)

    code, stdout, stderr = run_launch(tmp_path, name, ["--ranks", "2"], [sys.executable, str(app)])

    assert code == 0, stderr
    for rank in range(2):
        expected = f"[rank {rank}] rank={rank} name={name} nranks=2 sum={499500.0 * (rank + 1):.1f}"
        assert expected in stdout.splitlines()
    log_dir = tmp_path / "logs" / name
    assert (log_dir / "daemon.log").is_file()
    assert (log_dir / "rank-0.log").is_file()
    assert (log_dir / "rank-1.log").is_file()
    assert f"rank=1 name={name}" in (log_dir / "rank-1.log").read_text()
    assert "ready" in (log_dir / "daemon.log").read_text()
    assert_launch_gone(name)


FAIL_APP = """\
import os
import sys
import time

rank = os.environ["SHMSTORE_RANK"]
if rank == "1":
    sys.exit(3)
time.sleep(60)
"""


@pytest.mark.timeout(90)
def test_launch_failing_rank(tmp_path: Path) -> None:
    name = unique_store_name("fail")
    app = write_app(tmp_path, "app.py", FAIL_APP)

    code, _stdout, stderr = run_launch(tmp_path, name, ["--ranks", "2"], [sys.executable, str(app)])

    assert code == 3, stderr
    assert "rank 1" in stderr
    assert "exited with code 3" in stderr
    assert_launch_gone(name)


KILL_APP = """\
import os
import signal
import subprocess
import time
from pathlib import Path

rank = os.environ["SHMSTORE_RANK"]
pid_dir = Path(os.environ["PID_DIR"])
grandchild = subprocess.Popen(["sleep", "60"])
(pid_dir / f"grandchild-{rank}.pid").write_text(str(grandchild.pid))
(pid_dir / f"rank-{rank}.pid").write_text(str(os.getpid()))
if rank == "0":
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


@pytest.mark.timeout(90)
def test_launch_killed_rank(tmp_path: Path) -> None:
    name = unique_store_name("kill")
    app = write_app(tmp_path, "app.py", KILL_APP)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    code, _stdout, stderr = run_launch(tmp_path, name, ["--ranks", "2"], [sys.executable, str(app)],
                                       extra_env={"PID_DIR": str(pid_dir)})

    assert code == 128 + signal.SIGKILL, stderr
    assert len(recorded_pids(pid_dir)) == 4
    assert_launch_gone(name, pid_dir)


SLEEP_APP = """\
import os
import subprocess
import time
from pathlib import Path

rank = os.environ["SHMSTORE_RANK"]
pid_dir = Path(os.environ["PID_DIR"])
grandchild = subprocess.Popen(["sleep", "60"])
(pid_dir / f"grandchild-{rank}.pid").write_text(str(grandchild.pid))
(pid_dir / f"rank-{rank}.pid").write_text(str(os.getpid()))
print("started", flush=True)
time.sleep(60)
"""


def wait_for_files(directory: Path, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(directory.glob("*.pid"))) < count:
        assert time.monotonic() < deadline, f"only {list(directory.iterdir())} in {directory}"
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_launch_sigint(tmp_path: Path) -> None:
    name = unique_store_name("sigint")
    app = write_app(tmp_path, "app.py", SLEEP_APP)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    launcher = start_launch(tmp_path, name, ["--ranks", "2"], [sys.executable, str(app)],
                            extra_env={"PID_DIR": str(pid_dir)})
    try:
        wait_for_files(pid_dir, 4, timeout_s=30)
        assert segments_of(name) != []
        launcher.send_signal(signal.SIGINT)
        stdout, stderr = launcher.communicate(timeout=30)
    finally:
        stop_launcher(launcher)

    assert launcher.returncode == 128 + signal.SIGINT, stderr.decode()
    assert "received SIGINT" in stderr.decode()
    assert "[rank 1] started" in stdout.decode().splitlines()
    assert_launch_gone(name, pid_dir)


@pytest.mark.timeout(90)
def test_launch_daemon_killed(tmp_path: Path) -> None:
    name = unique_store_name("daemon")
    app = write_app(tmp_path, "app.py", SLEEP_APP)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    # One inference worker, so that the check below also covers the daemon's own children.
    launcher = start_launch(tmp_path, name, ["--ranks", "2", "--workers", "1", "--device", "cpu"],
                            [sys.executable, str(app)], extra_env={"PID_DIR": str(pid_dir)})
    try:
        wait_for_files(pid_dir, 4, timeout_s=30)
        daemons = [process for process in processes_of(name)
                   if "serve" in process.cmdline()]
        assert len(daemons) == 1
        assert len(daemons[0].children()) == 1
        daemons[0].kill()
        _stdout, stderr = launcher.communicate(timeout=30)
    finally:
        stop_launcher(launcher)

    assert launcher.returncode == 1
    assert "exited with code 137 during the run" in stderr.decode()
    assert_launch_gone(name, pid_dir)


EXCHANGE_APP = """\
import os
import numpy as np
import shmstore

rank = int(os.environ["SHMSTORE_RANK"])
nranks = int(os.environ["SHMSTORE_NRANKS"])
seed = int(os.environ["SHMSTORE_TEST_SEED"])

with shmstore.Client(os.environ["SHMSTORE_NAME"]) as client:
    mine = np.random.default_rng(seed + rank).integers(0, 1000, size=4096, dtype=np.int64)
    client.put_tensor(f"part-{rank}", mine)
    total = 0
    for other in range(nranks):
        assert client.poll_tensor(f"part-{other}", 10, 3000), f"part-{other} never arrived"
        total += int(np.asarray(client.get_tensor(f"part-{other}")).sum())
print(f"total={total}", flush=True)
"""


@pytest.mark.timeout(120)
def test_launch_concurrent_names(tmp_path: Path, seed: int) -> None:
    app = write_app(tmp_path, "app.py", EXCHANGE_APP)
    names = [unique_store_name("pair"), unique_store_name("pair")]
    expected = sum(
        int(np.random.default_rng(seed + rank).integers(0, 1000, size=4096, dtype=np.int64).sum())
        for rank in range(2)
    )

    launchers = [start_launch(tmp_path, name, ["--ranks", "2"], [sys.executable, str(app)],
                              extra_env={"SHMSTORE_TEST_SEED": str(seed)})
                 for name in names]
    results = [launcher.communicate(timeout=90) for launcher in launchers]

    for name, launcher, (stdout, stderr) in zip(names, launchers, results):
        assert launcher.returncode == 0, stderr.decode()
        lines = stdout.decode().splitlines()
        assert f"[rank 0] total={expected}" in lines
        assert f"[rank 1] total={expected}" in lines
        assert_launch_gone(name)


@pytest.mark.timeout(60)
def test_launch_name_in_use(tmp_path: Path) -> None:
    name = unique_store_name("busy")
    app = write_app(tmp_path, "app.py", SLEEP_APP)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    first = start_launch(tmp_path, name, [], [sys.executable, str(app)],
                         extra_env={"PID_DIR": str(pid_dir)})
    try:
        wait_for_files(pid_dir, 2, timeout_s=30)
        code, _stdout, stderr = run_launch(tmp_path, name, [], [sys.executable, str(app)],
                                           extra_env={"PID_DIR": str(tmp_path)})
        assert code == 1
        assert "already served by a live daemon" in stderr
        assert first.poll() is None
        assert segments_of(name) != []
    finally:
        stop_launcher(first)

    assert first.returncode == 128 + signal.SIGTERM
    assert_launch_gone(name, pid_dir)


MODEL_APP = """\
import os
import shmstore

rank = os.environ["SHMSTORE_RANK"]
with shmstore.Client() as client:
    # No polling: the launcher must have stored the model before this rank started.
    print(f"model exists={client.model_exists('eke')}", flush=True)
"""


def write_model_file(path: Path) -> None:
    """Write a TorchScript model when torch is installed, else opaque bytes.

    Storing a model copies its bytes into the store without loading it, so either works for
    checking that the launcher stores models before the ranks start.
    """
    try:
        import torch
    except ImportError:
        path.write_bytes(b"not a TorchScript archive, stored as opaque bytes")
        return
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(path))


@pytest.mark.timeout(90)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_launch_model_before_ranks(tmp_path: Path) -> None:
    name = unique_store_name("model")
    app = write_app(tmp_path, "app.py", MODEL_APP)
    model_path = tmp_path / "eke.pt"
    write_model_file(model_path)

    code, stdout, stderr = run_launch(
        tmp_path, name, ["--ranks", "2", "--model", f"eke={model_path},batch_size=8"],
        [sys.executable, str(app)],
    )

    assert code == 0, stderr
    lines = stdout.splitlines()
    assert "[rank 0] model exists=True" in lines
    assert "[rank 1] model exists=True" in lines
    prepare_log = (tmp_path / "logs" / name / "prepare.log").read_text()
    assert f"stored model 'eke' from {model_path}" in prepare_log
    assert_launch_gone(name)


MPI_APP = """\
import os
import numpy as np
import shmstore

rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
with shmstore.Client(os.environ["SHMSTORE_NAME"]) as client:
    client.put_tensor(f"mpi-{rank}", np.full(16, rank, dtype=np.int32))
    back = np.asarray(client.get_tensor(f"mpi-{rank}"))
print(f"mpi rank={rank} nranks={os.environ['SHMSTORE_NRANKS']} sum={int(back.sum())}", flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="mpirun not found; install openmpi-bin to run the --mpi test")
def test_launch_mpi(tmp_path: Path) -> None:
    name = unique_store_name("mpi")
    app = write_app(tmp_path, "app.py", MPI_APP)

    code, stdout, stderr = run_launch(tmp_path, name, ["--mpi", "--ranks", "2"],
                                      [sys.executable, str(app)], timeout_s=100)

    assert code == 0, stderr
    lines = stdout.splitlines()
    assert "[rank 0] mpi rank=0 nranks=2 sum=0" in lines
    assert "[rank 1] mpi rank=1 nranks=2 sum=16" in lines
    log_dir = tmp_path / "logs" / name
    assert "mpi rank=1" in (log_dir / "rank-1.log").read_text()
    assert_launch_gone(name)


@pytest.mark.timeout(60)
def test_launch_default_name(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "shmstore.launcher", "--memory", "64M", "--log-dir",
            str(tmp_path / "logs"), "--", sys.executable, "-c",
            "import os; print('name=' + os.environ['SHMSTORE_NAME'])"]
    launcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = launcher.communicate(timeout=50)
    name = f"launch-{launcher.pid}"

    assert launcher.returncode == 0, stderr
    assert f"[rank 0] name={name}" in stdout.splitlines()
    assert_launch_gone(name)


@pytest.mark.timeout(60)
def test_launch_daemon_start_failure(tmp_path: Path) -> None:
    name = unique_store_name("nostart")
    marker = tmp_path / "rank-ran"

    # An arena far larger than /dev/shm makes the daemon exit at start.
    argv = [sys.executable, "-m", "shmstore.launcher", "--name", name, "--memory", "900T",
            "--log-dir", str(tmp_path / "logs"), "--", "touch", str(marker)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=50)

    assert result.returncode == 1
    assert f"the daemon of store '{name}'" in result.stderr
    assert "before the store was ready" in result.stderr
    assert "/dev/shm" in result.stderr.split("Last lines of")[1]
    assert not marker.exists()
    assert_launch_gone(name)


@pytest.mark.timeout(60)
def test_launch_missing_command(tmp_path: Path) -> None:
    name = unique_store_name("nocmd")

    code, _stdout, stderr = run_launch(tmp_path, name, ["--ranks", "2"],
                                       [str(tmp_path / "does-not-exist")])

    assert code == 1
    assert "cannot start the application" in stderr
    assert_launch_gone(name)


SIDECAR_APP = """\
import os
import sys
import numpy as np
import shmstore

with shmstore.Client() as client:
    found = client.poll_tensor("rank-0", 20, 1500)
    if not found:
        sys.exit(5)
    total = float(np.asarray(client.get_tensor("rank-0")).sum())
print(f"sidecar saw store={os.environ['SHMSTORE_NAME']} total={total:.1f}", flush=True)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sidecar_code", [0, 4])
def test_launch_sidecar_exit_code(tmp_path: Path, sidecar_code: int) -> None:
    name = unique_store_name("sidecar")
    app = write_app(tmp_path, "app.py", PUT_GET_APP)
    sidecar = write_app(tmp_path, "sidecar.py", SIDECAR_APP)
    sidecar_command = f"{sys.executable} {sidecar} {sidecar_code}"

    code, stdout, stderr = run_launch(tmp_path, name, ["--ranks", "1",
                                                       "--sidecar", sidecar_command],
                                      [sys.executable, str(app)])

    assert code == sidecar_code, stderr
    assert f"[sidecar-0] sidecar saw store={name} total=499500.0" in stdout
    assert "[rank 0] rank=0" in stdout
    assert_launch_gone(name)
