"""BoundedCache: an LRU mapping bounded at once by entries, estimated bytes and age.

One lock guards an ``OrderedDict`` kept in recency order (least recently used
first). Sizes are estimated and clocks read before the lock is taken, and
``on_evict`` callbacks run after it is released, so the work done inside the
lock is a handful of dict operations. Expired entries are never returned; they
are dropped when touched, when they reach the LRU end, and by :meth:`expire`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar, overload

from ._cached import CachedFunction, CacheInfo, cached
from ._sizes import estimate_size
from .errors import ConfigError

__all__ = ["BoundedCache", "CacheInfo", "CacheStats", "CachedFunction", "EvictReason", "cached"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

EvictReason = Literal["capacity", "expired", "rejected", "replaced"]
_log = logging.getLogger(__name__)


class _Sentinel:
    """A named default, so signatures read ``maxsize=<unchanged>``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_MISSING: Any = _Sentinel("no default")
_UNCHANGED: Any = _Sentinel("unchanged")
_Evicted = list[tuple[Any, Any, EvictReason]]


class _Entry(float):
    """One stored value; the float itself is the time it expires (``inf``: never).

    A float subclass with two slots is the smallest object that carries a
    value, its expiry and its size: smaller than a tuple plus a float.
    """

    __slots__ = ("size", "value")
    value: Any
    size: int


