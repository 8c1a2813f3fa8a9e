"""Compile and run the C test programs in tests/c against the C core.

Each ``tests/c/test_*.c`` is a standalone program (exit 0 pass, 77 skip, anything else
fail). It is linked with every ``csrc/*.c`` in three flavours: plain (-O2),
AddressSanitizer with UndefinedBehaviorSanitizer, and ThreadSanitizer. The C core is
compiled once per flavour and session into a static library in a temporary directory;
nothing is built inside the source tree.

A program must leave behind no process of its process group and no
``/dev/shm/shmstore-*`` segment whose name contains its pid.
"""

from __future__ import annotations

import glob
import logging
import os
import platform
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CSRC = REPO / "csrc"
C_TESTS = REPO / "tests" / "c"

CC = os.environ.get("CC", "gcc")
BASE_FLAGS = [
    "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
    f"-I{CSRC}", f"-I{CSRC / 'include'}", "-pthread",
]
LINK_LIBS = ["-lm"]

EXIT_SKIP = 77
RUN_TIMEOUT_S = 120
COMPILE_TIMEOUT_S = 120


@dataclass(frozen=True)
class Flavour:
    """A set of compiler flags and the environment its programs run with."""

    name: str
    flags: tuple[str, ...]
    env: tuple[tuple[str, str], ...]


FLAVOURS = [
    Flavour("plain", ("-O2",), ()),
    Flavour(
        "asan",
        ("-fsanitize=address,undefined", "-fno-omit-frame-pointer"),
        (("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),),
    ),
    Flavour(
        "tsan",
        ("-fsanitize=thread",),
        (("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1"),),
    ),
]


def _compile(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CC, *args], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
    )


def _first_line(text: str, fallback: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else fallback


def _last_line(text: str, fallback: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else fallback


@dataclass
class Toolchain:
    """The C core built in one flavour, or why that flavour cannot run."""

    flavour: Flavour
    library: Optional[Path] = None
    run_prefix: tuple[str, ...] = ()
    skip_reason: Optional[str] = None
    compile_errors: dict[str, str] = field(default_factory=dict)  # source name -> stderr
    build_error: Optional[str] = None


class CoreBuilder:
    """Build the C core once per flavour, on first use, into a temporary directory.

    Every csrc/*.c that compiles goes into one static library, so a test program
    links only the objects it needs.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._chains: dict[str, Toolchain] = {}

    def get(self, flavour: Flavour) -> Toolchain:
        if flavour.name not in self._chains:
            build_dir = self._tmp_path_factory.mktemp(f"c-{flavour.name}")
            self._chains[flavour.name] = self._build(flavour, build_dir)
        return self._chains[flavour.name]

    def _build(self, flavour: Flavour, build_dir: Path) -> Toolchain:
        chain = Toolchain(flavour)
        chain.skip_reason, chain.run_prefix = self._probe(flavour, build_dir)
        if chain.skip_reason is not None:
            logger.warning("skipping the %s flavour: %s", flavour.name, chain.skip_reason)
            return chain

        sources = sorted(CSRC.glob("*.c"))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda source: self._compile_object(
                flavour, source, build_dir), sources))
        # A source that does not compile fails test_c_core_compiles; the others
        # still form the library, so that programs that do not need it can run.
        objects = []
        for source, result in zip(sources, results):
            if result.returncode == 0:
                objects.append(str(build_dir / (source.stem + ".o")))
            else:
                chain.compile_errors[source.name] = result.stderr
                logger.error("compiling csrc/%s (%s) failed", source.name, flavour.name)

        if objects:
            library = build_dir / "libshmstore_core.a"
            archive = subprocess.run(
                ["ar", "rcs", str(library), *objects], capture_output=True, text=True,
                check=False,
            )
            if archive.returncode != 0:
                chain.build_error = f"ar failed for the {flavour.name} core: {archive.stderr}"
                return chain
            chain.library = library
        logger.info("built the %s core from %d sources", flavour.name, len(sources))
        return chain

    @staticmethod
    def _compile_object(flavour: Flavour, source: Path,
                        build_dir: Path) -> subprocess.CompletedProcess[str]:
        obj = build_dir / (source.stem + ".o")
        return _compile([*BASE_FLAGS, *flavour.flags, "-c", str(source), "-o", str(obj)])

    @staticmethod
    def _probe(flavour: Flavour, build_dir: Path) -> tuple[Optional[str], tuple[str, ...]]:
        """Build and run an empty program in the flavour.

        Returns (skip reason or None, command prefix that its programs need).
        """
        source = build_dir / "probe.c"
        source.write_text("int main(void) { return 0; }\n")
        binary = build_dir / "probe"
        result = _compile([*flavour.flags, str(source), "-o", str(binary)])
        if result.returncode != 0:
            reason = _first_line(result.stderr, "no compiler output")
            return f"{CC} cannot build with {' '.join(flavour.flags)}: {reason}", ()

        run = subprocess.run(
            [str(binary)], capture_output=True, text=True, timeout=60, check=False
        )
        if run.returncode == 0:
            return None, ()

        # ThreadSanitizer aborts with "unexpected memory mapping" on kernels whose
        # mmap layout (high ASLR entropy) clashes with its shadow memory. Turning
        # address randomisation off with `setarch -R` avoids that.
        setarch = shutil.which("setarch")
        if "unexpected memory mapping" in run.stderr and setarch is not None:
            prefix = (setarch, platform.machine(), "-R")
            retry = subprocess.run(
                [*prefix, str(binary)], capture_output=True, text=True, timeout=60, check=False
            )
            if retry.returncode == 0:
                logger.info("%s programs run under %s", flavour.name, " ".join(prefix))
                return None, prefix

        reason = _first_line(run.stderr, f"exit status {run.returncode}")
        return f"the {flavour.name} runtime does not work here: {reason}", ()


@pytest.fixture(scope="session")
def core_builder(tmp_path_factory: pytest.TempPathFactory) -> CoreBuilder:
    if shutil.which(CC) is None:
        pytest.skip(f"C compiler {CC!r} not found; install gcc or set CC")
    return CoreBuilder(tmp_path_factory)


def _test_programs() -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(C_TESTS / "test_*.c")))


def _segments_of(pid: int) -> list[str]:
    """Return the store segments whose name contains pid."""
    return [
        path for path in glob.glob("/dev/shm/shmstore-*") if str(pid) in os.path.basename(path)
    ]


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_program(command: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Run a test program in its own process group.

    Returns (exit status, combined output, pid). On timeout the whole group is
    killed and the test fails.
    """
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{command[-1]} timed out after {RUN_TIMEOUT_S} s; output:\n{output}")
    return process.returncode, output, process.pid


def _compile_errors_text(chain: Toolchain) -> str:
    return "\n".join(
        f"csrc/{name} ({chain.flavour.name}):\n{stderr}"
        for name, stderr in sorted(chain.compile_errors.items())
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.name for f in FLAVOURS])
def test_c_core_compiles(flavour: Flavour, core_builder: CoreBuilder) -> None:
    chain = core_builder.get(flavour)
    if chain.skip_reason is not None:
        pytest.skip(chain.skip_reason)
    assert chain.build_error is None, chain.build_error
    if chain.compile_errors:
        pytest.fail("compile errors:\n" + _compile_errors_text(chain), pytrace=False)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.name for f in FLAVOURS])
