"""Run a launch plan: start the daemons, prepare the stores, run the ranks, stop everything.

NOTE [launch protocol]
1. Refuse a store name that a live daemon already holds on this node.
2. Start the daemon steps in the background, each leading its own process group, output to
   `daemon.log`.
3. Run the prepare steps and wait until all of them exit 0. They wait until each store
   accepts clients and then store the models, so no rank races the model load. A daemon that exits, a
   prepare step that fails or the start timeout ends the launch with exit code 1 and the tail
   of the daemon's log.
4. Start the sidecars (analysis or monitoring commands on the launch node, output relayed
   with their name as label), then the application steps (one per rank, or one
   mpirun/srun/mpiexec for all ranks) and relay their output. Watch them and the daemons
   every 50 ms.
5. The launch ends when every application step exited 0 and then every sidecar exited
   (exit 0, or the first failing sidecar's code; a sidecar still running after the sidecar
   timeout is stopped and the launch exits 1), when an application step failed (its exit
   code; 128+S when killed by signal S), when a daemon exited (exit 1), or when the launcher
   got SIGINT, SIGTERM or SIGHUP (128+S).
6. In every case: stop the ranks and sidecars, then the daemons (SIGTERM, SIGKILL after the
   grace period),
   run the cleanup steps (or, for a local launch, remove the segments here), and kill any
   orphaned descendant left.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import time
from typing import BinaryIO, Optional

from .options import LaunchOptions
from .output import OutputRelay
from .plan import AppStep, LaunchPlan
from .processes import become_subreaper, exit_code, stop_groups, stop_leftover_children
from .segments import daemon_holds_store, remove_segments

logger = logging.getLogger("shmstore.launcher")

POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 20
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Exit code of the launcher when the launch itself fails (daemon start, model load, daemon
# death); the application's own codes pass through unchanged.
LAUNCH_FAILED = 1


class LaunchError(Exception):
    """The launch failed for a reason other than the application's exit code."""


class Interrupted(Exception):
    """The launcher received a stop signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def read_log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last lines of a log file, indented, or a note when it is empty or missing."""
    try:
        with open(path, "rb") as log_file:
            tail = collections.deque(log_file, maxlen=lines)
    except OSError as error:
        return f"    ({path}: {error.strerror})"
    if not tail:
        return f"    ({path} is empty)"
    text = b"".join(tail).decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join("    " + line for line in text.split("\n"))


