"""BoundedCache: an LRU mapping bounded at once by entries, estimated bytes and age.

An ``OrderedDict`` holds the entries in recency order (least recently used
first). A lookup takes no lock: a hit is one dict lookup, a clock read and one
``move_to_end``, a miss one dict lookup, each an atomic C call under the GIL
(see "Threads" in docs/cache.md for the reasoning). With the optional C
accelerator (:data:`ACCELERATED`) the whole hit is one C call. Everything that adds or
removes entries takes one lock, for a handful of dict operations: sizes are
estimated before it is taken and ``on_evict`` callbacks run after it is released.
Expired entries are never returned; they are dropped when touched, when they
reach the LRU end, and by :meth:`BoundedCache.expire`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._accel import GIL_ENABLED, speedups
from ._cache_core import (
    MISSING,
    UNCHANGED,
    CacheCore,
    CacheStats,
    Evicted,
    EvictReason,
    check_bound,
    check_byte_bound,
    check_fraction,
    snapshot,
)
from ._cached import CachedFunction, CacheInfo, cached
from ._sizes import estimate_size
from .errors import ConfigError

__all__ = [
    "ACCELERATED",
    "BoundedCache",
    "CacheInfo",
    "CacheStats",
    "CachedFunction",
    "EvictReason",
    "cached",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

#: Whether the C accelerator (``boundkit._speedups``) serves hits and sizes flat values.
ACCELERATED: bool = speedups is not None


class _PyLookups(CacheCore[K, V]):
    """The lock-free hit path in Python (without the C accelerator)."""

    def __getitem__(self, key: K) -> V:
        # The lock-free hit path; keep it to one lookup, one clock read, one move_to_end.
        try:
            entry = self._data[key]
        except KeyError:
            next(self._misses)
            return self.__missing__(key)
        if self._timed and self._timer() >= entry:
            return self._locked_getitem(key)
        try:  # noqa: SIM105 - contextlib.suppress costs a hit 20% more
            self._refresh(key)
        except KeyError:
            pass  # removed by another thread since the lookup: this hit came first
        next(self._hits)
        return entry.value  # type: ignore[no-any-return]

    @overload
    def get(self, key: K, default: None = None) -> V | None: ...
    @overload
    def get(self, key: K, default: T) -> V | T: ...
    def get(self, key: K, default: object = None) -> object:
        """Return the value under ``key`` (refreshing its recency), or ``default``."""
        entry = self._data.get(key)
        if entry is None:
            next(self._misses)
            return default
        if self._timed and self._timer() >= entry:
            return self._lookup(key, default)
        try:  # noqa: SIM105 - contextlib.suppress costs a hit 20% more
            self._refresh(key)
        except KeyError:
            pass  # removed by another thread since the lookup: this hit came first
        next(self._hits)
        return entry.value


if TYPE_CHECKING or speedups is None:
    _Lookups = _PyLookups
else:

    class _Lookups(speedups.CacheLookups, CacheCore[K, V]):
        """The same hit path in C: ``__getitem__`` and ``get`` of boundkit._speedups."""


class BoundedCache(_Lookups[K, V], MutableMapping[K, V]):
    """A thread-safe LRU cache bounded by entries, estimated bytes and time to live.

    Give at least one of ``maxsize`` (entries), ``max_bytes`` (the sum of
    ``sizeof(value)``) and ``ttl`` (seconds from the write). After every
    operation both ``maxsize`` and ``max_bytes`` hold: the least recently used
    entries are evicted first. A value whose size alone exceeds ``max_bytes``
    is not stored, replacing any older value under its key, and counts as a
    rejection. ``max_bytes`` takes bytes or a size such as ``"64M"``.
    ``sizeof`` is only called when ``max_bytes`` is set.
    ``on_evict(key, value, reason)`` is told of every entry the cache drops by
    itself, outside the lock; an exception it raises is logged and ignored.

    >>> cache = BoundedCache(maxsize=2)
    >>> cache["a"] = 1; cache["b"] = 2; cache["a"]; cache["c"] = 3
    1
    >>> sorted(cache)
    ['a', 'c']
    """

    def __init__(
        self,
        maxsize: int | None = None,
        *,
        max_bytes: int | str | None = None,
        ttl: float | None = None,
        sizeof: Callable[[Any], int] = estimate_size,
        timer: Callable[[], float] = time.monotonic,
        on_evict: Callable[[K, V, EvictReason], object] | None = None,
        getsizeof: None = None,
    ) -> None:
        if getsizeof is not None:
            raise TypeError(
                "BoundedCache takes sizeof=, not cachetools' getsizeof=; where cachetools "
                "bounds the sum of getsizeof by maxsize, give BoundedCache(max_bytes=..., "
                f"sizeof=...) (maxsize counts entries), got getsizeof={getsizeof!r}"
            )
        bounds = (
            check_bound("maxsize", maxsize, integer=True),
            check_byte_bound(max_bytes),
            check_bound("ttl", ttl, integer=False),
        )
        super().__init__(bounds, sizeof, timer, on_evict)

    # -- reading -----------------------------------------------------------

    def peek(self, key: K, default: T | None = None) -> V | T | None:
        """Return the value under ``key``, or ``default``, without refreshing its recency."""
        entry = self._data.get(key)
        if entry is None or (self._timed and self._timer() >= entry):
            return default
        return entry.value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds a live value; recency is not refreshed."""
        entry = self._data.get(key)  # type: ignore[arg-type]
        return entry is not None and (not self._timed or self._timer() < entry)

    def __len__(self) -> int:
        """The number of live entries (O(n) while entries can expire)."""
        if not self._timed:
            return len(self._data)
        now = self._timer()
        with self._lock:
            held = snapshot(self._data)
        return sum(1 for _, entry in held if now < entry)

    def __iter__(self) -> Iterator[K]:
        """Iterate over a snapshot of the live keys, least recently used first."""
        return iter([key for key, _ in self._live_items()])

    def items(self) -> ItemsView[K, V]:
        """A snapshot of the live ``(key, value)`` pairs; recency is not refreshed."""
        return dict(self._live_items()).items()

    def values(self) -> ValuesView[V]:
        """A snapshot of the live values; recency is not refreshed."""
        return dict(self._live_items()).values()

    def _live_items(self) -> list[tuple[K, V]]:
        now = self._timer() if self._timed else -math.inf
        with self._lock:
            held = snapshot(self._data)
        return [(key, entry.value) for key, entry in held if now < entry]

    # -- writing -----------------------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        self._store(key, value, self._ttl, replace=True)

    def set(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (default: the cache's).

        ``ttl=math.inf`` stores an entry that never expires.
        """
        entry_ttl = self._ttl if ttl is None else check_bound("ttl", ttl, integer=False)
        self._store(key, value, entry_ttl, replace=True)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        """Return the live value under ``key``; store and return ``default`` if there is none."""
        value = self.get(key, MISSING)
        if value is not MISSING:
            return value  # type: ignore[no-any-return]
        return self._store(key, default, self._ttl, replace=False)

    # -- removing ----------------------------------------------------------

    def __delitem__(self, key: K) -> None:
        self.pop(key)

    def pop(self, key: K, default: Any = MISSING) -> Any:
        """Remove ``key`` and return its live value, else ``default`` (KeyError without one)."""
        now = self._timer() if self._timed else -math.inf
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is not None:
                self._weight -= entry.size
                if entry <= now:
                    self._expirations += 1
        if entry is not None and entry <= now:
            self._notify([(key, entry.value, "expired")])
        if entry is None or entry <= now:
            if default is MISSING:
                raise KeyError(key)
            return default
        return entry.value

    def popitem(self) -> tuple[K, V]:
        """Remove and return the least recently used live ``(key, value)`` pair."""
        dropped: Evicted = []
        try:
            with self._lock:
                now = self._timer() if self._timed else -math.inf
                while self._data:
                    key, entry = self._data.popitem(last=False)
                    self._weight -= entry.size
                    if now < entry:
                        return key, entry.value
                    self._expirations += 1
                    dropped.append((key, entry.value, "expired"))
                raise KeyError(f"{type(self).__name__} is empty") from None
        finally:
            if dropped:
                self._notify(dropped)

    def clear(self) -> None:
        """Remove every entry (``on_evict`` is not called; the counters are kept)."""
        with self._lock:
            self._data.clear()
            self._weight = 0

    def expire(self) -> int:
        """Drop every expired entry now and return how many were dropped."""
        if not self._timed:
            return 0
        dropped: Evicted = []
        now = self._timer()
        with self._lock:
            self._sweep_expired(now, dropped)
        self._notify(dropped)
        return len(dropped)

    def _sweep_expired(self, now: float, dropped: Evicted) -> None:
        """Drop every entry expired at ``now`` into ``dropped``; call with the lock held."""
        data = self._data
        expired = [(key, entry) for key, entry in snapshot(data) if not now < entry]
        for key, entry in expired:
            del data[key]
            self._weight -= entry.size
            dropped.append((key, entry.value, "expired"))
        self._expirations += len(expired)

    def resize(
        self, maxsize: int | None = UNCHANGED, *, max_bytes: int | str | None = UNCHANGED
    ) -> None:
        """Change the bounds (None removes one) and evict down to them at once.

        Turning ``max_bytes`` on estimates every entry held, under the lock.
        """
        entries = self._max_entries if maxsize is UNCHANGED else maxsize
        budget = self._max_bytes if max_bytes is UNCHANGED else max_bytes
        new_entries = check_bound("maxsize", None if entries == math.inf else entries, integer=True)
        new_bytes = check_byte_bound(None if budget == math.inf else budget)
        if math.inf == new_entries == new_bytes == self._ttl:
            raise ConfigError("give at least one finite bound: maxsize, max_bytes or ttl")
        dropped: Evicted = []
        now = self._timer() if self._timed else -math.inf
        with self._lock:
            if (new_bytes != math.inf) != self._sized:
                self._reweigh(self._sizeof if new_bytes != math.inf else None)
            self._max_entries, self._max_bytes = new_entries, new_bytes
            self._max_weight = new_bytes / self._unit
            self._evict_to(new_entries, self._max_weight, now, dropped)
        self._notify(dropped)

    def shrink(self, fraction: float) -> int:
        """Drop expired entries, then the least recently used, until ``fraction`` of
        the entries (and of the bytes) held are gone; return how many were dropped.

        The bounds do not change: the cache may fill again.
        """
        fraction = check_fraction(fraction)
        dropped: Evicted = []
        now = self._timer() if self._timed else -math.inf
        with self._lock:
            data = self._data
            entries_target = math.floor(len(data) * (1 - fraction))
            weight_target = self._weight * (1 - fraction)
            if self._timed:
                self._sweep_expired(now, dropped)
            self._evict_to(entries_target, weight_target, now, dropped)
        self._notify(dropped)
        return len(dropped)

    # -- introspection -----------------------------------------------------

    @property
    def maxsize(self) -> int | None:
        """The entry bound, None when there is none."""
        return None if self._max_entries == math.inf else int(self._max_entries)

    @property
    def max_bytes(self) -> int | None:
        """The byte bound, None when there is none."""
        return None if self._max_bytes == math.inf else int(self._max_bytes)

    @property
    def ttl(self) -> float | None:
        """The default time to live in seconds, None when entries do not expire by default."""
        return None if self._ttl == math.inf else self._ttl

    @property
    def currsize(self) -> int:
        """The number of live entries, as ``cachetools`` caches report it."""
        return len(self)

    def stats(self) -> CacheStats:
        """Return the counters and bounds as a frozen :class:`CacheStats`."""
        with self._lock:
            hits, misses = self._count_lookups()
            lookups = hits + misses
            return CacheStats(
                hits=hits,
                misses=misses,
                evictions=self._evictions,
                expirations=self._expirations,
                rejections=self._rejections,
                entries=len(self._data),
                bytes=self._weight * self._unit if self._sized else None,
                max_bytes=self.max_bytes,
                maxsize=self.maxsize,
                hit_rate=hits / lookups if lookups else 0.0,
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(maxsize={self.maxsize!r}, max_bytes={self.max_bytes!r}, "
            f"ttl={self.ttl!r}, entries={len(self._data)})"
        )


if not GIL_ENABLED:  # pragma: no cover - free-threaded CPython only
    # Without the GIL, OrderedDict calls from two threads are not atomic: hits take the lock.
    setattr(BoundedCache, "__getitem__", BoundedCache._locked_getitem)  # noqa: B010
    setattr(BoundedCache, "get", BoundedCache._locked_get)  # noqa: B010
