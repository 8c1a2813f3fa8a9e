"""Find and remove the shared-memory segments of one store after its daemon has gone."""

from __future__ import annotations

import errno
import fcntl
import logging
import os

logger = logging.getLogger("shmstore.launcher")

SHM_DIR = "/dev/shm"


def segment_paths(name: str, shm_dir: str = SHM_DIR) -> list[str]:
    """List the segments of store `name`: `/dev/shm/shmstore-NAME-SUFFIX`.

    The suffix (`ctl`, `data`) never contains '-', so the segments of a store called
    `NAME-other` are not taken for those of `NAME`.
    """
    prefix = f"shmstore-{name}-"
    try:
        entries = os.listdir(shm_dir)
    except FileNotFoundError:
        return []

    paths = []
    for entry in sorted(entries):
        if not entry.startswith(prefix):
            continue
        suffix = entry[len(prefix):]
        if suffix and "-" not in suffix:
            paths.append(os.path.join(shm_dir, entry))
    return paths


def daemon_holds_store(name: str, shm_dir: str = SHM_DIR) -> bool:
    """Return True while a live daemon holds the control segment of store `name`.

    The daemon keeps an exclusive flock on `shmstore-NAME-ctl` for its whole life and the kernel
    drops it when the daemon dies, so a shared non-blocking flock fails exactly while it lives.
    """
    control_path = os.path.join(shm_dir, f"shmstore-{name}-ctl")
    try:
        fd = os.open(control_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False


def remove_segments(name: str, shm_dir: str = SHM_DIR) -> list[str]:
    """Remove every segment of store `name` unless a live daemon still holds the store.

    Returns the paths removed. A store locked by a live daemon (for example another launch
    that uses the same name) is left alone, and a warning is logged.
    """
    if daemon_holds_store(name, shm_dir):
        logger.warning(
            "store %r is still held by a live daemon; its segments were not removed", name
        )
        return []

    removed = []
    for path in segment_paths(name, shm_dir):
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path)

    if removed:
        logger.info("removed %d segment(s) of store %r: %s", len(removed), name, ", ".join(removed))
    return removed
