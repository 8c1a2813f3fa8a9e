"""Compile bench/c/bench_store.c against the installed shmstore and run it."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from typing import Any

from bench.store_daemon import shmstore_command

log = logging.getLogger("bench.c")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "bench_store.c")


class CBenchError(RuntimeError):
    """The C benchmark could not be compiled or failed while running."""


def config_flags(option: str) -> list[str]:
    """Return the flags that `shmstore config OPTION` prints, split like a shell would."""
    command = shmstore_command() + ["config", option]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise CBenchError(f"`{shlex.join(command)}` failed with exit code "
                          f"{result.returncode}: {result.stderr.strip()}")
    return shlex.split(result.stdout)


def compile_program(directory: str, source: str = SOURCE) -> str:
    """Compile source (default bench_store.c) with gcc -O2 against libshmstore into
    directory and return the executable's path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise CBenchError("gcc not found on PATH; install it with `apt-get install -y gcc`")

    name = os.path.splitext(os.path.basename(source))[0]
    executable = os.path.join(directory, name)
    command = ([gcc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]
               + config_flags("--cflags") + [source, "-o", executable]
               + config_flags("--libs"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise CBenchError(f"compiling {source} failed:\n{shlex.join(command)}\n"
                          f"{result.stderr}")
    return executable


def run_c_bench(store_name: str, repetitions: dict[int, int],
                timeout_s: float = 300) -> dict[int, dict[str, Any]]:
    """Compile and run the C benchmark against a running store.

    repetitions maps a tensor size in bytes to how many calls to time. Returns, per size,
    the timings of "memcpy", "put", "get" and "put_get" as bench_store.c prints them.
    """
    with tempfile.TemporaryDirectory(prefix="shmstore-bench-c-") as directory:
        executable = compile_program(directory)
        command = [executable, store_name]
        for nbytes, count in repetitions.items():
            command += [str(nbytes), str(count)]

        log.info("running %s", shlex.join(command))
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)

    if result.returncode != 0:
        raise CBenchError(f"bench_store failed with exit code {result.returncode}: "
                          f"{result.stderr.strip()}")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise CBenchError(f"bench_store printed invalid JSON ({error}): "
                          f"{result.stdout!r}") from error

    return {entry["bytes"]: entry for entry in report["sizes"]}
