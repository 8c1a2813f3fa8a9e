"""Parse and format memory sizes such as 512M, 1.5G or 4096 (binary units: 1K = 1024 bytes)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Return the number of bytes in a size like "512M", "1.5G", "64KiB" or "4096".

    Raises ValueError for anything else, and for a size below one byte.
    """
    match = _SIZE_PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"invalid size {text!r}: expected a number of bytes, optionally with a binary "
            "unit K, M, G or T (for example 512M or 1.5G)")

    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.upper()])
    if size < 1:
        raise ValueError(f"invalid size {text!r}: must be at least 1 byte")
    return size


def format_size(size: int) -> str:
    """Return size in bytes as a short text with a binary unit, like "1.5 GiB"."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
