"""Build the Fortran client module of shmstore into libshmstore_fortran.so.

setup.py calls build() after it has built libshmstore.so. The function can also be run
by hand:

    python3 fortran/build_fortran.py LIB_DIR INCLUDE_DIR MOD_DIR BUILD_TEMP
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

FORTRAN_DIR = Path(__file__).resolve().parent
MODULE_SOURCE = FORTRAN_DIR / "shmstore_client.f90"
LIBRARY_NAME = "libshmstore_fortran.so"

# -std=f2008 rejects compiler extensions. Every feature the module uses (is_contiguous,
# c_loc of a contiguous assumed-shape array, allocate with mold=) is Fortran 2008, so
# neither -fall-intrinsics nor a later standard is needed.
FORTRAN_FLAGS = ["-O2", "-fPIC", "-std=f2008"]


def find_compiler() -> str:
    """Return the Fortran compiler to use: $FC if set, else gfortran ('' if missing).

    NOTE: the flags (-std=f2008, -J) are gfortran's, so a compiler named by $FC must be
    gfortran or a wrapper around it such as mpif90 of Open MPI; others are untested.
    """
    requested = os.environ.get("FC", "")
    if requested:
        return shutil.which(requested) or ""
    return shutil.which("gfortran") or ""


def run(command: List[str]) -> bool:
    """Run a build command, print it and its output, and return whether it succeeded."""
    print("build_fortran:", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.stdout:
        print(result.stdout, end="")
    if result.stderr:
        print(result.stderr, end="", file=sys.stderr)
    if result.returncode != 0:
        print(f"build_fortran: command failed with exit code {result.returncode}",
              file=sys.stderr)
        return False
    return True


def build(lib_dir: str, include_dir: str, mod_dir: str, build_temp: str) -> bool:
    """Compile the Fortran client module and link libshmstore_fortran.so.

    The library goes to lib_dir, linked against lib_dir/libshmstore.so with rpath
    $ORIGIN so that it finds it after installation. The module file
    shmstore_client.mod goes to mod_dir and the object file to build_temp.
    include_dir is accepted for symmetry with the C build; the Fortran module
    declares its C interfaces itself and reads no header.

    Returns False, after printing why, when no Fortran compiler is found, when
    libshmstore.so is missing or when compiling or linking fails.
    """
    del include_dir

    compiler = find_compiler()
    if not compiler:
        print("build_fortran: no Fortran compiler found (gfortran, or the one named by $FC); "
              "skipping the Fortran client module. Install gfortran "
              "(apt-get install gfortran) and reinstall shmstore to build it.",
              file=sys.stderr)
        return False

    lib_path = Path(lib_dir)
    core_library = lib_path / "libshmstore.so"
    if not core_library.is_file():
        print(f"build_fortran: {core_library} is missing; build libshmstore.so first",
              file=sys.stderr)
        return False

    temp_path = Path(build_temp)
    mod_path = Path(mod_dir)
    temp_path.mkdir(parents=True, exist_ok=True)
    mod_path.mkdir(parents=True, exist_ok=True)
    lib_path.mkdir(parents=True, exist_ok=True)

    object_file = temp_path / "shmstore_client.o"
    compile_command = [compiler, *FORTRAN_FLAGS, "-J", str(mod_path),
                       "-c", str(MODULE_SOURCE), "-o", str(object_file)]
    if not run(compile_command):
        return False

    library = lib_path / LIBRARY_NAME
    link_command = [compiler, "-shared", str(object_file), "-o", str(library),
                    "-L", str(lib_path), "-lshmstore", "-Wl,-rpath,$ORIGIN"]
    if not run(link_command):
        return False

    print(f"build_fortran: built {library} and {mod_path / 'shmstore_client.mod'}")
    return True


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if build(*sys.argv[1:5]) else 1


if __name__ == "__main__":
    sys.exit(main())
