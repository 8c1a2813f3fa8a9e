"""Launch plans: the command lines that start daemons, prepare stores, run ranks and clean up.

A plan is pure data built from LaunchOptions, so `--dry-run` prints exactly what a launch runs
and tests can check the command lines without Slurm or PBS. The builder for each scheduler is
in `schedulers.py`, and this file contains the shared types.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from typing import Optional

from .options import LaunchOptions
from .tagged import DemultiplexerFactory

# Environment variables that tell a rank which store to use. SHMSTORE_RANK is set only where
# the launcher starts each rank itself. Under mpirun, srun and mpiexec the rank comes from the
# MPI or Slurm environment (see `env.rank_from_environment`).
ENV_NAME = "SHMSTORE_NAME"
ENV_RANK = "SHMSTORE_RANK"
ENV_NRANKS = "SHMSTORE_NRANKS"


@dataclasses.dataclass
class AppStep:
    """One process that the launcher starts for the application.

    Either one rank (`rank` set, its output untagged) or a tool that starts all ranks
    (`demultiplexer_factory` set, which splits its tagged output into lines per rank).
    """

    argv: list[str]
    env: dict[str, str]
    rank: Optional[int] = None
    demultiplexer_factory: Optional[DemultiplexerFactory] = None


@dataclasses.dataclass
class LaunchPlan:
    """The command lines of one launch, in the order the supervisor runs them.

    daemon_steps run in the background for the whole launch (one per node under PBS, one in
    total otherwise). prepare_steps must all exit 0 before any rank starts, because they wait
    until the store is ready and then store the models. cleanup_steps run after the daemons were stopped, on
    every node; a local launch removes the segments itself and has none.
    """

    scheduler: str
    store_name: str
    nodes: int
    daemon_steps: list[list[str]]
    prepare_steps: list[list[str]]
    app_steps: list[AppStep]
    cleanup_steps: list[list[str]]

    def describe(self) -> str:
        """Format the plan as shell lines, for `--dry-run`."""
        lines = [f"# shmstore launch: store {self.store_name}, scheduler {self.scheduler}, "
                 f"{self.nodes} node(s)"]

        lines.append("# 1. daemons (background, for the whole run)")
        lines.extend(shlex.join(argv) + " &" for argv in self.daemon_steps)

        lines.append("# 2. wait until every store is ready, store the models (all at once)")
        lines.extend(shlex.join(argv) for argv in self.prepare_steps)

        lines.append("# 3. application")
        for step in self.app_steps:
            assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(step.env.items())]
            lines.append(" ".join(assignments + [shlex.join(step.argv)]))

        lines.append("# 4. stop the daemons (SIGTERM, then SIGKILL), remove leftover segments")
        lines.extend(shlex.join(argv) for argv in self.cleanup_steps)
        if not self.cleanup_steps:
            lines.append(f"# (the launcher removes /dev/shm/shmstore-{self.store_name}-* itself)")
        return "\n".join(lines) + "\n"


def node_command(options: LaunchOptions, action: str) -> list[str]:
    """Build the node-side command `python -m shmstore.launcher.node ACTION ...`.

    The absolute interpreter path is used because tools like pbsdsh start programs without a
    shell and without the caller's PATH.
    """
    argv = [sys.executable, "-m", "shmstore.launcher.node", action, "--name", options.name]

    if action == "serve":
        argv += ["--memory", options.memory]
        if options.workers is not None:
            argv += ["--workers", str(options.workers)]
        if options.device is not None:
            argv += ["--device", options.device]
    elif action == "prepare":
        argv += ["--timeout", f"{options.start_timeout_s:g}"]
        for model in options.models:
            argv += ["--model", model.to_argument()]
    elif action == "cleanup":
        argv += ["--grace-period", f"{options.grace_period_s:g}"]
    else:
        raise ValueError(f"unknown node action {action!r}")

    return argv


def app_environment(options: LaunchOptions) -> dict[str, str]:
    """Return the variables that every rank gets, whatever the scheduler."""
    return {ENV_NAME: options.name, ENV_NRANKS: str(options.ranks)}
