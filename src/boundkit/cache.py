"""BoundedCache: an LRU mapping bounded at once by entries, estimated bytes and age.

An ``OrderedDict`` holds the entries in recency order (least recently used
first). A hit takes no lock: it is one dict lookup, a clock read and one
``move_to_end``, each an atomic C call under the GIL (see "Threads" in
docs/cache.md for the reasoning). Everything that adds, removes or counts
entries takes one lock, for a handful of dict operations: sizes are estimated
before it is taken and ``on_evict`` callbacks run after it is released.
Expired entries are never returned; they are dropped when touched, when they
reach the LRU end, and by :meth:`BoundedCache.expire`.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any, Generic, TypeVar, overload

from ._cache_base import (
    MISSING,
    UNCHANGED,
    CacheStats,
    Entry,
    EvictReason,
    Evicted,
    check_bound,
    check_fraction,
    snapshot,
)
from ._cached import CachedFunction, CacheInfo, cached
from ._sizes import estimate_size
from .errors import ConfigError

__all__ = ["BoundedCache", "CacheInfo", "CacheStats", "CachedFunction", "EvictReason", "cached"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_log = logging.getLogger(__name__)

#: False on a free-threaded CPython running without the GIL: hits then take the lock.
GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


class BoundedCache(MutableMapping[K, V], Generic[K, V]):
    """A thread-safe LRU cache bounded by entries, estimated bytes and time to live.

    Give at least one of ``maxsize`` (entries), ``max_bytes`` (the sum of
    ``sizeof(value)``) and ``ttl`` (seconds from the write). After every
    operation both ``maxsize`` and ``max_bytes`` hold: the least recently used
    entries are evicted first. A value whose size alone exceeds ``max_bytes``
    is not stored, replacing any older value under its key, and counts as a
    rejection. ``sizeof`` is only called when ``max_bytes`` is set.
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
        max_bytes: int | None = None,
        ttl: float | None = None,
        sizeof: Callable[[Any], int] = estimate_size,
        timer: Callable[[], float] = time.monotonic,
        on_evict: Callable[[K, V, EvictReason], object] | None = None,
    ) -> None:
        self._max_entries = check_bound("maxsize", maxsize, integer=True)
        self._max_bytes = check_bound("max_bytes", max_bytes, integer=True)
        self._ttl = check_bound("ttl", ttl, integer=False)
        if math.inf == self._max_entries == self._max_bytes == self._ttl:
            raise ConfigError("give at least one finite bound: maxsize, max_bytes or ttl")
        self._sizeof = sizeof
        self._timer = timer
        self._on_evict = on_evict
        self._data: OrderedDict[K, Entry] = OrderedDict()
        self._refresh = self._data.move_to_end
        self._lock = threading.Lock()
        self._sized = self._max_bytes != math.inf
        self._timed = self._ttl != math.inf
        # Sizes are held in units of _unit bytes: estimate_size counts whole 8-byte words,
        # so most entries' sizes stay small enough to be CPython's shared small ints.
        self._unit = 8 if sizeof is estimate_size else 1
        self._max_weight = self._max_bytes / self._unit
        self._weight = 0
        # Hits are counted without the lock: next() on an itertools.count is one C call.
        # stats() reads it with next() too, and subtracts the reads it made.
        self._hits = itertools.count()
        self._hit_reads = 0
        self._misses = 0
        self._evictions = self._expirations = self._rejections = 0

    # -- reading -----------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        # The lock-free hit path; keep it to one lookup, one clock read, one move_to_end.
        try:
            entry = self._data[key]
        except KeyError:
            return self._locked_getitem(key)
        if self._timed and self._timer() >= entry:
            return self._locked_getitem(key)
        try:
            self._refresh(key)
        except KeyError:
            pass  # removed by another thread since the lookup: this hit came first
        next(self._hits)
        return entry.value  # type: ignore[no-any-return]

    def __missing__(self, key: K) -> V:
        raise KeyError(key)

    @overload
    def get(self, key: K, default: None = None) -> V | None: ...
    @overload
    def get(self, key: K, default: T) -> V | T: ...
    def get(self, key: K, default: object = None) -> object:
        """Return the value under ``key`` (refreshing its recency), or ``default``."""
        entry = self._data.get(key)
        if entry is None or (self._timed and self._timer() >= entry):
            return self._lookup(key, default)
        try:
            self._refresh(key)
        except KeyError:
            pass  # removed by another thread since the lookup: this hit came first
        next(self._hits)
        return entry.value

    def _locked_getitem(self, key: K) -> V:
        """``cache[key]`` under the lock: a miss, an expired entry, or no GIL."""
        value = self._lookup(key, MISSING)
        if value is MISSING:
            return self.__missing__(key)
        return value  # type: ignore[no-any-return]

    def _locked_get(self, key: K, default: object = None) -> object:
        """``get()`` under the lock (the free-threaded build's hit path)."""
        return self._lookup(key, default)

    def _lookup(self, key: K, default: object) -> object:
        """Look ``key`` up again under the lock, so a miss is decided by the lock holder.

        A lock-free lookup can miss a key that a writer holding the lock has
        popped and is about to store again; here that writer has finished.
        """
        dropped = None
        lock = self._lock
        lock.acquire()
        try:
            entry = self._data.get(key)
            if entry is not None:
                if not self._timed or self._timer() < entry:
                    self._refresh(key)
                    next(self._hits)
                    return entry.value
                dropped = self._drop_expired(key, entry)
            self._misses += 1
        finally:
            lock.release()
        if dropped:
            self._notify(dropped)
        return default

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

    def _store(self, key: K, value: V, ttl: float, *, replace: bool) -> V:
        """Store an entry and evict down to the bounds; return the value now under ``key``."""
        size = 0
        if self._sized:
            size = self._sizeof(value)
            if not (isinstance(size, int) and size >= 0):
                raise ConfigError(f"sizeof must return a non-negative int, got {size!r}")
            size = -(-size // self._unit)
        if ttl != math.inf:
            self._timed = True
        now = self._timer() if self._timed else -math.inf
        entry = Entry(math.inf if ttl == math.inf else now + ttl)
        entry.value = value
        entry.size = size
        dropped: Evicted = []
        lock = self._lock
        lock.acquire()
        try:
            data = self._data
            old = data.pop(key, None)
            if old is not None:
                self._weight -= old.size
                if now < old:
                    if not replace:
                        data[key] = old
                        self._weight += old.size
                        return old.value  # type: ignore[no-any-return]
                    dropped.append((key, old.value, "replaced"))
                else:
                    self._expirations += 1
                    dropped.append((key, old.value, "expired"))
            if size > self._max_weight:
                self._rejections += 1
                dropped.append((key, value, "rejected"))
            else:
                # Make room first, so len(data) never exceeds maxsize, not even for
                # lock-free readers of len() mid-insert; the new entry is not at risk.
                if len(data) >= self._max_entries or self._weight + size > self._max_weight:
                    self._evict_to(self._max_entries - 1, self._max_weight - size, now, dropped)
                data[key] = entry
                self._weight += size
        finally:
            lock.release()
        if dropped and self._on_evict is not None:
            self._notify(dropped)
        return value

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
            data = self._data
            for key, entry in snapshot(data):
                if now < entry:
                    continue
                del data[key]
                self._weight -= entry.size
                dropped.append((key, entry.value, "expired"))
            self._expirations += len(dropped)
        self._notify(dropped)
        return len(dropped)

    def resize(
        self, maxsize: int | None = UNCHANGED, *, max_bytes: int | None = UNCHANGED
    ) -> None:
        """Change the bounds (None removes one) and evict down to them at once.

        Turning ``max_bytes`` on estimates every entry held, under the lock.
        """
        entries = self._max_entries if maxsize is UNCHANGED else maxsize
        budget = self._max_bytes if max_bytes is UNCHANGED else max_bytes
        new_entries = check_bound(
            "maxsize", None if entries == math.inf else entries, integer=True
        )
        new_bytes = check_bound("max_bytes", None if budget == math.inf else budget, integer=True)
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
                for key, entry in snapshot(data):
                    if now < entry:
                        continue
                    del data[key]
                    self._weight -= entry.size
                    dropped.append((key, entry.value, "expired"))
                self._expirations += len(dropped)
            self._evict_to(entries_target, weight_target, now, dropped)
        self._notify(dropped)
        return len(dropped)

    def _evict_to(
        self, max_entries: float, max_weight: float, now: float, dropped: Evicted
    ) -> None:
        """Pop least recently used entries until both limits hold; call with the lock held."""
        data = self._data
        while data and (len(data) > max_entries or self._weight > max_weight):
            key, entry = data.popitem(last=False)
            self._weight -= entry.size
            if entry <= now:
                self._expirations += 1
                dropped.append((key, entry.value, "expired"))
            else:
                self._evictions += 1
                dropped.append((key, entry.value, "capacity"))

    def _drop_expired(self, key: K, entry: Entry) -> Evicted:
        """Remove one expired entry; call with the lock held."""
        del self._data[key]
        self._weight -= entry.size
        self._expirations += 1
        return [(key, entry.value, "expired")]

    def _reweigh(self, sizeof: Callable[[Any], int] | None) -> None:
        """Re-size every entry with ``sizeof`` (None: stop sizing); call with the lock held.

        Entries are replaced, not changed, because copies of the cache share them.
        """
        self._weight = 0
        for key, entry in snapshot(self._data):
            fresh = Entry(entry)
            fresh.value = entry.value
            fresh.size = 0 if sizeof is None else -(-sizeof(entry.value) // self._unit)
            self._data[key] = fresh
            self._weight += fresh.size
        self._sized = sizeof is not None

    def _notify(self, dropped: Evicted) -> None:
        callback = self._on_evict
        if callback is None:
            return
        for key, value, reason in dropped:
            try:
                callback(key, value, reason)
            except Exception:
                _log.exception("on_evict raised for a %s entry; the cache is unaffected", reason)

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
            hits = self._count_hits()
            lookups = hits + self._misses
            return CacheStats(
                hits=hits,
                misses=self._misses,
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

    def _count_hits(self) -> int:
        """The hits so far; call with the lock held (each read advances the counter once)."""
        hits = next(self._hits) - self._hit_reads
        self._hit_reads += 1
        return hits

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = self.__dict__.copy()
            state["_data"] = OrderedDict(snapshot(self._data))
            state["_hits"] = self._count_hits()
        del state["_lock"], state["_refresh"], state["_hit_reads"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._hits = itertools.count(state["_hits"])
        self._hit_reads = 0
        self._refresh = self._data.move_to_end
        self._lock = threading.Lock()


if not GIL_ENABLED:  # pragma: no cover - free-threaded CPython only
    # Without the GIL, OrderedDict calls from two threads are not atomic: hits take the lock.
    setattr(BoundedCache, "__getitem__", BoundedCache._locked_getitem)  # noqa: B010
    setattr(BoundedCache, "get", BoundedCache._locked_get)  # noqa: B010
