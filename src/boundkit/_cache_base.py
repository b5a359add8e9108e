"""The lock-free parts of BoundedCache: its entry type, its stats and its validators.

Nothing here holds a lock or touches a cache's state; :mod:`boundkit.cache`
builds the thread-safe mapping on top.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from .errors import ConfigError

K = TypeVar("K")

EvictReason = Literal["capacity", "expired", "rejected", "replaced"]
Evicted = list[tuple[Any, Any, EvictReason]]


class _Sentinel:
    """A named default, so signatures read ``maxsize=<unchanged>``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


MISSING: Any = _Sentinel("no default")
UNCHANGED: Any = _Sentinel("unchanged")


class Entry(float):
    """One stored value; the float itself is the time it expires (``inf``: never).

    A float subclass with two slots is the smallest object that carries a
    value, its expiry and its size: smaller than a tuple plus a float.
    Entries are never changed once stored (lock-free readers may hold one).
    """

    __slots__ = ("size", "value")
    value: Any
    size: int


@dataclass(frozen=True)
class CacheStats:
    """Counters and bounds of one :class:`~boundkit.cache.BoundedCache`.

    ``entries`` and ``bytes`` count what the cache holds now, expired entries
    not yet dropped included; ``bytes`` is None when there is no ``max_bytes``
    (nothing is estimated then). ``hit_rate`` is ``hits / (hits + misses)``,
    0.0 before the first lookup.
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    rejections: int
    entries: int
    bytes: int | None
    max_bytes: int | None
    maxsize: int | None
    hit_rate: float

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as a JSON-ready dict."""
        return asdict(self)


CacheStats.__module__ = "boundkit.cache"


def check_bound(name: str, value: float | None, *, integer: bool) -> float:
    """Validate one bound and return it as a number, ``inf`` for no bound."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if math.isnan(value) or value <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    if integer and value != math.inf and value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    return value


def check_fraction(fraction: float) -> float:
    """Validate a fraction for ``shrink()``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError(f"fraction must be a number from 0 to 1, got {fraction!r}")
    if not 0 <= fraction <= 1:
        raise ConfigError(f"fraction must be from 0 to 1, got {fraction!r}")
    return float(fraction)


def snapshot(data: OrderedDict[K, Entry]) -> list[tuple[K, Entry]]:
    """Copy ``data``'s items in recency order; call with the cache's lock held.

    Lock-free hits reorder ``data`` (``move_to_end``) while a lock holder reads
    it. ``list(data.items())`` is one C call that runs no Python code for the
    common keys, so under the GIL no hit can land inside it; if one does (a
    garbage-collector finalizer ran Python code mid-copy and the interpreter
    switched threads), the iterator raises RuntimeError and the copy is
    simply taken again. Only the order can change meanwhile, never the
    entries, because every other change takes the lock.
    """
    while True:
        try:
            return list(data.items())
        except RuntimeError:  # reordered by a lock-free hit mid-copy: copy again
            continue
