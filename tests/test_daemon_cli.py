"""`shmstore status`, `shmstore config`, size parsing and wait_for_store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import shmstore
from shmstore import config
from shmstore.sizes import format_size, parse_size
from conftest import unique_store_name


def shmstore_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shmstore", *args], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.timeout(60)
def test_status_output(daemon):
    with shmstore.Client(daemon.name) as client:
        client.put_tensor("a", np.zeros(1 << 20, dtype=np.uint8))
        client.put_tensor("b", np.zeros(10))

        result = shmstore_command("status", "--name", daemon.name)

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"store:   {daemon.name} (daemon pid {daemon.pid}, up ")
        assert re.match(r"memory:  1\.\d MiB used of 64\.0 MiB \(\d+\.\d%\), \d+\.\d MiB free",
                        lines[1]), lines[1]
        assert lines[2] == "keys:    2 of at most 65536"
        assert lines[3].startswith("clients: 1 of at most 256 (pids: ")
        assert str(os.getpid()) in lines[3]


@pytest.mark.timeout(60)
def test_status_without_store():
    name = unique_store_name()

    result = shmstore_command("status", "--name", name)

    assert result.returncode == 1
    assert name in result.stderr
    assert f"shmstore serve --name {name}" in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_config_flags():
    package_dir = os.path.dirname(shmstore.__file__)

    cflags = shmstore_command("config", "--cflags")
    libs = shmstore_command("config", "--libs")

    assert cflags.returncode == 0, cflags.stderr
    assert cflags.stdout.split() == [f"-I{package_dir}/include"]
    assert libs.returncode == 0, libs.stderr
    words = libs.stdout.split()
    assert f"-L{package_dir}/lib" in words
    assert f"-Wl,-rpath,{package_dir}/lib" in words
    assert words[-1] == "-lshmstore"
    assert os.path.isfile(os.path.join(package_dir, "include", "shmstore.h"))
    assert os.path.isfile(os.path.join(package_dir, "lib", "libshmstore.so"))


@pytest.mark.timeout(60)
def test_config_fortran_flags():
    package_dir = os.path.dirname(shmstore.__file__)
    fortran_library = config.fortran_library_dir()

    fflags = shmstore_command("config", "--fflags")
    libs = shmstore_command("config", "--libs")

    if not fortran_library:
        assert fflags.returncode == 1
        assert "gfortran" in fflags.stderr
        pytest.skip("the Fortran module was not built (no gfortran at install time)")
    assert fflags.returncode == 0, fflags.stderr
    assert fflags.stdout.split() == [f"-I{package_dir}/fortran"]
    words = libs.stdout.split()
    assert words.index("-lshmstore_fortran") < words.index("-lshmstore")


@pytest.mark.timeout(60)
def test_config_needs_option():
    result = shmstore_command("config")

    assert result.returncode == 2
    assert "--cflags" in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arguments", [["serve", "--memory", "1M"], ["status"]])
def test_empty_name_rejected(arguments):
    result = shmstore_command(*arguments, "--name", "")

    assert result.returncode == 2
    assert "store name is empty" in result.stderr
    assert "ready" not in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text, expected", [
    ("512M", 512 << 20), ("4G", 4 << 30), ("1.5G", 3 << 29), ("4096", 4096),
    ("64K", 64 << 10), ("2GiB", 2 << 30), ("1t", 1 << 40), (" 8M ", 8 << 20),
])
def test_parse_size_valid(text, expected):
    assert parse_size(text) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", ["", "M", "lots", "-1", "0", "1.5X", "1e9", "0.1"])
def test_parse_size_invalid(text):
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert repr(text) in str(caught.value)


@pytest.mark.timeout(30)
def test_format_size_units():
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(64 << 20) == "64.0 MiB"
    assert format_size(3 << 29) == "1.5 GiB"
    assert format_size(2 << 40) == "2.0 TiB"


@pytest.mark.timeout(60)
def test_wait_for_store_ready(start_daemon):
    name = unique_store_name()
    daemon = start_daemon(name=name, wait=False)

    stats = shmstore.wait_for_store(name, timeout_s=20)

    assert stats["daemon_pid"] == daemon.pid
    daemon.wait_ready()


@pytest.mark.timeout(60)
def test_wait_for_store_timeout():
    name = unique_store_name()

    started = time.monotonic()
    with pytest.raises(shmstore.ShmstoreTimeoutError) as caught:
        shmstore.wait_for_store(name, timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 3
    assert isinstance(caught.value, TimeoutError)
    assert name in str(caught.value)
