"""`python -m shmstore ...` runs the shmstore command."""

import sys

from shmstore.cli import main

sys.exit(main())
