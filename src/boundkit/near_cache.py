"""A near cache for redis-py: its client-side cache, bounded by bytes as well as entries.

``redis.Redis(protocol=3, cache=NearCache(max_bytes="64M"))`` keeps a local
copy of what the client reads, invalidated by the server (RESP3 client
tracking, redis-py 5.1+), in a :class:`~boundkit.BoundedCache`: the least
recently used replies go first whenever the entries or their estimated bytes
would exceed a bound. Importing this module imports redis; importing boundkit
does not.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

from ._extras import raise_if_extra_missing

try:
    from redis.cache import (
        CacheConfig,
        CacheConfigurationInterface,
        CacheEntry,
        CacheInterface,
        CacheKey,
        EvictionPolicyInterface,
        EvictionPolicyType,
    )
except ImportError as _exc:  # the 'redis' extra is not installed
    raise_if_extra_missing("boundkit.near_cache", _exc)
    raise

from ._sizes import estimate_size, parse_bytes
from ._store_backed import StoreBacked
from .cache import BoundedCache, EvictReason
from .errors import ConfigError

__all__ = ["NearCache"]


def _entry_size(entry: CacheEntry) -> int:
    """The reply's and the key's estimated bytes, plus the entry object's own."""
    held = (entry.cache_key, entry.cache_value)
    return estimate_size(held) + sys.getsizeof(entry) + sys.getsizeof(entry.__dict__)


class _BoundedLRU(EvictionPolicyInterface):
    """The eviction policy redis-py may ask for: the store's own LRU order."""

    def __init__(self, near: NearCache) -> None:
        self._near = near

    @property
    def cache(self) -> NearCache:
        return self._near

    @cache.setter
    def cache(self, value: Any) -> None:
        raise ConfigError("a NearCache's eviction policy belongs to it")

    @property
    def type(self) -> EvictionPolicyType:
        return EvictionPolicyType.time_based

    def evict_next(self) -> CacheKey:
        key: CacheKey = self._near.store.popitem()[0]
        self._near._unindex([key])
        return key

    def evict_many(self, count: int) -> list[CacheKey]:
        if count > len(self._near.store):
            raise ValueError("Evictions count is above cache size")
        return [self.evict_next() for _ in range(count)]

    def touch(self, cache_key: CacheKey) -> None:
        if self._near.store.get(cache_key) is None:
            raise ValueError("Given entry does not belong to the cache")


class NearCache(StoreBacked, CacheInterface):
    """redis-py's ``CacheInterface`` on a :class:`~boundkit.BoundedCache`.

    ``maxsize`` bounds the entries (default 10,000, redis-py's own default),
    ``max_bytes`` their estimated bytes (a size such as ``"64M"``, default
    ``"32M"``; None: no byte bound), ``ttl`` their age in seconds (None: until
    the server invalidates them). ``config`` decides which commands are
    cached (default: redis-py's ``CacheConfig``, its command metadata).
    ``stats()`` and ``shrink()`` are the store's; register the cache with the
    memory guard (``guard.register_cache(near)``) to have it shrunk under
    pressure. Give one instance to one client (or one pool).
    """

    def __init__(
        self,
        maxsize: int | None = 10_000,
        *,
        max_bytes: int | str | None = "32M",
        ttl: float | None = None,
        config: CacheConfigurationInterface | None = None,
    ) -> None:
        budget = None if max_bytes is None else parse_bytes(max_bytes, name="max_bytes")
        if budget == 0:
            raise ConfigError("max_bytes must be more than zero bytes, got 0")
        self._store = BoundedCache(
            maxsize, max_bytes=budget, ttl=ttl, sizeof=_entry_size, on_evict=self._dropped
        )
        self._config = (
            config if config is not None else CacheConfig(max_size=maxsize or sys.maxsize)
        )
        self._policy = _BoundedLRU(self)
        # Redis key -> the cache keys of the entries that read it. Changed only under _lock,
        # and never missing a key the store holds: a missed entry would never be invalidated.
        self._by_redis_key: dict[Any, set[CacheKey]] = {}
        self._lock = threading.RLock()

    # -- the index of Redis keys -------------------------------------------------

    def _index(self, key: CacheKey) -> None:
        for redis_key in key.redis_keys:
            self._by_redis_key.setdefault(redis_key, set()).add(key)

    def _unindex(self, keys: list[CacheKey]) -> None:
        """Forget keys the store no longer holds (one put back meanwhile stays indexed)."""
        with self._lock:
            index = self._by_redis_key
            for key in keys:
                if key in self._store:
                    continue
                for redis_key in key.redis_keys:
                    holders = index.get(redis_key)
                    if holders is not None:
                        holders.discard(key)
                        if not holders:
                            del index[redis_key]

    def _dropped(self, key: CacheKey, entry: CacheEntry, reason: EvictReason) -> None:
        if reason != "replaced":
            self._unindex([key])

    # -- redis-py's CacheInterface -------------------------------------------------

    @property
    def collection(self) -> OrderedDict[CacheKey, CacheEntry]:
        """A snapshot of the entries, least recently used first."""
        return OrderedDict(self._store.items())

    @property
    def config(self) -> CacheConfigurationInterface:
        return self._config

    @property
    def eviction_policy(self) -> EvictionPolicyInterface:
        return self._policy

    @property
    def size(self) -> int:
        return len(self._store)

    def get(self, key: CacheKey) -> CacheEntry | None:
        entry: CacheEntry | None = self._store.get(key)
        return entry

    def set(self, entry: CacheEntry) -> bool:
        if not self.is_cachable(entry.cache_key):
            return False
        with self._lock:
            self._index(entry.cache_key)
            self._store[entry.cache_key] = entry
        return True

    def delete_by_cache_keys(self, cache_keys: list[CacheKey]) -> list[bool]:
        with self._lock:
            found = [self._store.pop(key, None) is not None for key in cache_keys]
            self._unindex(cache_keys)
        return found

    def delete_by_redis_keys(self, redis_keys: list[bytes] | list[str]) -> list[bool]:
        with self._lock:
            holders: set[CacheKey] = set()
            for redis_key in redis_keys:
                # the server names keys as bytes; a caller may have read them as str
                holders.update(self._by_redis_key.get(redis_key, ()))
                other = _other_spelling(redis_key)
                if other is not None:
                    holders.update(self._by_redis_key.get(other, ()))
            for key in holders:
                self._store.pop(key, None)
            self._unindex(list(holders))
        return [True] * len(holders)

    def flush(self) -> int:
        with self._lock:
            count = len(self._store)
            self._store.clear()
            self._by_redis_key.clear()
        return count

    def is_cachable(self, key: CacheKey) -> bool:
        return self._config.is_allowed_to_cache(key.command)

    def __repr__(self) -> str:
        stats = self._store.stats()
        budget = "none" if stats.max_bytes is None else stats.max_bytes
        return f"<NearCache entries={stats.entries} bytes={stats.bytes} max_bytes={budget}>"


def _other_spelling(redis_key: bytes | str) -> bytes | str | None:
    if isinstance(redis_key, str):
        return redis_key.encode()
    try:
        return redis_key.decode()
    except UnicodeDecodeError:
        return None
