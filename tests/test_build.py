"""The build: C programs link with `shmstore config` flags, and the wheel installs no top-level
name other than shmstore. (tests/test_c_units.py compiles the core with -Werror.)"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import shmstore

ROOT = Path(__file__).resolve().parent.parent

# Puts a 3x4 float64 tensor "from_c", reads "from_python" zero-copy and prints its sum.
C_PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include <shmstore.h>

static int report(const char *what, int code)
{
    fprintf(stderr, "%s failed: %s (%s)\n", what, shmstore_strerror(code),
            shmstore_error_detail());
    return 1;
}

int main(int argc, char **argv)
{
    shmstore_client_t *client = NULL;
    int rc = shmstore_connect(argc > 1 ? argv[1] : NULL, &client);
    if (rc < 0)
        return report("connect", rc);

    double values[12];
    for (int i = 0; i < 12; i++)
        values[i] = 0.5 * i;
    int64_t dims[2] = {3, 4};
    rc = shmstore_put(client, "from_c", values, SHMSTORE_FLOAT64, 2, dims, SHMSTORE_ORDER_C);
    if (rc < 0)
        return report("put", rc);

    shmstore_view_t view;
    rc = shmstore_get(client, "from_python", &view);
    if (rc < 0)
        return report("get", rc);
    const int32_t *data = view.data;
    int64_t sum = 0;
    for (size_t i = 0; i < view.nbytes / sizeof(int32_t); i++)
        sum += data[i];
    printf("dtype=%d ndim=%d dims=%lld,%lld sum=%lld\n", (int)view.dtype, view.ndim,
           (long long)view.dims[0], (long long)view.dims[1], (long long)sum);
    shmstore_release(&view);

    rc = shmstore_get(client, "absent", &view);
    printf("absent=%d\n", rc == SHMSTORE_ENOKEY);

    return shmstore_disconnect(client) < 0;
}
"""


def config_flags(option: str) -> list:
    result = subprocess.run([sys.executable, "-m", "shmstore", "config", option],
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.split()


@pytest.mark.timeout(120)
def test_c_program_links_and_runs(tmp_path, store):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    source = tmp_path / "program.c"
    source.write_text(C_PROGRAM)
    executable = tmp_path / "program"

    compile_command = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror",
                       *config_flags("--cflags"), str(source), "-o", str(executable),
                       *config_flags("--libs")]
    compiled = subprocess.run(compile_command, capture_output=True, text=True, timeout=60)
    assert compiled.returncode == 0, compiled.stderr

    with shmstore.Client(store) as client:
        client.put_tensor("from_python", np.arange(20, dtype=np.int32).reshape(4, 5))

        # No LD_LIBRARY_PATH: the rpath of --libs must find libshmstore.so.
        environment = {key: value for key, value in os.environ.items()
                       if key != "LD_LIBRARY_PATH"}
        ran = subprocess.run([str(executable), store], capture_output=True, text=True,
                             timeout=30, env=environment)

        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines() == ["dtype=7 ndim=2 dims=4,5 sum=190", "absent=1"]
        from_c = client.get_tensor("from_c")
        assert from_c.dtype == np.float64
        assert np.array_equal(from_c, 0.5 * np.arange(12).reshape(3, 4))


def copy_source_tree(destination: Path) -> None:
    """Copy the project sources, without build outputs, to destination."""
    ignored = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                     "*.so", "*.o", "*.mod", ".pytest_cache", ".benchmarks",
                                     "out", ".venv")
    shutil.copytree(ROOT, destination, ignore=ignored)
    for generated in glob.glob(str(destination / "cython" / "*.c")):
        os.remove(generated)


@pytest.mark.timeout(600)
def test_wheel_top_level_names(tmp_path):
    pytest.importorskip("Cython", reason="building a wheel needs Cython (pip install Cython)")
    source = tmp_path / "source"
    copy_source_tree(source)
    wheel_dir = tmp_path / "wheels"

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheel_dir), str(source)],
        capture_output=True, text=True, timeout=540)
    assert built.returncode == 0, built.stderr[-4000:]

    wheels = list(wheel_dir.glob("shmstore-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()

    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(
        (".dist-info", ".data"))}
    assert top_level == {"shmstore"}
    assert "shmstore/lib/libshmstore.so" in names
    assert "shmstore/include/shmstore.h" in names
    assert any(name.startswith("shmstore/_core.") and name.endswith(".so") for name in names)
    if (ROOT / "launcher" / "__init__.py").is_file():
        assert "shmstore/launcher/__init__.py" in names
    assert not any(name.startswith(("launcher/", "bench/", "tests/")) for name in names)
