"""Command line of `shmstore launch`: parse the options, build the plan, run or print it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from typing import Optional

from .options import (SCHEDULERS, LaunchOptions, OptionError, default_store_name,
                      parse_model_spec, validate_store_name)
from .schedulers import build_plan
from .supervisor import LAUNCH_FAILED, Supervisor

logger = logging.getLogger("shmstore.launcher")

USAGE_ERROR = 2

DESCRIPTION = """\
Start a shmstore daemon (and its inference workers) next to an application, store the given
models, run the application's ranks with SHMSTORE_NAME set, relay their output with a
[rank N] prefix, and stop everything and remove the store's segments when the application
ends, fails or the launcher is interrupted. The exit code is the application's (the first
failing rank's; 128+S for a rank killed by signal S), 1 when the launch itself failed, 2 for
invalid options.
"""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmstore launch",
        usage="%(prog)s [options] -- COMMAND [ARGS...]",
        description=DESCRIPTION,
    )
    parser.add_argument("--name", help="store name (default: launch-PID, unique per launch)")
    parser.add_argument("--memory", default="1G",
                        help="size of the data arena of each daemon, like 512M or 4G (default 1G)")
    parser.add_argument("--workers", type=positive_int,
                        help="number of inference workers per daemon (passed to shmstore serve)")
    parser.add_argument("--device", help="inference device, like cpu or cuda:0 (passed to serve)")

    parser.add_argument("--model", action="append", default=[], metavar="KEY=PATH[,SETTING=V...]",
                        help="store a TorchScript model before the ranks start; settings: "
                             "batch_size, min_batch_size, min_batch_timeout (ms), device, "
                             "backend; repeat for several models")

    parser.add_argument("--ranks", type=positive_int, default=1,
                        help="number of application processes (default 1)")
    parser.add_argument("--mpi", action="store_true",
                        help="run the ranks with `mpirun -n RANKS` (local scheduler only)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="local",
                        help="local: this node; slurm: srun steps; pbs: pbsdsh and mpiexec "
                             "(default local)")
    parser.add_argument("--nodes", type=positive_int,
                        help="nodes to use under slurm or pbs, one daemon each (default: all "
                             "nodes of the allocation)")

    parser.add_argument("--log-dir", help="folder for daemon.log and rank-N.log "
                                          "(default ./shmstore-logs/NAME)")
    parser.add_argument("--start-timeout", type=positive_float, default=60.0, metavar="SECONDS",
                        help="seconds to wait for the store to become ready and the models to "
                             "load (default 60)")
    parser.add_argument("--grace-period", type=positive_float, default=5.0, metavar="SECONDS",
                        help="time between SIGTERM and SIGKILL when stopping (default 5)")

    parser.add_argument("--sidecar", action="append", default=[], metavar="COMMAND",
                        help="a command (one shell-quoted string) started on the launch node "
                             "once the store is ready, beside the ranks, with SHMSTORE_NAME set; "
                             "the launch waits for it after the ranks finish (an analysis or "
                             "monitoring process); repeat for several")
    parser.add_argument("--sidecar-timeout", type=positive_float, default=300.0,
                        metavar="SECONDS",
                        help="time a sidecar may run on after the ranks finished (default 300)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command lines of the launch and exit")
    return parser


def parse_options(argv: list[str]) -> LaunchOptions:
    """Parse `[options] -- COMMAND [ARGS...]`; raise OptionError on invalid input.

    Everything after the first `--` is the application's command line, untouched.
    """
    # The options are parsed before the command is checked, so that -h and --help print the
    # help (and exit) even without a command.
    split_at = argv.index("--") if "--" in argv else len(argv)
    arguments = build_parser().parse_args(argv[:split_at])

    if split_at == len(argv):
        raise OptionError("missing COMMAND: put the application's command line after --")
    command = argv[split_at + 1:]
    if not command:
        raise OptionError("missing COMMAND after --")

    name = validate_store_name(arguments.name or default_store_name())
    models = [parse_model_spec(text) for text in arguments.model]

    if arguments.mpi and arguments.scheduler != "local":
        raise OptionError(
            f"--mpi applies to --scheduler local only; under {arguments.scheduler} the ranks "
            "always start through the scheduler's MPI launcher"
        )

    return LaunchOptions(
        name=name,
        memory=arguments.memory,
        command=command,
        workers=arguments.workers,
        device=arguments.device,
        models=models,
        ranks=arguments.ranks,
        mpi=arguments.mpi,
        scheduler=arguments.scheduler,
        nodes=arguments.nodes,
        log_dir=arguments.log_dir or "",
        dry_run=arguments.dry_run,
        start_timeout_s=arguments.start_timeout,
        grace_period_s=arguments.grace_period,
        sidecars=[shlex.split(text) for text in arguments.sidecar],
        sidecar_timeout_s=arguments.sidecar_timeout,
    )


def check_model_files(options: LaunchOptions) -> None:
    """Raise OptionError for a model file that does not exist, before anything starts."""
    for model in options.models:
        if not os.path.isfile(model.path):
            raise OptionError(f"model file not found for key {model.key!r}: {model.path}")


def main(argv: Optional[list[str]] = None) -> int:
    """Run `shmstore launch` with argv (default sys.argv[1:]); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="shmstore launch: %(levelname)s: %(message)s")

    try:
        options = parse_options(argv)
        options.log_dir = os.path.abspath(options.log_dir)
        # Node-side steps may run in another working directory (pbsdsh starts in $HOME).
        options.models = [dataclasses.replace(model, path=os.path.abspath(model.path))
                          for model in options.models]
        plan = build_plan(options)
        if not options.dry_run:
            check_model_files(options)
    except OptionError as error:
        print(f"shmstore launch: error: {error}", file=sys.stderr)
        return USAGE_ERROR

    if options.dry_run:
        sys.stdout.write(plan.describe())
        return 0

    logger.info("launching %s with %d rank(s), store %r, logs in %s",
                " ".join(options.command), options.ranks, options.name, options.log_dir)
    try:
        return Supervisor(plan, options, sys.stdout.buffer).run()
    except OSError as error:
        logger.error("launch failed: %s", error)
        return LAUNCH_FAILED
