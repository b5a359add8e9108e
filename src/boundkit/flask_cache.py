"""A Flask-Caching backend on :class:`~boundkit.BoundedCache`: ``SimpleCache``, bounded by bytes.

Configure it by import path::

    app.config.update(
        CACHE_TYPE="boundkit.flask_cache.BoundedSimpleCache",
        CACHE_MAX_BYTES="64M",       # the sum of the pickled values (default 32M)
        CACHE_THRESHOLD=10_000,      # entries, as for SimpleCache (default 500)
        CACHE_DEFAULT_TIMEOUT=300,   # seconds; 0: never expires
    )
    cache = Cache(app)

Importing this module imports Flask-Caching; importing boundkit does not.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cachelib.serializers import SimpleSerializer
from flask_caching.backends.base import BaseCache

from ._sizes import parse_bytes
from ._store_backed import StoreBacked
from .cache import BoundedCache
from .errors import ConfigError

__all__ = ["BoundedSimpleCache"]

_DEFAULT_MAX_BYTES = "32M"


class BoundedSimpleCache(StoreBacked, BaseCache):
    """Flask-Caching's ``SimpleCache`` API with an LRU bound on entries and on pickled bytes.

    ``threshold`` bounds the entries (0: 500, as ``SimpleCache``), ``max_bytes``
    the sum of the pickled values (a size such as ``"64M"``; None: no byte
    bound). Values are pickled with the cache's ``serializer`` (Flask-Caching's
    ``CACHE_SERIALIZER`` replaces it), so callers never share a cached object.
    A ``timeout`` of 0 never expires. ``timer`` is the clock for timeouts.
    """

    serializer = SimpleSerializer()

    def __init__(
        self,
        threshold: int = 500,
        *,
        max_bytes: int | str | None = _DEFAULT_MAX_BYTES,
        default_timeout: int = 300,
        ignore_delete_many_errors: bool = False,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            default_timeout=default_timeout, ignore_delete_many_errors=ignore_delete_many_errors
        )
        budget = None if max_bytes is None else parse_bytes(max_bytes, name="max_bytes")
        if budget == 0:
            raise ConfigError("max_bytes must be more than zero bytes, got 0")
        self._store = BoundedCache(
            threshold or 500, max_bytes=budget, sizeof=sys.getsizeof, timer=timer
        )
        self._lock = threading.RLock()  # inc() holds it across get() and set()

    @classmethod
    def factory(
        cls, app: Any, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> BoundedSimpleCache:
        """Build the cache from the app's config (Flask-Caching calls this)."""
        kwargs.update(
            threshold=config["CACHE_THRESHOLD"],
            max_bytes=config.get("CACHE_MAX_BYTES", _DEFAULT_MAX_BYTES),
        )
        return cls(*args, **kwargs)

    def _ttl(self, timeout: int | dt.timedelta | None) -> float:
        seconds = self._normalize_timeout(timeout)
        return math.inf if seconds <= 0 else float(seconds)

    def get(self, key: str) -> Any:
        pickled = self._store.get(key)
        return None if pickled is None else self.serializer.loads(pickled)

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        pickled = self.serializer.dumps(value)
        with self._lock:  # so that an inc() in progress cannot overwrite it
            self._store.set(key, pickled, ttl=self._ttl(timeout))
        return True

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        pickled = self.serializer.dumps(value)
        with self._lock:
            if key in self._store:
                return False
            self._store.set(key, pickled, ttl=self._ttl(timeout))
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._store.pop(key, None) is not None

    def has(self, key: str) -> bool:
        return key in self._store

    def clear(self) -> bool:
        self._store.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> Any:
        with self._lock:
            return super().inc(key, delta)

    def dec(self, key: str, delta: int = 1) -> Any:
        with self._lock:
            return super().dec(key, delta)
