"""The core of BoundedCache: entries, bounds, eviction under the lock, and its stats.

:class:`CacheCore` holds a cache's state and makes every change to it under
one lock; :mod:`boundkit.cache` builds the public mapping, with its lock-free
hit path, on top.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar

from ._accel import speedups
from ._sizes import estimate_size, parse_bytes
from .errors import ConfigError

K = TypeVar("K")
V = TypeVar("V")
_log = logging.getLogger("boundkit.cache")

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


if speedups is not None:
    speedups.set_entry_type(Entry)


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


def check_byte_bound(max_bytes: float | str | None) -> float:
    """Validate ``max_bytes``: bytes or a size such as ``"64M"``; ``inf`` for no bound."""
    if isinstance(max_bytes, str):
        max_bytes = parse_bytes(max_bytes, name="max_bytes")
    return check_bound("max_bytes", max_bytes, integer=True)


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
    for _ in range(99):
        try:
            return list(data.items())
        except RuntimeError:  # reordered by a lock-free hit mid-copy: copy again
            continue
    return list(data.items())  # a RuntimeError a hundred times over is not a reorder


class CacheCore(Generic[K, V]):
    """The state of a BoundedCache and every change to it made under its lock.

    The public mapping (:class:`boundkit.cache.BoundedCache`) reads entries
    lock-free and calls these methods for everything else.
    """

    # Lookups the C hit path (boundkit._speedups.CacheLookups) counted; 0 without it.
    _c_hits: int = 0
    _c_misses: int = 0

    def __init__(
        self,
        bounds: tuple[float, float, float],
        sizeof: Callable[[Any], int],
        timer: Callable[[], float],
        on_evict: Callable[[K, V, EvictReason], object] | None,
    ) -> None:
        """Set up an empty cache; ``bounds`` are entries, bytes and ttl, ``inf`` for none."""
        self._max_entries, self._max_bytes, self._ttl = bounds
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
        # Lookups are counted without the lock: next() on an itertools.count is one C
        # call. stats() reads the counts with next() too, and subtracts its own reads.
        self._hits = itertools.count()
        self._misses = itertools.count()
        self._counter_reads = 0
        self._evictions = self._expirations = self._rejections = 0

    def __missing__(self, key: K) -> V:
        raise KeyError(key)

    def _locked_getitem(self, key: K) -> V:
        """``cache[key]`` under the lock: a miss, an expired entry, or no GIL."""
        value = self._lookup(key, MISSING)
        if value is MISSING:
            return self.__missing__(key)
        return value  # type: ignore[return-value]

    def _locked_get(self, key: K, default: object = None) -> object:
        """``get()`` under the lock (the free-threaded build's hit path)."""
        return self._lookup(key, default)

    def _lookup(self, key: K, default: object) -> object:
        """Look ``key`` up under the lock: to drop an entry found expired, and for
        every lookup on a free-threaded build (see ``GIL_ENABLED`` in _accel.py)."""
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
            next(self._misses)
        finally:
            lock.release()
        if dropped:
            self._notify(dropped)
        return default

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
            # A key being replaced stays in the dict throughout (replaced in place, after
            # a move to the recent end), so a lock-free lookup never misses it meanwhile.
            data = self._data
            old = data.get(key)
            if old is not None:
                data.move_to_end(key)
                self._weight -= old.size
                if now < old:
                    if not replace:
                        self._weight += old.size
                        return old.value  # type: ignore[no-any-return]
                    dropped.append((key, old.value, "replaced"))
                else:
                    self._expirations += 1
                    dropped.append((key, old.value, "expired"))
            if size > self._max_weight:
                if old is not None:
                    del data[key]
                self._rejections += 1
                dropped.append((key, value, "rejected"))
            elif old is not None:
                data[key] = entry  # at the recent end already: eviction stops before it
                self._weight += size
                if self._weight > self._max_weight:
                    self._evict_to(self._max_entries, self._max_weight, now, dropped)
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

    def _count_lookups(self) -> tuple[int, int]:
        """The hits and misses so far; call with the lock held (each read counts once)."""
        reads = self._counter_reads
        self._counter_reads += 1
        hits = next(self._hits) - reads + self._c_hits
        return hits, next(self._misses) - reads + self._c_misses

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = self.__dict__.copy()
            # named, since the C hit path keeps them in its own fields, not in __dict__
            state.update(
                _data=OrderedDict(snapshot(self._data)), _timer=self._timer, _timed=self._timed
            )
            state["_hits"], state["_misses"] = self._count_lookups()
        state.pop("_refresh", None)
        del state["_lock"], state["_counter_reads"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._hits = itertools.count(state["_hits"])
        self._misses = itertools.count(state["_misses"])
        self._counter_reads = 0
        self._refresh = self._data.move_to_end
        self._lock = threading.Lock()
