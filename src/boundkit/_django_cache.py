"""``boundkit.django.BoundedCacheBackend``: Django's local-memory cache, bounded by bytes too.

Values are pickled as ``LocMemCache`` pickles them (callers never share a
cached object) and held in a :class:`~boundkit.BoundedCache` sized by the
pickled bytes. Imported by :mod:`boundkit.django` on first use, so that
importing boundkit never imports Django.
"""

from __future__ import annotations

import math
import pickle
import sys
import threading
import time
from typing import Any

from django.core.cache.backends.base import (  # type: ignore[import-untyped]
    DEFAULT_TIMEOUT,
    BaseCache,
)

from ._sizes import parse_bytes
from ._store_backed import StoreBacked
from .cache import BoundedCache
from .errors import ConfigError

__all__ = ["BoundedCacheBackend"]

_DEFAULT_MAX_BYTES = "32M"
# A stored item is a (pickled bytes, expiry) tuple; what it adds to the bytes it holds.
_ITEM_OVERHEAD = sys.getsizeof((b"", 0.0)) + sys.getsizeof(0.0)

# Stores shared by every backend with the same LOCATION and bounds, as LocMemCache
# shares one store per LOCATION: Django makes a backend object per thread.
_stores: dict[tuple[str, int | None, int | None], tuple[BoundedCache[str, Any], threading.Lock]]
_stores = {}
_stores_lock = threading.Lock()


def _item_size(item: tuple[bytes, float]) -> int:
    return sys.getsizeof(item[0]) + _ITEM_OVERHEAD


def _store_for(
    location: str, max_entries: int | None, max_bytes: int | None
) -> tuple[BoundedCache[str, Any], threading.Lock]:
    key = (location, max_entries, max_bytes)
    with _stores_lock:
        found = _stores.get(key)
        if found is None:
            store: BoundedCache[str, Any] = BoundedCache(
                max_entries, max_bytes=max_bytes, sizeof=_item_size
            )
            found = _stores[key] = (store, threading.Lock())
        return found


class BoundedCacheBackend(StoreBacked, BaseCache):  # type: ignore[misc]
    """A Django cache backend on :class:`~boundkit.BoundedCache`, for ``CACHES``.

    ``OPTIONS``: ``MAX_BYTES`` (a size such as ``"64M"``, the sum of the pickled
    values, default ``"32M"``; ``None`` for no byte bound), ``MAX_ENTRIES``
    (default 300, as Django's) and ``TIMEOUT`` (seconds, or give Django's
    top-level ``TIMEOUT``). The least recently used entries are evicted, one
    at a time, to keep both bounds; ``CULL_FREQUENCY`` is not used. Backends
    with the same ``LOCATION`` and bounds share one store, as
    ``LocMemCache``'s do. ``stats()`` counts the pickled bytes; register the
    backend with the memory guard (``guard.register_cache(caches["default"])``)
    to have it shrunk under pressure.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        if "TIMEOUT" in options:
            if "TIMEOUT" in params or "timeout" in params:
                raise ConfigError("give TIMEOUT either in OPTIONS or beside it, not both")
            params = {**params, "TIMEOUT": options.pop("TIMEOUT")}
        max_bytes = options.pop("MAX_BYTES", _DEFAULT_MAX_BYTES)
        super().__init__({**params, "OPTIONS": options})
        if self._max_entries <= 0:
            raise ConfigError(f"MAX_ENTRIES must be positive, got {self._max_entries!r}")
        budget = None if max_bytes is None else parse_bytes(max_bytes, name="MAX_BYTES")
        if budget == 0:
            raise ConfigError("MAX_BYTES must be more than zero bytes, got 0")
        self._store, self._lock = _store_for(location, self._max_entries, budget)

    # -- the entry path ----------------------------------------------------

    def _ttl(self, timeout: Any) -> float:
        """Seconds to live for a Django ``timeout`` (inf: never expires; <= 0: gone now)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return math.inf if timeout is None else float(timeout)

    def _put(self, key: str, pickled: bytes, ttl: float) -> None:
        """Store under the key's lock-free path; a timeout <= 0 deletes, as Django's do."""
        if ttl <= 0:
            self._store.pop(key, None)
            return
        self._store.set(key, (pickled, time.monotonic() + ttl), ttl=ttl)

    def _live(self, key: str) -> tuple[bytes, float] | None:
        item: tuple[bytes, float] | None = self._store.get(key)
        return item

    # -- Django's cache API --------------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        item = self._store.get(key)
        if item is None:
            return default
        return pickle.loads(item[0])

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        key = self.make_and_validate_key(key, version=version)
        pickled = pickle.dumps(value, self.pickle_protocol)
        with self._lock:  # so that an incr() in progress cannot overwrite it
            self._put(key, pickled, self._ttl(timeout))

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        pickled = pickle.dumps(value, self.pickle_protocol)
        with self._lock:
            if key in self._store:
                return False
            self._put(key, pickled, self._ttl(timeout))
            return True

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            item = self._live(key)
            if item is None:
                return False
            self._put(key, item[0], self._ttl(timeout))
            return True

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            item = self._live(key)
            if item is None:
                raise ValueError(f"Key '{key}' not found")
            new_value = pickle.loads(item[0]) + delta
            pickled = pickle.dumps(new_value, self.pickle_protocol)
            ttl = item[1] - time.monotonic()  # incr keeps the expiry, as Django's backends do
            if ttl > 0:
                self._store.set(key, (pickled, item[1]), ttl=ttl)
            else:
                self._store.pop(key, None)
        return new_value

    def has_key(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return key in self._store

    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            return self._store.pop(key, None) is not None

    def clear(self) -> None:
        self._store.clear()
