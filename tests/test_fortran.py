"""Tests of the Fortran client module: its build, every function, every element type and
rank, and the memory layout seen from Python.

The Fortran module is built from the source tree into a temporary folder, linked against
the libshmstore.so that `pip install` built. That library comes from the same build as the
daemon's Python extension, so both agree on the shared-memory layout even while the C
sources change. The Fortran test programs in fortran/tests/ run against a real daemon (the
`store` fixture of conftest.py), and the Python side of each test reads or writes the same
store with shmstore.Client (the `client` fixture).
"""

import errno
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Dict, List

import numpy as np
import pytest

from conftest import DaemonProcess, read_line_with_timeout

if TYPE_CHECKING:
    from shmstore.client import Client

ROOT = Path(__file__).resolve().parent.parent
FORTRAN_DIR = ROOT / "fortran"
HEADER = ROOT / "csrc" / "include" / "shmstore.h"
MODULE_SOURCE = FORTRAN_DIR / "shmstore_client.f90"
TEST_PROGRAMS = ("test_api", "test_types", "test_layout", "test_lost", "test_model")

# Flags for the test programs: -fcheck=all adds bounds and pointer checks at run time.
PROGRAM_FLAGS = ["-std=f2008", "-g", "-fcheck=all"]

NO_GFORTRAN = "gfortran is not installed (apt-get install gfortran)"

logger = logging.getLogger(__name__)


def load_build_module() -> ModuleType:
    """Import fortran/build_fortran.py, which is not part of an installed package."""
    spec = importlib.util.spec_from_file_location("build_fortran",
                                                  FORTRAN_DIR / "build_fortran.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_checked(command: List[str], **options) -> subprocess.CompletedProcess:
    """Run a build command and fail the test with its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **options)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed with exit code {result.returncode}:\n"
        f"{result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="session")
def fortran_build(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Build the Fortran module and the test programs once per session.

    Returns the paths: "lib" and "mod" folders, and one entry per test program.
    """
    if shutil.which("gfortran") is None:
        pytest.skip(NO_GFORTRAN)

    from shmstore import config

    installed_library = Path(config.LIB_DIR) / "libshmstore.so"
    if not installed_library.is_file():
        pytest.fail(f"{installed_library} is missing; run `pip install -e .` to build it")

    top = tmp_path_factory.mktemp("fortran")
    lib_dir = top / "lib"
    mod_dir = top / "mod"
    lib_dir.mkdir()
    shutil.copy2(installed_library, lib_dir / "libshmstore.so")

    built = load_build_module().build(str(lib_dir), str(HEADER.parent), str(mod_dir),
                                      str(top / "temp"))
    assert built, "build_fortran.build() returned False; its output above says why"

    paths = {"lib": lib_dir, "mod": mod_dir}
    for program in TEST_PROGRAMS:
        executable = top / program
        run_checked(["gfortran", *PROGRAM_FLAGS, f"-I{mod_dir}",
                     str(FORTRAN_DIR / "tests" / f"{program}.f90"), "-o", str(executable),
                     f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}",
                     "-lshmstore_fortran", "-lshmstore"])
        paths[program] = executable
    return paths


