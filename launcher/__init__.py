"""Co-located launch of shmstore: `shmstore launch [options] -- COMMAND [ARGS...]`.

Starts the daemon (and its workers) on each node next to the application, stores the models,
runs the application's ranks with SHMSTORE_NAME set, and on exit, error or Ctrl-C stops
everything and removes the store's segments. See docs/launch.md.
"""

from .cli import main
from .env import rank_from_environment, store_name_from_environment

__all__ = ["main", "rank_from_environment", "store_name_from_environment"]
