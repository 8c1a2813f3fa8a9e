"""Read a store's statistics, wait for a store to come up, and format `shmstore status`."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

from shmstore import _core
from shmstore.errors import (
    ConnectionLostError,
    LayoutMismatchError,
    ShmstoreTimeoutError,
    StoreNotFoundError,
)
from shmstore.sizes import format_size

logger = logging.getLogger("shmstore.status")

# Pause between two checks of wait_for_store, in seconds.
_WAIT_INTERVAL_S = 0.05


def store_stats(name: Optional[str] = None) -> Dict[str, Any]:
    """Return the statistics of the store called name without attaching to it.

    Keys: daemon_pid, uptime_s, arena_bytes, used_bytes, free_bytes, key_count,
    client_count, max_clients, max_keys, client_pids. Raises StoreNotFoundError when no
    daemon serves the name.
    """
    return _core.stats(name)


def wait_for_store(name: Optional[str] = None, timeout_s: float = 10.0) -> Dict[str, Any]:
    """Wait until a live daemon serves the store called name; return its statistics.

    Raises ShmstoreTimeoutError, with the last error seen, when no daemon serves the name
    within timeout_s seconds. A layout mismatch counts as "not yet" until then, because a
    daemon that is still writing its header looks the same as a foreign layout.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception

    while True:
        try:
            return _core.stats(name)
        except (StoreNotFoundError, ConnectionLostError, LayoutMismatchError) as error:
            last_error = error

        if time.monotonic() >= deadline:
            break
        time.sleep(_WAIT_INTERVAL_S)

    raise ShmstoreTimeoutError(
        f"store {name!r} was not served within {timeout_s:g} s ({last_error}); check that "
        f"`shmstore serve --name {name}` is running on this node",
        code=getattr(last_error, "code", 0),
        detail=getattr(last_error, "detail", ""))


def format_status(name: str, stats: Dict[str, Any]) -> str:
    """Return the text that `shmstore status` prints for stats of store name."""
    arena = stats["arena_bytes"]
    used = stats["used_bytes"]
    used_percent = 100.0 * used / arena if arena else 0.0
    pids = " ".join(str(pid) for pid in stats["client_pids"]) or "none"

    lines = [
        f"store:   {name} (daemon pid {stats['daemon_pid']}, up {stats['uptime_s']:.1f} s)",
        f"memory:  {format_size(used)} used of {format_size(arena)} ({used_percent:.1f}%), "
        f"{format_size(stats['free_bytes'])} free",
        f"keys:    {stats['key_count']} of at most {stats['max_keys']}",
        f"clients: {stats['client_count']} of at most {stats['max_clients']} (pids: {pids})",
    ]
    return "\n".join(lines)