@dataclass(frozen=True)
class CacheStats:
    """Counters and bounds of one :class:`BoundedCache`.

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


def _check_bound(name: str, value: float | None, *, integer: bool) -> float:
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


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError(f"fraction must be a number from 0 to 1, got {fraction!r}")
    if not 0 <= fraction <= 1:
        raise ConfigError(f"fraction must be from 0 to 1, got {fraction!r}")
    return float(fraction)


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
        self._max_entries = _check_bound("maxsize", maxsize, integer=True)
        self._max_bytes = _check_bound("max_bytes", max_bytes, integer=True)
        self._ttl = _check_bound("ttl", ttl, integer=False)
        if math.inf == self._max_entries == self._max_bytes == self._ttl:
            raise ConfigError("give at least one finite bound: maxsize, max_bytes or ttl")
        self._sizeof = sizeof
        self._timer = timer
        self._on_evict = on_evict
        self._data: OrderedDict[K, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._sized = self._max_bytes != math.inf
        self._timed = self._ttl != math.inf
        # Sizes are held in units of _unit bytes: estimate_size counts whole 8-byte words,
        # so most entries' sizes stay small enough to be CPython's shared small ints.
        self._unit = 8 if sizeof is estimate_size else 1
        self._max_weight = self._max_bytes / self._unit
        self._weight = 0
        self._hits = self._misses = 0
        self._evictions = self._expirations = self._rejections = 0

    # -- reading -----------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        lock = self._lock
        lock.acquire()
        try:
            data = self._data
            try:
                entry = data[key]
            except KeyError:
                dropped = None
            else:
                if not self._timed or self._timer() < entry:
                    data.move_to_end(key)
                    self._hits += 1
                    return entry.value  # type: ignore[no-any-return]
                dropped = self._drop_expired(key, entry)
            self._misses += 1
        finally:
            lock.release()
        if dropped:
            self._notify(dropped)
        return self.__missing__(key)

    def __missing__(self, key: K) -> V:
        raise KeyError(key)

    @overload
    def get(self, key: K, default: None = None) -> V | None: ...
    @overload
    def get(self, key: K, default: T) -> V | T: ...
    def get(self, key: K, default: object = None) -> object:
        """Return the value under ``key`` (refreshing its recency), or ``default``."""
        lock = self._lock
        lock.acquire()
        try:
            entry = self._data.get(key)
            if entry is None:
                dropped = None
            elif not self._timed or self._timer() < entry:
                self._data.move_to_end(key)
                self._hits += 1
                return entry.value
            else:
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
            return sum(1 for entry in self._data.values() if now < entry)

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
            return [(key, entry.value) for key, entry in self._data.items() if now < entry]

    # -- writing -----------------------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        self._store(key, value, self._ttl, replace=True)

    def set(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (default: the cache's).

        ``ttl=math.inf`` stores an entry that never expires.
        """
        entry_ttl = self._ttl if ttl is None else _check_bound("ttl", ttl, integer=False)
        self._store(key, value, entry_ttl, replace=True)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        """Return the live value under ``key``; store and return ``default`` if there is none."""
        value = self.get(key, _MISSING)
        if value is not _MISSING:
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
        entry = _Entry(math.inf if ttl == math.inf else now + ttl)
        entry.value = value
        entry.size = size
        dropped: _Evicted = []
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
                data[key] = entry
                self._weight += size
                if len(data) > self._max_entries or self._weight > self._max_weight:
                    self._evict_to(self._max_entries, self._max_weight, now, dropped)
        finally:
            lock.release()
        if dropped and self._on_evict is not None:
            self._notify(dropped)
        return value

    # -- removing ----------------------------------------------------------

    def __delitem__(self, key: K) -> None:
        self.pop(key)

    def pop(self, key: K, default: Any = _MISSING) -> Any:
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
            if default is _MISSING:
                raise KeyError(key)
            return default
        return entry.value

    def popitem(self) -> tuple[K, V]:
        """Remove and return the least recently used live ``(key, value)`` pair."""
        dropped: _Evicted = []
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
        dropped: _Evicted = []
        now = self._timer()
        with self._lock:
            data = self._data
            for key in [key for key, entry in data.items() if entry <= now]:
                entry = data.pop(key)
                self._weight -= entry.size
                dropped.append((key, entry.value, "expired"))
            self._expirations += len(dropped)
        self._notify(dropped)
        return len(dropped)

    def resize(
        self, maxsize: int | None = _UNCHANGED, *, max_bytes: int | None = _UNCHANGED
    ) -> None:
        """Change the bounds (None removes one) and evict down to them at once.

        Turning ``max_bytes`` on estimates every entry held, under the lock.
        """
        entries = self._max_entries if maxsize is _UNCHANGED else maxsize
        budget = self._max_bytes if max_bytes is _UNCHANGED else max_bytes
        new_entries = _check_bound(
            "maxsize", None if entries == math.inf else entries, integer=True
        )
        new_bytes = _check_bound("max_bytes", None if budget == math.inf else budget, integer=True)
        if math.inf == new_entries == new_bytes == self._ttl:
            raise ConfigError("give at least one finite bound: maxsize, max_bytes or ttl")
        dropped: _Evicted = []
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
        fraction = _check_fraction(fraction)
        dropped: _Evicted = []
        now = self._timer() if self._timed else -math.inf
        with self._lock:
            data = self._data
            entries_target = math.floor(len(data) * (1 - fraction))
            weight_target = self._weight * (1 - fraction)
            if self._timed:
                for key in [key for key, entry in data.items() if entry <= now]:
                    entry = data.pop(key)
                    self._weight -= entry.size
                    dropped.append((key, entry.value, "expired"))
                self._expirations += len(dropped)
            self._evict_to(entries_target, weight_target, now, dropped)
        self._notify(dropped)
        return len(dropped)

    def _evict_to(
        self, max_entries: float, max_weight: float, now: float, dropped: _Evicted
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

    def _drop_expired(self, key: K, entry: _Entry) -> _Evicted:
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
        for key, entry in list(self._data.items()):
            fresh = _Entry(entry)
            fresh.value = entry.value
            fresh.size = 0 if sizeof is None else -(-sizeof(entry.value) // self._unit)
            self._data[key] = fresh
            self._weight += fresh.size
        self._sized = sizeof is not None

    def _notify(self, dropped: _Evicted) -> None:
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
            lookups = self._hits + self._misses
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expirations=self._expirations,
                rejections=self._rejections,
                entries=len(self._data),
                bytes=self._weight * self._unit if self._sized else None,
                max_bytes=self.max_bytes,
                maxsize=self.maxsize,
                hit_rate=self._hits / lookups if lookups else 0.0,
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(maxsize={self.maxsize!r}, max_bytes={self.max_bytes!r}, "
            f"ttl={self.ttl!r}, entries={len(self._data)})"
        )

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = self.__dict__.copy()
            state["_data"] = self._data.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
