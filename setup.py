"""Build the shmstore C core, its Cython extension and libshmstore.so.

One `pip install .` (or `pip install -e .`) runs the steps below, in order:

1. compile every csrc/*.c once into position-independent objects (C11, -O2, -pthread);
2. link those objects into shmstore/lib/libshmstore.so and copy the public header to
   shmstore/include/shmstore.h, for C and Fortran programs (`shmstore config --libs`);
3. call the Fortran build hook (fortran/build_fortran.py) when that file exists;
4. cythonize cython/_core.pyx (and every other cython/*.pyx) and link each with the same
   objects into the extension `shmstore._core` (`shmstore.<stem>`), so that Python needs no
   shared library at run time.

For a regular install the outputs go into the build tree and from there into the wheel. For an
editable install (`pip install -e .`, or `setup.py build_ext --inplace`) they go into the
source tree, next to the Python sources.

Environment:
  SHMSTORE_WERROR=1   add -Werror to the flags of csrc/*.c (CI sets it; -Wall -Wextra are
                      always on).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

from Cython.Build import cythonize

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC_DIR = "csrc"
PUBLIC_HEADER = os.path.join(CSRC_DIR, "include", "shmstore.h")
FORTRAN_HOOK = os.path.join("fortran", "build_fortran.py")

C_FLAGS = ["-std=c11", "-O2", "-pthread", "-fPIC", "-Wall", "-Wextra"]
LINK_FLAGS = ["-pthread"]
LINK_LIBRARIES = ["rt"]


def c_sources() -> list[str]:
    """List every C source of the core, relative to the project root, in a stable order."""
    return sorted(glob.glob(os.path.join(CSRC_DIR, "*.c")))


def c_headers() -> list[str]:
    return sorted(glob.glob(os.path.join(CSRC_DIR, "**", "*.h"), recursive=True))


def c_flags() -> list[str]:
    flags = list(C_FLAGS)
    if os.environ.get("SHMSTORE_WERROR") == "1":
        flags.append("-Werror")
    return flags


def python_packages() -> tuple[list[str], dict[str, str]]:
    """Return the packages to install and the package_dir mapping.

    The only installed top-level name is `shmstore`. The folder launcher/ is installed as
    `shmstore.launcher`, never as a bare `launcher`.
    """
    packages = ["shmstore"]
    package_dir = {"shmstore": "shmstore"}

    if os.path.isfile(os.path.join(ROOT, "launcher", "__init__.py")):
        package_dir["shmstore.launcher"] = "launcher"
        for dirpath, _dirnames, filenames in os.walk(os.path.join(ROOT, "launcher")):
            if "__init__.py" not in filenames:
                continue
            relative = os.path.relpath(dirpath, ROOT)
            parts = relative.split(os.sep)[1:]
            packages.append(".".join(["shmstore", "launcher", *parts]))

    for dirpath, _dirnames, filenames in os.walk(os.path.join(ROOT, "shmstore")):
        relative = os.path.relpath(dirpath, ROOT)
        if relative == "shmstore" or "__init__.py" not in filenames:
            continue
        packages.append(relative.replace(os.sep, "."))

    return sorted(set(packages)), package_dir


class BuildCoreAndExtension(build_ext):
    """Build the C core once, link libshmstore.so from it, then the Cython extension."""

    def run(self) -> None:
        # setuptools sets inplace for editable installs and clears it while it builds, so
        # remember it here. The outputs then belong in the source tree, where the editable
        # finder imports `shmstore` from.
        self.outputs_in_source_tree = bool(self.inplace)
        super().run()

    def build_extensions(self) -> None:
        # self.compiler exists from here on; run() creates it.
        if getattr(self, "outputs_in_source_tree", False):
            package_out = os.path.join(ROOT, "shmstore")
        else:
            package_out = os.path.join(os.path.abspath(self.build_lib), "shmstore")

        objects = self.compile_core()
        lib_dir = self.link_library(objects, package_out)
        include_dir = self.copy_header(package_out)
        self.run_fortran_hook(lib_dir, include_dir, package_out)

        for extension in self.extensions:
            extension.extra_objects = list(objects)
            # Relink the extension when a core object changed, not only its own source.
            extension.depends = list(extension.depends) + list(objects)

        super().build_extensions()

    def compile_core(self) -> list[str]:
        sources = c_sources()
        if not sources:
            raise RuntimeError(f"no C sources found in {os.path.join(ROOT, CSRC_DIR)}")

        object_dir = os.path.join(self.build_temp, "core")
        return self.compiler.compile(
            sources,
            output_dir=object_dir,
            include_dirs=[os.path.join(CSRC_DIR, "include"), CSRC_DIR],
            extra_postargs=c_flags(),
            # A changed header must rebuild every object, not only changed sources.
            depends=c_headers(),
        )

    def link_library(self, objects: list[str], package_out: str) -> str:
        lib_dir = os.path.join(package_out, "lib")
        os.makedirs(lib_dir, exist_ok=True)

        self.compiler.link_shared_object(
            objects,
            "libshmstore.so",
            output_dir=lib_dir,
            libraries=LINK_LIBRARIES,
            extra_postargs=LINK_FLAGS + ["-Wl,-soname,libshmstore.so"],
        )
        return lib_dir

    def copy_header(self, package_out: str) -> str:
        include_dir = os.path.join(package_out, "include")
        os.makedirs(include_dir, exist_ok=True)
        shutil.copy2(PUBLIC_HEADER, os.path.join(include_dir, "shmstore.h"))
        return include_dir

    # ---- Fortran build hook -------------------------------------------------------------
    # fortran/build_fortran.py exposes
    #     build(lib_dir: str, include_dir: str, mod_dir: str, build_temp: str) -> bool
    # It compiles the Fortran module against libshmstore.so when gfortran is found, writes the
    # module files into mod_dir (shmstore/fortran/) and libshmstore_fortran.so into lib_dir.
    # Without gfortran it prints why and returns False; the Python install goes on without
    # Fortran.
    def run_fortran_hook(self, lib_dir: str, include_dir: str, package_out: str) -> None:
        hook_path = os.path.join(ROOT, FORTRAN_HOOK)
        if not os.path.isfile(hook_path):
            print(f"shmstore: {FORTRAN_HOOK} not found, skipping the Fortran module")
            return

        spec = importlib.util.spec_from_file_location("shmstore_build_fortran", hook_path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load the Fortran build hook {hook_path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        mod_dir = os.path.join(package_out, "fortran")
        os.makedirs(mod_dir, exist_ok=True)
        fortran_temp = os.path.abspath(os.path.join(self.build_temp, "fortran"))
        os.makedirs(fortran_temp, exist_ok=True)

        built = module.build(lib_dir, include_dir, mod_dir, fortran_temp)
        if built:
            print(f"shmstore: Fortran module built into {mod_dir}")
        else:
            print("shmstore: Fortran module not built; C and Python parts are unaffected")


def extensions() -> list[Extension]:
    """Return one extension shmstore.<stem> per cython/<stem>.pyx, each linked with the core.

    Each extension gets its own copy of the core objects (Python loads extensions with
    RTLD_LOCAL, so the copies do not clash), so that no extension needs libshmstore.so at run
    time.
    """
    modules = []
    for source in sorted(glob.glob(os.path.join("cython", "*.pyx"))):
        stem = os.path.splitext(os.path.basename(source))[0]
        modules.append(Extension(
            f"shmstore.{stem}",
            sources=[source],
            include_dirs=[os.path.join(CSRC_DIR, "include"), CSRC_DIR],
            extra_compile_args=["-O2", "-pthread"],
            extra_link_args=LINK_FLAGS,
            libraries=LINK_LIBRARIES,
        ))
    return cythonize(
        modules,
        include_path=["cython"],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )


PACKAGES, PACKAGE_DIR = python_packages()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildCoreAndExtension},
    zip_safe=False,
)
