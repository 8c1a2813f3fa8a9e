"""Read the rank and the store name of the calling process from its environment."""

from __future__ import annotations

import os
from typing import Mapping, Optional

# Checked in this order: the launcher's own variable for ranks it starts itself, then the
# variables that Open MPI, PMIx, MPICH/Hydra and Slurm set for each rank they start.
RANK_VARIABLES = ("SHMSTORE_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def rank_from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """Return the rank of this process from the first rank variable set, or None if none is."""
    environ = os.environ if environ is None else environ
    for variable in RANK_VARIABLES:
        value = environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return None


def store_name_from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Return SHMSTORE_NAME, the store that `shmstore launch` started for this run."""
    environ = os.environ if environ is None else environ
    return environ.get("SHMSTORE_NAME") or None
