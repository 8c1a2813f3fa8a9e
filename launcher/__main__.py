"""Run `shmstore launch` as `python -m shmstore.launcher [options] -- COMMAND [ARGS...]`."""

import sys

from .cli import main

sys.exit(main())
