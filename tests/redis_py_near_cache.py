"""A pytest plugin for redis-py's own cache tests: every DefaultCache they build is a NearCache.

Loaded (``-p redis_py_near_cache``) by tests/test_near_cache.py in a pytest of
redis-py's sdist, before its test modules import ``DefaultCache``, so its
``TestCache`` runs against boundkit's cache: both where a test passes
``cache=DefaultCache(CacheConfig(...))`` and where redis-py builds the cache
from ``cache_config=`` (``CacheConfig``'s default cache class).
"""

from __future__ import annotations

from typing import Any

import redis.cache

from boundkit.near_cache import NearCache


class NearCacheAsDefault(NearCache):
    """NearCache built the way redis-py builds its DefaultCache: from a configuration."""

    def __init__(self, cache_config: Any) -> None:
        super().__init__(cache_config.get_max_size(), max_bytes=None, config=cache_config)


redis.cache.DefaultCache = NearCacheAsDefault  # type: ignore[misc]
redis.cache.CacheConfig.DEFAULT_CACHE_CLASS = NearCacheAsDefault
_defaults = list(redis.cache.CacheConfig.__init__.__defaults__ or ())
_defaults[1] = NearCacheAsDefault  # cache_class=DEFAULT_CACHE_CLASS, bound when defined
redis.cache.CacheConfig.__init__.__defaults__ = tuple(_defaults)