def run_program(executable: Path, store: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Fortran program against the store and return its result."""
    environment = dict(os.environ, SHMSTORE_NAME=store)
    result = subprocess.run([str(executable)], capture_output=True, text=True,
                            env=environment, timeout=timeout, check=False)
    logger.info("%s exited with %d:\n%s%s", executable.name, result.returncode,
                result.stdout, result.stderr)
    return result


def output_line(output: str, label: str) -> str:
    """Return the line of output that starts with label followed by a colon."""
    for line in output.splitlines():
        if line.startswith(label + ":"):
            return line
    raise AssertionError(f"no line starting with {label!r} in:\n{output}")


def header_constants(enum_text: str) -> Dict[str, int]:
    """Return NAME = value pairs of a C enum body."""
    return {name: int(value)
            for name, value in re.findall(r"(SHMSTORE_\w+)\s*=\s*(-?\d+)", enum_text)}


def fortran_constants() -> Dict[str, int]:
    """Return the integer parameters of the Fortran module, by name."""
    text = MODULE_SOURCE.read_text()
    return {name.upper(): int(value)
            for name, value in re.findall(
                r"integer, parameter, public :: (SHMSTORE_\w+) = (-?\d+)", text)}


# ---- source and build --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_generator_output_current() -> None:
    result = subprocess.run([sys.executable, str(FORTRAN_DIR / "generate.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(120)
def test_module_compiles_without_warnings(tmp_path: Path) -> None:
    if shutil.which("gfortran") is None:
        pytest.skip(NO_GFORTRAN)
    run_checked(["gfortran", "-std=f2008", "-Wall", "-Wextra", "-Werror", "-J", str(tmp_path),
                 "-c", str(MODULE_SOURCE), "-o", str(tmp_path / "shmstore_client.o")])


@pytest.mark.timeout(60)
def test_build_without_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FC", "no-such-fortran-compiler")
    built = load_build_module().build(str(tmp_path / "lib"), str(HEADER.parent),
                                      str(tmp_path / "mod"), str(tmp_path / "temp"))
    assert built is False
    assert "no Fortran compiler found" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_build_without_core_library(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if shutil.which("gfortran") is None:
        pytest.skip(NO_GFORTRAN)
    built = load_build_module().build(str(tmp_path / "lib"), str(HEADER.parent),
                                      str(tmp_path / "mod"), str(tmp_path / "temp"))
    assert built is False
    assert "libshmstore.so is missing" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_error_codes_match_header() -> None:
    header = HEADER.read_text()
    project_codes = header_constants(header.split("enum {", 1)[1].split("};", 1)[0])
    fortran = fortran_constants()

    # The Fortran name of each project code, keyed by its C name.
    names = {
        "SHMSTORE_ENOKEY": "SHMSTORE_KEY_NOT_FOUND",
        "SHMSTORE_ENOSTORE": "SHMSTORE_NO_STORE",
        "SHMSTORE_ELOST": "SHMSTORE_CONNECTION_LOST",
        "SHMSTORE_EABI": "SHMSTORE_ABI_MISMATCH",
        "SHMSTORE_EBUSY": "SHMSTORE_STORE_BUSY",
        "SHMSTORE_EMISMATCH": "SHMSTORE_TENSOR_MISMATCH",
        "SHMSTORE_EFULL": "SHMSTORE_TABLE_FULL",
        "SHMSTORE_EKEY": "SHMSTORE_INVALID_KEY",
        "SHMSTORE_EMODEL": "SHMSTORE_MODEL_FAILED",
        "SHMSTORE_EWORKER": "SHMSTORE_WORKER_DIED",
        "SHMSTORE_ENOWORKER": "SHMSTORE_NO_WORKER",
    }
    assert set(project_codes) == set(names), "a project code has no Fortran name"
    for c_name, fortran_name in names.items():
        assert fortran[fortran_name] == project_codes[c_name], fortran_name

    errno_codes = {
        "SHMSTORE_INTERRUPTED": errno.EINTR,
        "SHMSTORE_OUT_OF_MEMORY": errno.ENOMEM,
        "SHMSTORE_INVALID_ARGUMENT": errno.EINVAL,
        "SHMSTORE_NO_SPACE": errno.ENOSPC,
        "SHMSTORE_NOT_IMPLEMENTED": errno.ENOSYS,
        "SHMSTORE_TIMED_OUT": errno.ETIMEDOUT,
    }
    for fortran_name, number in errno_codes.items():
        assert fortran[fortran_name] == -number, fortran_name
    assert fortran["SHMSTORE_SUCCESS"] == 0


@pytest.mark.timeout(30)
def test_dtype_constants_match_header() -> None:
    header = HEADER.read_text()
    dtype_enum = header.split("typedef enum shmstore_dtype {", 1)[1].split("}", 1)[0]
    order_enum = header.split("typedef enum shmstore_order {", 1)[1].split("}", 1)[0]
    fortran = fortran_constants()

    for name, value in {**header_constants(dtype_enum), **header_constants(order_enum)}.items():
        assert fortran[name] == value, name
    ndim_max = re.search(r"#define SHMSTORE_NDIM_MAX (\d+)", header)
    assert ndim_max is not None
    assert fortran["SHMSTORE_NDIM_MAX"] == int(ndim_max.group(1))


# ---- programs against a live store ---------------------------------------------------


@pytest.mark.timeout(180)
def test_api_program(fortran_build: Dict[str, Path], store: str,
                     client: "Client") -> None:
    result = run_program(fortran_build["test_api"], store)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_api: all checks passed" in output

    missing = output_line(output, "missing unpack").lower()
    assert "not found" in missing
    assert "api_missing" in missing
    assert "not found" in output_line(output, "missing view").lower()
    assert "dims" in output_line(output, "wrong dims")
    assert "initialize" in output_line(output, "uninitialized")
    assert "api_big" in output_line(output, "out of memory")

    # What the program left in the store, read from Python.
    overwritten = client.get_tensor("api_key")
    np.testing.assert_array_equal(overwritten, -np.arange(1, 7, dtype=np.float64).reshape(
        (2, 3), order="F"))
    assert client.tensor_exists("api_padded")
    assert not client.tensor_exists("api_renamed")
    assert not client.tensor_exists("api_pinned")
    assert client.get_tensor("api_empty_columns").shape == (0, 3)


@pytest.mark.timeout(180)
def test_types_program(fortran_build: Dict[str, Path], store: str,
                       client: "Client") -> None:
    result = run_program(fortran_build["test_types"], store)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_types: all checks passed" in output

    dtypes = {"real32": np.float32, "real64": np.float64, "int8": np.int8,
              "int16": np.int16, "int32": np.int32, "int64": np.int64}
    extents = (2, 3, 4, 5)
    for type_name, dtype in dtypes.items():
        for rank in range(1, 5):
            key = f"types_{type_name}_rank{rank}"
            shape = extents[:rank]
            count = int(np.prod(shape))
            expected = (np.arange(count) % 100 - 50).astype(dtype).reshape(shape, order="F")

            stored = client.get_tensor(key)
            assert stored.dtype == dtype, key
            assert stored.shape == shape, key
            assert stored.flags.f_contiguous, key
            np.testing.assert_array_equal(stored, expected, err_msg=key)


@pytest.mark.timeout(180)
def test_layout_program(fortran_build: Dict[str, Path], store: str,
                        client: "Client") -> None:
    matrix = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float64)
    client.put_tensor("layout_py_c", matrix)
    client.put_tensor("layout_py_f", np.asfortranarray(matrix))

    result = run_program(fortran_build["test_layout"], store)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_layout: all checks passed" in output

    from_fortran = client.get_tensor("layout_fortran")
    assert from_fortran.shape == (2, 3)
    assert from_fortran.dtype == np.int64
    np.testing.assert_array_equal(from_fortran, [[1, 3, 5], [2, 4, 6]])

    section = client.get_tensor("layout_section")
    assert section.shape == (2, 2)
    np.testing.assert_array_equal(section, [[1, 7], [2, 8]])

    reversed_section = client.get_tensor("layout_reversed")
    assert reversed_section.shape == (3, 2)
    np.testing.assert_array_equal(reversed_section, [[6, 12], [5, 11], [4, 10]])

    rank3 = client.get_tensor("layout_rank3")
    b = np.arange(1, 25, dtype=np.int32).reshape((4, 3, 2), order="F")
    assert rank3.dtype == np.int32
    np.testing.assert_array_equal(rank3, b[1:4:2, 0:3:2, :])


@pytest.mark.timeout(180)
def test_lost_daemon_program(fortran_build: Dict[str, Path], daemon: DaemonProcess,
                             start_daemon: Callable[..., DaemonProcess]) -> None:
    environment = dict(os.environ, SHMSTORE_NAME=daemon.name)
    program = subprocess.Popen([str(fortran_build["test_lost"])], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=environment)
    try:
        assert read_line_with_timeout(program, 30) == "ready"
        daemon.kill()
        killed_at = time.monotonic()
        output, _ = program.communicate(timeout=30)
        waited = time.monotonic() - killed_at
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()

    # A new daemon under the same name removes the segments that the killed one left.
    start_daemon(name=daemon.name)

    assert program.returncode == 0, output
    assert "test_lost: all checks passed" in output
    poll_message = output_line(output, "poll")
    assert "died" in poll_message
    assert f"daemon pid {daemon.pid}" in poll_message
    assert waited < 10, f"the program needed {waited:.1f} s to notice the dead daemon"


def save_affine_model(path: Path) -> None:
    """Save a TorchScript model that computes y = x @ w + 0.5 for x of shape (N, 4), with
    w = arange(12).reshape(4, 3) / 10, as fortran/tests/test_model.f90 expects."""
    import torch

    weight = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(weight.T)
        model.bias.fill_(0.5)
    torch.jit.script(model).save(str(path))


@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_model_program(fortran_build: Dict[str, Path], start_daemon: Callable[..., DaemonProcess],
                       tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="inference needs torch (pip install torch==2.13.0)")
    from shmstore.client import Client

    model_path = tmp_path / "affine.pt"
    save_affine_model(model_path)
    daemon = start_daemon(args=["--workers", "1"])

    with Client(daemon.name) as python_client:
        deadline = time.monotonic() + 60
        while not any(worker["state"] == "ready"
                      for worker in python_client.get_inference_workers()):
            assert time.monotonic() < deadline, "no inference worker ready within 60 s"
            time.sleep(0.05)

        environment = dict(os.environ, SHMSTORE_NAME=daemon.name)
        result = subprocess.run([str(fortran_build["test_model"]), str(model_path)],
                                capture_output=True, text=True, env=environment, timeout=120,
                                check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "test_model: all checks passed" in output
        assert "not found" in output_line(output, "absent model")

        x = np.arange(1, 9, dtype=np.float32).reshape((2, 4), order="F") / 4
        weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
        expected = x @ weight + 0.5
        stored = python_client.get_tensor("model_out")
        assert stored.shape == (2, 3)
        np.testing.assert_allclose(stored, expected, rtol=1e-5)


@pytest.mark.timeout(180)
def test_example_makefile(fortran_build: Dict[str, Path], store: str,
                          client: "Client", tmp_path: Path) -> None:
    example_dir = tmp_path / "example"
    shutil.copytree(FORTRAN_DIR / "examples", example_dir)
    lib_dir = fortran_build["lib"]
    run_checked(["make", "-C", str(example_dir),
                 f"SHMSTORE_FFLAGS=-I{fortran_build['mod']}",
                 f"SHMSTORE_LIBS=-L{lib_dir} -Wl,-rpath,{lib_dir} -lshmstore_fortran -lshmstore"])

    result = run_program(example_dir / "heat_exchange", store)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "stored temperature_3, peak temperature   310.00" in output
    assert "not found" in output_line(output, "reading a missing key").lower()
    assert client.get_tensor("temperature_3").max() == 310.0


@pytest.mark.timeout(180)
def test_example_installed_module(store: str, tmp_path: Path) -> None:
    import shmstore
    from shmstore import config

    try:
        config.fflags()
    except config.BuildMissingError as error:
        pytest.skip(f"the installed package has no Fortran module: {error}")

    # The Makefile runs `shmstore config`; this wrapper makes it use this interpreter.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "shmstore"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m shmstore "$@"\n')
    wrapper.chmod(0o755)

    example_dir = tmp_path / "example"
    shutil.copytree(FORTRAN_DIR / "examples", example_dir)
    package_parent = str(Path(shmstore.__file__).resolve().parent.parent)
    environment = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
                       PYTHONPATH=package_parent)
    run_checked(["make", "-C", str(example_dir)], env=environment)

    result = run_program(example_dir / "heat_exchange", store)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "stored temperature_3" in output


@pytest.mark.timeout(180)
def test_example_without_store(fortran_build: Dict[str, Path], tmp_path: Path) -> None:
    example_dir = tmp_path / "example"
    shutil.copytree(FORTRAN_DIR / "examples", example_dir)
    lib_dir = fortran_build["lib"]
    run_checked(["make", "-C", str(example_dir),
                 f"SHMSTORE_FFLAGS=-I{fortran_build['mod']}",
                 f"SHMSTORE_LIBS=-L{lib_dir} -Wl,-rpath,{lib_dir} -lshmstore_fortran -lshmstore"])

    result = run_program(example_dir / "heat_exchange", f"absent-{os.getpid()}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "cannot attach to the store" in output