class Supervisor:
    """Runner of one LaunchPlan, from the daemon start to the cleanup (NOTE [launch protocol])."""

    def __init__(self, plan: LaunchPlan, options: LaunchOptions, stdout: BinaryIO) -> None:
        self._plan = plan
        self._options = options
        self._relay = OutputRelay(options.log_dir, stdout)
        self._daemons: list[subprocess.Popen] = []
        self._helpers: list[subprocess.Popen] = []
        self._app: list[tuple[AppStep, subprocess.Popen]] = []
        self._sidecars: list[tuple[str, subprocess.Popen]] = []
        self._signal: Optional[int] = None

    @property
    def daemon_log(self) -> str:
        return os.path.join(self._options.log_dir, "daemon.log")

    def run(self) -> int:
        """Run the launch; return the exit code for the launcher (see NOTE [launch protocol]).

        NOTE: a launcher killed with SIGKILL cannot clean up, so its daemon and ranks keep
        running. `python -m shmstore.launcher.node cleanup --name NAME` then stops the daemon
        and removes the segments, but the ranks must be stopped by hand.
        """
        os.makedirs(self._options.log_dir, exist_ok=True)
        become_subreaper()
        previous_handlers = {signum: signal.signal(signum, self._on_signal)
                             for signum in HANDLED_SIGNALS}
        try:
            self._check_store_name_free()
            self._start_daemons()
            self._prepare_stores()
            self._start_sidecars()
            self._start_application()
            code = self._watch_application()
            if code == 0:
                code = self._wait_for_sidecars()
            return code
        except LaunchError as error:
            logger.error("%s", error)
            return LAUNCH_FAILED
        except Interrupted as interruption:
            logger.warning("received %s; stopping the launch", interruption)
            return 128 + interruption.signum
        finally:
            self._shut_down()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._signal is None:
            self._signal = signum

    def _raise_if_interrupted(self) -> None:
        if self._signal is not None:
            raise Interrupted(self._signal)

    def _check_store_name_free(self) -> None:
        if self._plan.scheduler == "local" and daemon_holds_store(self._plan.store_name):
            raise LaunchError(
                f"store {self._plan.store_name!r} is already served by a live daemon on this "
                "node; choose another --name or stop that daemon"
            )

    def _start_process(self, argv: list[str], log_path: str,
                       env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        with open(log_path, "ab") as log_file:
            try:
                return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as error:
                raise LaunchError(f"cannot start {argv[0]!r}: {error.strerror}") from None

    def _start_daemons(self) -> None:
        for argv in self._plan.daemon_steps:
            daemon = self._start_process(argv, self.daemon_log)
            self._daemons.append(daemon)
            logger.info("started the daemon of store %r (pid %d), log %s",
                        self._plan.store_name, daemon.pid, self.daemon_log)

    def _check_daemons(self, moment: str) -> None:
        for daemon in self._daemons:
            returncode = daemon.poll()
            if returncode is not None:
                raise LaunchError(
                    f"the daemon of store {self._plan.store_name!r} (pid {daemon.pid}) exited "
                    f"with code {exit_code(returncode)} {moment}. Last lines of "
                    f"{self.daemon_log}:\n{read_log_tail(self.daemon_log)}"
                )

    def _prepare_stores(self) -> None:
        prepare_log = os.path.join(self._options.log_dir, "prepare.log")
        steps = [self._start_process(argv, prepare_log) for argv in self._plan.prepare_steps]
        self._helpers.extend(steps)

        # The prepare step bounds its own wait for the store; the margin covers its start-up.
        timeout_s = self._options.start_timeout_s + 10.0
        deadline = time.monotonic() + timeout_s
        while any(step.poll() is None for step in steps):
            self._raise_if_interrupted()
            self._check_daemons("before the store was ready")
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"timed out after {timeout_s:g} s waiting for store {self._plan.store_name!r}. "
                    f"Last lines of {self.daemon_log}:\n{read_log_tail(self.daemon_log)}"
                )
            time.sleep(POLL_INTERVAL_S)

        failed = [step for step in steps if step.returncode != 0]
        if failed:
            self._check_daemons("before the store was ready")
            raise LaunchError(
                f"preparing store {self._plan.store_name!r} failed (exit code "
                f"{exit_code(failed[0].returncode)}). Last lines of {prepare_log}:\n"
                f"{read_log_tail(prepare_log)}\nLast lines of {self.daemon_log}:\n"
                f"{read_log_tail(self.daemon_log)}"
            )
        logger.info("store %r is ready on %d node(s)", self._plan.store_name, self._plan.nodes)

    def _start_application(self) -> None:
        for rank in range(self._options.ranks):
            self._relay.open_rank_log(rank)

        for step in self._plan.app_steps:
            self._raise_if_interrupted()
            environment = dict(os.environ)
            environment.update(step.env)
            try:
                process = subprocess.Popen(step.argv, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           env=environment, start_new_session=True)
            except OSError as error:
                raise LaunchError(
                    f"cannot start the application {step.argv[0]!r}: {error.strerror}"
                ) from None

            assert process.stdout is not None
            self._relay.follow(process.stdout, step.rank, step.demultiplexer_factory,
                               tool=os.path.basename(step.argv[0]))
            self._app.append((step, process))

        logger.info("started %d rank(s) of %s", self._options.ranks, self._options.command[0])

    def _start_sidecars(self) -> None:
        environment = dict(os.environ)
        environment["SHMSTORE_NAME"] = self._plan.store_name
        for number, argv in enumerate(self._options.sidecars):
            self._raise_if_interrupted()
            label = f"sidecar-{number}"
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, env=environment,
                                           start_new_session=True)
            except OSError as error:
                raise LaunchError(f"cannot start the sidecar {argv[0]!r}: {error.strerror}") from None
            assert process.stdout is not None
            self._relay.follow(process.stdout, None, tool=label)
            self._sidecars.append((label, process))
            logger.info("started %s (pid %d): %s", label, process.pid, " ".join(argv))

    def _wait_for_sidecars(self) -> int:
        """Wait for the sidecars after the ranks finished; return the first non-zero code."""
        deadline = time.monotonic() + self._options.sidecar_timeout_s
        for label, process in self._sidecars:
            while process.poll() is None:
                self._raise_if_interrupted()
                self._check_daemons("while the sidecars were finishing")
                if time.monotonic() > deadline:
                    logger.error("%s (pid %d) still runs %g s after the ranks finished; "
                                 "stopping it", label, process.pid,
                                 self._options.sidecar_timeout_s)
                    return LAUNCH_FAILED
                time.sleep(POLL_INTERVAL_S)
            code = exit_code(process.returncode)
            if code != 0:
                logger.error("%s (pid %d) exited with code %d", label, process.pid, code)
                return code
            logger.info("%s (pid %d) exited with code 0", label, process.pid)
        return 0

    @staticmethod
    def _step_label(step: AppStep) -> str:
        if step.rank is not None:
            return f"rank {step.rank}"
        return os.path.basename(step.argv[0])

    def _watch_application(self) -> int:
        running = list(self._app)
        while True:
            if self._signal is not None:
                raise Interrupted(self._signal)

            for step, process in list(running):
                returncode = process.poll()
                if returncode is None:
                    continue
                running.remove((step, process))

                code = exit_code(returncode)
                if code == 0:
                    logger.info("%s (pid %d) exited with code 0", self._step_label(step), process.pid)
                    continue
                logger.error("%s (pid %d) exited with code %d; stopping the launch",
                             self._step_label(step), process.pid, code)
                return code

            if not running:
                logger.info("the application finished")
                return 0

            self._check_daemons("during the run; stopping the ranks")
            time.sleep(POLL_INTERVAL_S)

    def _shut_down(self) -> None:
        grace_period_s = self._options.grace_period_s

        app_processes = [process for _step, process in self._app]
        stop_groups([(process, self._step_label(step)) for step, process in self._app],
                    grace_period_s)
        stop_groups([(process, label) for label, process in self._sidecars], grace_period_s)
        stop_groups([(helper, "the prepare step") for helper in self._helpers], grace_period_s)
        stop_groups([(daemon, "the daemon") for daemon in self._daemons], grace_period_s)

        cleanup_log = os.path.join(self._options.log_dir, "cleanup.log")
        for argv in self._plan.cleanup_steps:
            try:
                step = self._start_process(argv, cleanup_log)
            except LaunchError as error:
                logger.error("cleanup step failed: %s", error)
                continue
            self._helpers.append(step)
            try:
                step.wait(timeout=grace_period_s * 2 + 30.0)
            except subprocess.TimeoutExpired:
                logger.error("cleanup step %s timed out; see %s", argv[0], cleanup_log)
                stop_groups([(step, "the cleanup step")], grace_period_s)

        if self._plan.scheduler == "local":
            remove_segments(self._plan.store_name)

        sidecar_processes = [process for _label, process in self._sidecars]
        known = {process.pid for process in
                 app_processes + sidecar_processes + self._helpers + self._daemons}
        stop_leftover_children(known, grace_period_s)
        self._relay.join(timeout_s=grace_period_s)