@pytest.mark.parametrize("source", _test_programs(), ids=lambda p: p.stem[len("test_"):])
def test_c_program(source: Path, flavour: Flavour, core_builder: CoreBuilder,
                   tmp_path: Path) -> None:
    chain = core_builder.get(flavour)
    if chain.skip_reason is not None:
        pytest.skip(chain.skip_reason)
    if chain.build_error is not None:
        pytest.fail(chain.build_error)

    binary = tmp_path / source.stem
    link = [str(chain.library)] if chain.library is not None else []
    result = _compile([
        *BASE_FLAGS, *flavour.flags, str(source), *link, *LINK_LIBS, "-o", str(binary),
    ])
    if result.returncode != 0:
        message = f"compiling {source.name} ({flavour.name}) failed:\n{result.stderr}"
        if chain.compile_errors:
            message += "\nthese core sources did not compile:\n" + _compile_errors_text(chain)
        pytest.fail(message, pytrace=False)

    env = dict(os.environ)
    env.update(flavour.env)
    seed = env.setdefault("SHMSTORE_TEST_SEED", str(int.from_bytes(os.urandom(4), "little")))
    logger.info("running %s (%s) with SHMSTORE_TEST_SEED=%s", source.stem, flavour.name, seed)

    status, output, pid = _run_program([*chain.run_prefix, str(binary)], env)

    leftover_processes = _process_group_alive(pid)
    if leftover_processes:
        os.killpg(pid, signal.SIGKILL)
    leftover_segments = _segments_of(pid)
    for path in leftover_segments:
        os.unlink(path)

    if status == EXIT_SKIP:
        # The program's last output line states why it skipped.
        pytest.skip(_last_line(output, f"{source.stem} exited with {EXIT_SKIP}"))
    if status != 0:
        pytest.fail(f"{source.stem} ({flavour.name}) exited with {status}:\n{output}",
                    pytrace=False)
    assert not leftover_processes, f"{source.stem} left processes in group {pid}"
    assert not leftover_segments, f"{source.stem} left segments: {leftover_segments}"
