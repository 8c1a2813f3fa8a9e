"""Process-group helpers for the supervisor: stop groups, find and reap leftover processes.

Every process the launcher starts leads its own session and process group. So one signal to
the group reaches the process and everything it started, and a Ctrl-C in the terminal reaches
only the launcher, which then stops the rest in order.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
import time
from typing import Iterable

import psutil

logger = logging.getLogger("shmstore.launcher")

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants (a daemonized grandchild) children of this process.

    Without it they would move to init and escape the final sweep in `stop_leftover_children`.
    Returns False where prctl is unavailable; the process groups still cover most cases.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_code(returncode: int) -> int:
    """Map a Popen return code to a shell exit code: a process killed by signal S gives 128+S."""
    if returncode < 0:
        return 128 - returncode
    return returncode


def signal_group(pgid: int, signum: int) -> None:
    """Send signum to process group pgid; a group that is already gone is not an error."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as error:
        logger.warning("cannot signal process group %d: %s", pgid, error.strerror)


def live_group_members(pgids: Iterable[int]) -> list[psutil.Process]:
    """Return the processes, zombies excluded, whose process group is one of pgids."""
    pgid_set = set(pgids)
    members = []
    for process in psutil.process_iter(["status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(process.pid) in pgid_set:
                members.append(process)
        except ProcessLookupError:
            continue
    return members


def stop_groups(leaders: list[tuple[subprocess.Popen, str]], grace_period_s: float) -> None:
    """Stop the process groups led by `leaders`: SIGTERM, then SIGKILL after the grace period.

    Each leader comes with a label for the log, like "rank 3". Groups whose leader already
    exited are swept as well, because a grandchild may still run in them. Leaders are reaped
    here, so their return codes stay readable from the Popen objects.
    """
    pgids = [leader.pid for leader, _label in leaders]
    if not any(leader.poll() is None for leader, _label in leaders) and not live_group_members(pgids):
        return

    for leader, label in leaders:
        if leader.poll() is None:
            logger.info("sending SIGTERM to %s (pid %d)", label, leader.pid)
        signal_group(leader.pid, signal.SIGTERM)

    deadline = time.monotonic() + grace_period_s
    while time.monotonic() < deadline:
        leaders_done = all(leader.poll() is not None for leader, _label in leaders)
        if leaders_done and not live_group_members(pgids):
            return
        time.sleep(0.05)

    for leader, label in leaders:
        if leader.poll() is None:
            logger.warning("%s (pid %d) still runs %g s after SIGTERM; sending SIGKILL",
                           label, leader.pid, grace_period_s)
    for pgid in pgids:
        signal_group(pgid, signal.SIGKILL)
    for leader, label in leaders:
        try:
            leader.wait(timeout=grace_period_s)
        except subprocess.TimeoutExpired:
            logger.error("%s (pid %d) survived SIGKILL for %g s", label, leader.pid, grace_period_s)


def stop_leftover_children(known_pids: set[int], grace_period_s: float) -> None:
    """Kill and reap the children of this process that the launcher did not start itself.

    As a subreaper the launcher inherits every orphaned descendant, so this sweep catches
    processes that left their group (setsid) before their parent exited.
    """
    leftovers = [child for child in psutil.Process().children() if child.pid not in known_pids]
    for child in leftovers:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                logger.warning("stopping leftover process %d (%s)", child.pid, child.name())
            child.terminate()
        except psutil.NoSuchProcess:
            continue

    _gone, alive = psutil.wait_procs(leftovers, timeout=grace_period_s)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_period_s)

    for child in leftovers:
        try:
            os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            continue
        except OSError as error:
            if error.errno != errno.ECHILD:
                raise
