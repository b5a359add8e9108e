"""Byte sizes: parse human sizes ("512M") and format byte counts. Stdlib only."""

from __future__ import annotations

import math
import re

from .errors import ConfigError

__all__ = ["format_bytes", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SUFFIXES = ("KiB", "MiB", "GiB", "TiB")
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str | int, *, name: str = "size") -> int:
    """Return the number of bytes that ``text`` names.

    Units are binary (``K`` = 1024), as memory limits are; ``name`` is used in
    the error message.

    >>> parse_bytes("512M")
    536870912
    >>> parse_bytes("1.5G")
    1610612736
    >>> parse_bytes("512MiB") == parse_bytes("512mb") == 512 * 1024**2
    True
    >>> parse_bytes("4096")
    4096
    """
    if isinstance(text, bool):
        raise ConfigError(f"{name} must be a size such as 512M, not {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{name} must not be negative, got {text!r}")
        return text
    match = _SIZE.fullmatch(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{name} must be a size such as 512M, 1.5G or 4096, got {text!r}")
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value):
        raise ConfigError(f"{name} is out of range: {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """Format a byte count with a binary unit, keeping the sign.

    >>> format_bytes(512)
    '512 B'
    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(-3 * 1024**2)
    '-3.0 MiB'
    """
    sign = "-" if n < 0 else ""
    value = abs(float(n))
    if value < 1024:
        return f"{sign}{int(value)} B"
    exponent = min(int(math.log(value, 1024)), len(_SUFFIXES))
    return f"{sign}{value / 1024**exponent:.1f} {_SUFFIXES[exponent - 1]}"
