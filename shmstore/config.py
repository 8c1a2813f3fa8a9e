"""Compiler and linker flags for C and Fortran programs that use libshmstore (`shmstore config`)."""

from __future__ import annotations

import os
from typing import List

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIR = os.path.join(PACKAGE_DIR, "include")
LIB_DIR = os.path.join(PACKAGE_DIR, "lib")
FORTRAN_DIR = os.path.join(PACKAGE_DIR, "fortran")
FORTRAN_LIBRARY = "libshmstore_fortran.so"


class BuildMissingError(RuntimeError):
    """A file that `pip install` should have built is missing."""


def _require(path: str) -> None:
    if not os.path.exists(path):
        raise BuildMissingError(
            f"{path} is missing; reinstall shmstore with `pip install .` (or `pip install -e .` "
            "in a source checkout) to build it")


def fortran_library_dir() -> str:
    """Return the folder that contains libshmstore_fortran.so, or "" when it was not built."""
    for folder in (LIB_DIR, FORTRAN_DIR):
        if os.path.isfile(os.path.join(folder, FORTRAN_LIBRARY)):
            return folder
    return ""


def cflags() -> List[str]:
    """Return the C compiler flags: the folder of shmstore.h."""
    _require(os.path.join(INCLUDE_DIR, "shmstore.h"))
    return [f"-I{INCLUDE_DIR}"]


def libs() -> List[str]:
    """Return the linker flags for libshmstore.so, and the Fortran library first when built."""
    _require(os.path.join(LIB_DIR, "libshmstore.so"))

    flags: List[str] = []
    fortran_dir = fortran_library_dir()
    if fortran_dir and fortran_dir != LIB_DIR:
        flags += [f"-L{fortran_dir}", f"-Wl,-rpath,{fortran_dir}"]
    flags += [f"-L{LIB_DIR}", f"-Wl,-rpath,{LIB_DIR}"]
    if fortran_dir:
        flags.append("-lshmstore_fortran")
    flags.append("-lshmstore")
    return flags


def fflags() -> List[str]:
    """Return the Fortran compiler flags: the folder of the module files."""
    if not fortran_library_dir():
        raise BuildMissingError(
            f"the Fortran module of shmstore was not built (no {FORTRAN_LIBRARY}); install "
            "gfortran and reinstall shmstore")
    return [f"-I{FORTRAN_DIR}"]
