"""The ``cached()`` decorator: memoise a function in a bounded cache, one computation per key.

Concurrent misses on one key compute once: the first caller (the leader)
runs the function while the others wait for its result, or its exception,
which is never cached. Re-exported by :mod:`boundkit.cache`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import types
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar, cast

from cachetools.keys import hashkey

from .errors import ConfigError

if TYPE_CHECKING:
    import asyncio

__all__ = ["CacheInfo", "CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
_MISSING: Any = object()


class CacheInfo(NamedTuple):
    """What ``cache_info()`` returns, shaped like ``functools.lru_cache``'s."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


class _Flight:
    """One computation in progress, awaited by the callers that missed the same key."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class CachedFunction(Generic[P, R]):
    """A function memoised by :func:`cached`, with ``cache_info()`` and ``cache_clear()``.

    ``cache`` and ``cache_key`` are the cache and key function in use. Works
    as a method too: the instance is then part of the key.
    """

    def __init__(
        self, func: Callable[P, R], cache: MutableMapping[Any, Any], key: Callable[..., Hashable]
    ) -> None:
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        self.cache = cache
        self.cache_key = key
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Any] = {}
        self._hits = self._misses = 0

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key = self.cache_key(*args, **kwargs)
        value = self.cache.get(key, _MISSING)
        if value is _MISSING:
            role, found = self._join(key, key)
            if role == "lead":
                return self._lead(key, found, args, kwargs)
            if role == "wait":
                return self._wait(found)
            return cast(R, found)
        with self._lock:
            self._hits += 1
        return cast(R, value)

    def _join(self, key: Hashable, flight_key: Hashable) -> tuple[str, Any]:
        """After a miss, decide this caller's role under the lock.

        Returns ``("hit", value)`` when a leader has just stored the value,
        ``("wait", flight)`` when a computation is under way, or
        ``("lead", flight)`` when this caller must compute.
        """
        with self._lock:
            flight = self._flights.get(flight_key)
            if flight is not None:
                self._hits += 1
                return "wait", flight
            value = self.cache.get(key, _MISSING)
            if value is not _MISSING:
                self._hits += 1
                return "hit", value
            self._misses += 1
            flight = self._flights[flight_key] = self._new_flight()
            return "lead", flight

    def _new_flight(self) -> Any:
        return _Flight()

    def _wait(self, flight: _Flight) -> R:
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return cast(R, flight.value)

    def _compute(self, key: Hashable, args: Any, kwargs: Any) -> R:
        """Run the function for a miss (the shared tier, boundkit.shared, overrides this)."""
        return self.__wrapped__(*args, **kwargs)

    def _lead(self, key: Hashable, flight: _Flight, args: Any, kwargs: Any) -> R:
        try:
            value = self._compute(key, args, kwargs)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            self._store(key, value)
            return value
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def _store(self, key: Hashable, value: Any) -> None:
        with contextlib.suppress(ValueError):  # a cachetools cache refusing a large value
            self.cache[key] = value

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        return self if obj is None else types.MethodType(self, obj)

    def cache_info(self) -> CacheInfo:
        """Hits, misses, maxsize and current size, as ``functools.lru_cache`` reports them.

        A caller that waited for another's computation counts as a hit.
        """
        with self._lock:
            hits, misses = self._hits, self._misses
        currsize = getattr(self.cache, "currsize", None)
        return CacheInfo(
            hits,
            misses,
            getattr(self.cache, "maxsize", None),
            len(self.cache) if currsize is None else currsize,
        )

    def cache_clear(self) -> None:
        """Empty the cache and reset the hit and miss counts."""
        with self._lock:
            self.cache.clear()
            self._hits = self._misses = 0

    def __repr__(self) -> str:
        return f"<cached {self.__wrapped__!r}>"


class AsyncCachedFunction(CachedFunction[P, R]):
    """The ``async def`` twin: concurrent misses in one event loop await one computation.

    If the leading call is cancelled, a waiting caller takes over the computation.
    """

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:  # type: ignore[override]
        import asyncio  # here, so that importing boundkit.cache does not load asyncio

        key = self.cache_key(*args, **kwargs)
        loop = asyncio.get_running_loop()
        while True:
            value = self.cache.get(key, _MISSING)
            if value is not _MISSING:
                with self._lock:
                    self._hits += 1
                return value
            role, found = self._join(key, (loop, key))
            if role == "hit":
                return found
            if role == "lead":
                return await self._alead(key, (loop, key), found, args, kwargs)
            try:
                return await asyncio.shield(found)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                cancelling = getattr(task, "cancelling", None)  # Python 3.11+
                if not found.cancelled() or (cancelling is not None and cancelling()):
                    raise
                # the leader was cancelled, not this caller: try again, perhaps as leader

    def _new_flight(self) -> Any:
        import asyncio

        return asyncio.get_running_loop().create_future()

    async def _alead(
        self,
        key: Hashable,
        flight_key: Hashable,
        future: asyncio.Future[Any],
        args: Any,
        kwargs: Any,
    ) -> Any:
        import asyncio

        try:
            value = await cast(Awaitable[Any], self.__wrapped__(*args, **kwargs))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited flight logs nothing
            raise
        else:
            future.set_result(value)
            self._store(key, value)
            return value
        finally:
            with self._lock:
                del self._flights[flight_key]


def cached(
    cache: MutableMapping[Any, Any] | None = None,
    *,
    key: Callable[..., Hashable] = hashkey,
    maxsize: int | None = None,
    max_bytes: int | str | None = None,
    ttl: float | None = None,
    shared: Any = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Memoise a function or method, sync or ``async def``, in a bounded cache.

    Pass a ``cache`` (any mutable mapping: a :class:`~boundkit.BoundedCache`
    or a ``cachetools`` cache), or bounds for a new ``BoundedCache``:
    ``maxsize=128`` unless ``maxsize`` or ``max_bytes`` is given, so
    ``@cached(ttl=60)`` holds at most 128 entries too (for a ttl-only cache,
    pass ``BoundedCache(ttl=60)``). ``key`` turns the arguments into a
    cache key (default ``cachetools.keys.hashkey``). Concurrent misses on one
    key compute once; the others wait for that result, and an exception
    reaches every waiter without being cached. ``shared`` (a ``redis://``
    URL, a ``redis.Redis`` or a :class:`~boundkit.shared.SharedTier`) adds a
    Redis tier behind the local cache, computing a value once across processes.

    >>> @cached(maxsize=2)
    ... def square(n):
    ...     return n * n
    >>> square(3), square(3), square.cache_info()
    (9, 9, CacheInfo(hits=1, misses=1, maxsize=2, currsize=1))
    """
    bounds = (maxsize, max_bytes, ttl)
    if cache is None:
        from .cache import BoundedCache

        if maxsize is None and max_bytes is None:
            maxsize = 128  # as functools.lru_cache: a ttl alone does not bound the entries
        cache = BoundedCache(maxsize, max_bytes=max_bytes, ttl=ttl)
    elif bounds != (None, None, None):
        raise ConfigError("give either a cache or bounds for a new one, not both")

    def decorate(func: Callable[P, R]) -> CachedFunction[P, R]:
        if shared is not None:
            from .shared import share

            return share(func, cache, key, shared)
        kind = AsyncCachedFunction if inspect.iscoroutinefunction(func) else CachedFunction
        return kind(func, cache, key)

    return decorate
