"""The co-located ML-EKE ocean demo: Fortran ranks, a store with inference workers, an analysis.

`python -m shmstore.demo` builds the Fortran ocean proxy against the installed module. Unless
--model names a TorchScript file, it also builds the project's own EKE-like model. Then it runs
everything through `shmstore launch`: the daemon with its inference workers, the model stored
before the ranks start, the ranks (N processes, or `mpirun` with --mpi) and the analysis
process beside them. It ends with the analysis's summary: throughput, a check of sampled
columns against the model called directly from Python, and where the PNG map is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from shmstore import config

QUARTER_DEGREE_GRID = (1440, 1080)


def find_proxy_source() -> Path:
    """Return the Fortran source of the ocean proxy: from the package data or the repository."""
    candidates = [
        Path(__file__).resolve().parent / "ocean_proxy.f90",
        Path(__file__).resolve().parents[2] / "fortran" / "demo" / "ocean_proxy.f90",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "ocean_proxy.f90 not found next to shmstore.demo nor in the repository's fortran/demo; "
        "reinstall shmstore from a checkout")


def build_proxy(out_dir: Path) -> Path:
    """Compile the ocean proxy with gfortran against the installed Fortran module."""
    if shutil.which("gfortran") is None:
        raise RuntimeError("gfortran not found: install it (apt-get install gfortran), then "
                           "reinstall shmstore so that its Fortran module is built")
    executable = out_dir / "ocean_proxy"
    command = (["gfortran", "-O2"] + config.fflags() + [str(find_proxy_source()),
               "-o", str(executable)] + config.libs())
    subprocess.run(command, check=True, cwd=out_dir)
    return executable


def build_default_model(out_dir: Path) -> Path:
    from shmstore.inference.eke_model import build_eke_like_model

    path = out_dir / "eke_like_model.pt"
    build_eke_like_model(str(path))
    return path


def parse_grid(text: str) -> tuple[int, int]:
    try:
        nx, ny = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid grid {text!r}: expected NXxNY, like 360x180")
    if nx < 1 or ny < 1:
        raise argparse.ArgumentTypeError(f"invalid grid {text!r}: both sizes must be positive")
    return nx, ny


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shmstore.demo", description=__doc__)
    parser.add_argument("--model", type=Path,
                        help="TorchScript EKE model, float32 (N, 4) in, (N, 1) out (default: a "
                             "model of the same interface that the demo builds itself)")
    parser.add_argument("--grid", type=parse_grid, default=(360, 180), metavar="NXxNY",
                        help="global longitude x latitude grid (default 360x180)")
    parser.add_argument("--quarter-degree", action="store_true",
                        help="use the 1440x1080 grid of the published MOM6 ML-EKE case")
    parser.add_argument("--steps", type=int, default=10, help="time steps (default 10)")
    parser.add_argument("--ranks", type=int, default=4, help="simulation ranks (default 4)")
    parser.add_argument("--mpi", action="store_true", help="run the ranks under mpirun")
    parser.add_argument("--workers", type=int, default=1, help="inference workers (default 1)")
    parser.add_argument("--device", default="cpu", help="inference device (default cpu)")
    parser.add_argument("--batch-size", type=int, default=4096,
                        help="maximum rows per model call: requests merge up to it, and "
                             "larger ones run in chunks of at most that size (default 4096)")
    parser.add_argument("--min-batch-size", type=int, default=0,
                        help="rows a batch waits for (default 0: run what has arrived)")
    parser.add_argument("--min-batch-timeout", type=int, default=0,
                        help="ms a batch waits for --min-batch-size rows (default 0)")
    parser.add_argument("--memory", default="2G", help="store arena size (default 2G)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="folder for the build, logs, PNG and timings (default demo-output)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    nx, ny = QUARTER_DEGREE_GRID if args.quarter_degree else args.grid
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.txt").unlink(missing_ok=True)

    print(f"demo: building the Fortran ocean proxy in {out_dir}", flush=True)
    proxy = build_proxy(out_dir)
    if args.model is None:
        model = build_default_model(out_dir)
        print(f"demo: no --model given, built the project's EKE-like model {model}", flush=True)
    else:
        model = args.model.resolve()
        if not model.is_file():
            print(f"demo: model file {model} not found", file=sys.stderr)
            return 2

    model_spec = (f"eke={model},batch_size={args.batch_size},"
                  f"min_batch_size={args.min_batch_size},"
                  f"min_batch_timeout={args.min_batch_timeout}")
    analysis = [sys.executable, "-m", "shmstore.demo.analysis", "--ranks", str(args.ranks),
                "--steps", str(args.steps), "--model", str(model), "--out", str(out_dir)]
    command = [sys.executable, "-m", "shmstore", "launch", "--name", f"demo-{os.getpid()}",
               "--memory", args.memory, "--workers", str(args.workers), "--device", args.device,
               "--model", model_spec, "--ranks", str(args.ranks),
               "--log-dir", str(out_dir / "logs"),
               "--sidecar", subprocess.list2cmdline(analysis)]
    if args.mpi:
        command.append("--mpi")
    command += ["--", str(proxy), "--nx", str(nx), "--ny", str(ny), "--steps", str(args.steps),
                "--model", "eke"]

    print(f"demo: {nx} x {ny} grid, {args.ranks} ranks, {args.steps} steps, "
          f"{args.workers} worker(s) on {args.device}", flush=True)
    code = subprocess.call(command)
    summary = out_dir / "summary.txt"
    if code == 0 and summary.is_file():
        print("\ndemo summary:")
        print(summary.read_text(), end="")
    return code


if __name__ == "__main__":
    sys.exit(main())
