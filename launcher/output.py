"""Relay rank output to the launcher's stdout with a `[rank N] ` prefix and to one log file per rank.

Every line is written whole under one lock, so lines of different ranks never interleave inside
a line. Bytes are passed through undecoded, so output in any encoding arrives unchanged.
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO, Optional

from .tagged import DemultiplexerFactory

class OutputRelay:
    """Relay that copies the output streams of ranks to stdout (prefixed) and to per-rank logs."""

    def __init__(self, log_dir: str, stdout: BinaryIO) -> None:
        self._log_dir = log_dir
        self._stdout = stdout
        self._lock = threading.Lock()
        # Keyed by rank number, or by the tool's name for lines that carry no rank.
        self._log_files: dict[object, BinaryIO] = {}
        self._threads: list[threading.Thread] = []

    def log_path(self, source: object) -> str:
        """Return the log file of a rank (an int) or of a tool like mpirun (its name)."""
        if isinstance(source, int):
            return os.path.join(self._log_dir, f"rank-{source}.log")
        return os.path.join(self._log_dir, f"{source}.log")

    def open_rank_log(self, rank: int) -> None:
        """Create the log file of `rank` now, so that a rank without output still has one."""
        with self._lock:
            self._log_file(rank)

    def follow(self, stream: BinaryIO, rank: Optional[int],
               demultiplexer_factory: Optional[DemultiplexerFactory] = None,
               tool: str = "launcher") -> None:
        """Start a thread that relays `stream` until it ends.

        Lines belong to `rank`, or, when `demultiplexer_factory` is given, to the ranks that its
        demultiplexer finds in a tagged stream of mpirun or srun. Lines without a rank are
        labeled and logged with the name of the tool that wrote them.
        """
        thread = threading.Thread(
            target=self._relay, args=(stream, rank, demultiplexer_factory, tool),
            name=f"relay-{rank}", daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def join(self, timeout_s: float) -> None:
        """Wait for the relay threads to reach the end of their streams, then close the logs.

        A stream still held open by a leftover grandchild does not block longer than timeout_s.
        """
        for thread in self._threads:
            thread.join(timeout_s)
        with self._lock:
            for log_file in self._log_files.values():
                log_file.close()
            self._log_files.clear()

    def _relay(self, stream: BinaryIO, rank: Optional[int],
               demultiplexer_factory: Optional[DemultiplexerFactory], tool: str) -> None:
        if demultiplexer_factory is None:
            with stream:
                for line in iter(stream.readline, b""):
                    if not line.endswith(b"\n"):
                        line += b"\n"
                    self._write(tool if rank is None else rank, line)
            return

        demultiplexer = demultiplexer_factory()
        with stream:
            for line in iter(stream.readline, b""):
                for line_rank, text in demultiplexer.feed(line):
                    self._write(tool if line_rank is None else line_rank, text)
        for line_rank, text in demultiplexer.flush():
            self._write(tool if line_rank is None else line_rank, text)

    def _write(self, source: object, text: bytes) -> None:
        label = f"rank {source}" if isinstance(source, int) else str(source)
        with self._lock:
            log_file = self._log_file(source)
            log_file.write(text)
            log_file.flush()
            try:
                self._stdout.write(b"[" + label.encode() + b"] " + text)
                self._stdout.flush()
            except (BrokenPipeError, ValueError):
                # stdout was closed by the reader (for example `| head`); keep the log files.
                pass

    def _log_file(self, source: object) -> BinaryIO:
        log_file = self._log_files.get(source)
        if log_file is None:
            log_file = open(self.log_path(source), "ab")
            self._log_files[source] = log_file
        return log_file
