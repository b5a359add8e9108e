"""What every framework cache on a :class:`~boundkit.BoundedCache` shares: its store,
stats and ``shrink`` for the memory guard."""

from __future__ import annotations

from typing import Any

from .cache import BoundedCache, CacheStats


class StoreBacked:
    """A cache whose entries live in the BoundedCache ``_store``."""

    _store: BoundedCache[Any, Any]

    @property
    def store(self) -> BoundedCache[Any, Any]:
        """The :class:`~boundkit.BoundedCache` holding the entries."""
        return self._store

    def stats(self) -> CacheStats:
        """The store's :class:`~boundkit.cache.CacheStats`."""
        return self._store.stats()

    def shrink(self, fraction: float) -> int:
        """Drop ``fraction`` of the entries, least recently used first; the memory guard
        calls this (``guard.register_cache(cache)``)."""
        return self._store.shrink(fraction)
