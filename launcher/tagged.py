"""Split the tagged output of mpirun and srun, which carries every rank, into lines per rank.

A demultiplexer takes the lines of one tagged stream, in order, and returns whole lines of the
ranks as (rank, text) pairs. A rank of None means that the line came from the tool itself
(mpirun, srun), not from a rank.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Protocol

RankLine = tuple[Optional[int], bytes]

# `mpirun --tag-output` (Open MPI 4.1) puts `[JOBID,RANK]<stdout>:` or `<stderr>:` before every
# chunk that it reads from a rank, not before every line. So one output line can contain several
# tags: a rank's line split over two reads arrives as `[1,0]<stdout>:text[1,0]<stdout>:\n`.
_OPEN_MPI_TAG = re.compile(rb"\[\d+,(\d+)\]<std(?:out|err)>:")

# `srun --label` puts `RANK: ` before every line, the rank right-aligned with spaces.
_SLURM_LABEL = re.compile(rb"^\s*(\d+): (.*)$", re.DOTALL)


class Demultiplexer(Protocol):
    def feed(self, line: bytes) -> list[RankLine]:
        """Take the next line of the stream; return the rank lines it completes."""

    def flush(self) -> list[RankLine]:
        """Return what is left at the end of the stream, each piece ended with a newline."""


DemultiplexerFactory = Callable[[], Demultiplexer]


class OpenMpiDemultiplexer:
    """Demultiplexer that reassembles the lines of each rank from `mpirun --tag-output`."""

    def __init__(self) -> None:
        # Text of each rank's current line, collected from chunks until its newline arrives.
        self._partial_lines: dict[int, bytes] = {}

    def feed(self, line: bytes) -> list[RankLine]:
        # With one capture group, split returns [untagged, rank, text, rank, text, ...].
        pieces = _OPEN_MPI_TAG.split(line)
        complete: list[RankLine] = []

        untagged = pieces[0]
        if untagged:
            complete.append((None, untagged if untagged.endswith(b"\n") else untagged + b"\n"))

        for index in range(1, len(pieces), 2):
            rank = int(pieces[index])
            text = self._partial_lines.pop(rank, b"") + pieces[index + 1]
            if text.endswith(b"\n"):
                complete.append((rank, text))
            else:
                self._partial_lines[rank] = text
        return complete

    def flush(self) -> list[RankLine]:
        leftovers: list[RankLine] = [(rank, text + b"\n")
                                     for rank, text in sorted(self._partial_lines.items()) if text]
        self._partial_lines.clear()
        return leftovers


class SlurmDemultiplexer:
    """Demultiplexer for `srun --label`, where every line carries its rank."""

    def feed(self, line: bytes) -> list[RankLine]:
        match = _SLURM_LABEL.match(line)
        if match is None:
            return [(None, line)]
        return [(int(match.group(1)), match.group(2))]

    def flush(self) -> list[RankLine]:
        return []
