"""Build the launch plan for each scheduler: local processes, mpirun, Slurm and PBS."""

from __future__ import annotations

import math
import os
import shutil
from typing import Mapping, Optional

from .options import LaunchOptions, OptionError
from .tagged import OpenMpiDemultiplexer, SlurmDemultiplexer
from .plan import ENV_NAME, ENV_NRANKS, ENV_RANK, AppStep, LaunchPlan, app_environment, node_command


def build_plan(options: LaunchOptions, environ: Optional[Mapping[str, str]] = None) -> LaunchPlan:
    """Build the plan for `options.scheduler`; environ defaults to os.environ.

    Raises OptionError when the options do not fit the scheduler (for example PBS without
    PBS_NODEFILE).
    """
    environ = os.environ if environ is None else environ
    if options.scheduler == "local":
        return build_local_plan(options)
    if options.scheduler == "slurm":
        return build_slurm_plan(options, environ)
    if options.scheduler == "pbs":
        return build_pbs_plan(options, environ)
    raise OptionError(f"invalid --scheduler {options.scheduler!r}: use local, slurm or pbs")


def mpirun_root_options() -> list[str]:
    """Return the options Open MPI needs to run as root, which it otherwise rejects."""
    return ["--allow-run-as-root"] if os.geteuid() == 0 else []


def build_local_plan(options: LaunchOptions) -> LaunchPlan:
    """Plan one daemon on this node and N rank processes, or `mpirun -n N` with `--mpi`."""
    if options.nodes not in (None, 1):
        raise OptionError(f"invalid --nodes {options.nodes} for --scheduler local: it runs on one node")

    environment = app_environment(options)
    if options.mpi:
        mpirun = shutil.which("mpirun") or "mpirun"
        argv = [mpirun, "-n", str(options.ranks), *mpirun_root_options(), "--oversubscribe",
                "--tag-output", "-x", ENV_NAME, "-x", ENV_NRANKS, *options.command]
        app_steps = [AppStep(argv=argv, env=environment,
                             demultiplexer_factory=OpenMpiDemultiplexer)]
    else:
        app_steps = []
        for rank in range(options.ranks):
            rank_environment = dict(environment)
            rank_environment[ENV_RANK] = str(rank)
            app_steps.append(AppStep(argv=list(options.command), env=rank_environment, rank=rank))

    return LaunchPlan(
        scheduler="local",
        store_name=options.name,
        nodes=1,
        daemon_steps=[node_command(options, "serve")],
        prepare_steps=[node_command(options, "prepare")],
        app_steps=app_steps,
        cleanup_steps=[],
    )


def slurm_node_count(options: LaunchOptions, environ: Mapping[str, str]) -> int:
    """Return --nodes, else the node count of the current allocation, else 1."""
    if options.nodes is not None:
        return options.nodes
    for variable in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        value = environ.get(variable, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def build_slurm_plan(options: LaunchOptions, environ: Mapping[str, str]) -> LaunchPlan:
    """Plan one daemon per node as a background srun step and the ranks as a second step.

    The daemon, prepare and cleanup steps pass `--overlap` so that they share the CPUs and
    memory of the allocation with the application step instead of waiting for them. They set
    `--ntasks` explicitly because srun otherwise inherits SLURM_NTASKS from the batch job.

    NOTE: these steps have run only under a one-node srun stand-in in the tests, never under a
    real Slurm.
    """
    nodes = slurm_node_count(options, environ)
    if options.ranks < nodes:
        raise OptionError(f"invalid --ranks {options.ranks}: fewer than --nodes {nodes}")

    per_node = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
                "--overlap", "--label"]
    exports = ",".join(["ALL", f"{ENV_NAME}={options.name}", f"{ENV_NRANKS}={options.ranks}"])
    # --kill-on-bad-exit ends the whole step when one rank fails, as mpirun does.
    app_argv = ["srun", f"--nodes={nodes}", f"--ntasks={options.ranks}", "--kill-on-bad-exit=1",
                "--label", f"--export={exports}", *options.command]

    return LaunchPlan(
        scheduler="slurm",
        store_name=options.name,
        nodes=nodes,
        daemon_steps=[per_node + node_command(options, "serve")],
        prepare_steps=[per_node + node_command(options, "prepare")],
        app_steps=[AppStep(argv=app_argv, env={}, demultiplexer_factory=SlurmDemultiplexer)],
        cleanup_steps=[per_node + node_command(options, "cleanup")],
    )


def read_pbs_hosts(environ: Mapping[str, str]) -> list[tuple[str, int]]:
    """Read PBS_NODEFILE and return each host once, with the index of its first line.

    The node file has one line per allocated slot, so a host appears several times. pbsdsh
    `-n INDEX` addresses a slot by its line index, and the first slot of each host runs the
    host's single daemon.
    """
    path = environ.get("PBS_NODEFILE", "")
    if not path:
        raise OptionError("PBS_NODEFILE is not set: run `--scheduler pbs` inside a PBS job")

    try:
        with open(path, encoding="utf-8") as node_file:
            lines = [line.strip() for line in node_file]
    except OSError as error:
        raise OptionError(f"cannot read PBS_NODEFILE {path!r}: {error.strerror}") from None

    hosts: list[tuple[str, int]] = []
    seen = set()
    for index, host in enumerate(lines):
        if host and host not in seen:
            seen.add(host)
            hosts.append((host, index))
    if not hosts:
        raise OptionError(f"PBS_NODEFILE {path!r} lists no host")
    return hosts


def build_pbs_plan(options: LaunchOptions, environ: Mapping[str, str]) -> LaunchPlan:
    """Plan one daemon per host with pbsdsh and the ranks with Open MPI's mpiexec.

    NOTE: the mpiexec options (`--host`, `-x`, `--tag-output`) are Open MPI's. With another MPI
    library (MPICH, HPE MPT, Cray), translate the application line of --dry-run by hand.
    """
    hosts = read_pbs_hosts(environ)
    if options.nodes is not None:
        if options.nodes > len(hosts):
            raise OptionError(
                f"invalid --nodes {options.nodes}: PBS_NODEFILE lists only {len(hosts)} host(s)"
            )
        hosts = hosts[:options.nodes]
    if options.ranks < len(hosts):
        raise OptionError(f"invalid --ranks {options.ranks}: fewer than the {len(hosts)} node(s)")

    def on_each_host(action: str) -> list[list[str]]:
        # -o returns the program's stdout to pbsdsh instead of the job's output file.
        return [["pbsdsh", "-o", "-n", str(index), "--", *node_command(options, action)]
                for _host, index in hosts]

    slots_per_host = math.ceil(options.ranks / len(hosts))
    host_list = ",".join(f"{host}:{slots_per_host}" for host, _index in hosts)
    app_argv = ["mpiexec", "-n", str(options.ranks), "--host", host_list, *mpirun_root_options(),
                "--tag-output", "-x", ENV_NAME, "-x", ENV_NRANKS, *options.command]

    return LaunchPlan(
        scheduler="pbs",
        store_name=options.name,
        nodes=len(hosts),
        daemon_steps=on_each_host("serve"),
        prepare_steps=on_each_host("prepare"),
        app_steps=[AppStep(argv=app_argv, env=app_environment(options),
                           demultiplexer_factory=OpenMpiDemultiplexer)],
        cleanup_steps=on_each_host("cleanup"),
    )
