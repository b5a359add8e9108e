"""The shared tier of :func:`~boundkit.cached`: compute a value once across processes, in Redis.

``@cached(maxsize=1000, shared="redis://cache:6379/0")`` keeps each process's
local bounded cache and, behind it, one copy per key in Redis: on a local
miss a process reads Redis; on a Redis miss it takes a short lock
(``SET NX PX``), computes, stores and releases, while processes that missed
the same key wait for the value. The lock expires after ``lock_timeout``
seconds, so a holder that died frees it. If Redis cannot be reached the
function is computed locally, one warning is logged per ``log_interval``, and
Redis is tried again after ``retry_interval``: never an exception for it.

Values cross processes as JSON (or msgpack); pickle only when asked for, since
a pickle read from a shared server runs code chosen by whoever wrote it.
Importing this module imports redis; importing boundkit does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ._extras import raise_if_extra_missing

try:
    import redis
except ImportError as _exc:  # the 'redis' extra is not installed
    raise_if_extra_missing("boundkit.shared", _exc)
    raise

from ._cached import CachedFunction, P, R
from ._redact import redact
from ._window import check_seconds
from .errors import ConfigError

__all__ = ["SharedStats", "SharedTier"]

_log = logging.getLogger("boundkit.shared")

Serializer = Literal["json", "msgpack", "pickle"]

# Deletes the lock only if this process still holds it (its token), in one step.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


@dataclass(frozen=True)
class SharedStats:
    """Counters of one :class:`SharedTier`; ``url`` has its password redacted."""

    url: str
    namespace: str
    reachable: bool
    hits: int
    misses: int
    computed: int
    waited: int
    local_fallbacks: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as a JSON-ready dict."""
        return asdict(self)


def _codec(serializer: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    if serializer == "json":
        return (
            lambda value: json.dumps(value, separators=(",", ":")).encode(),
            json.loads,
        )
    if serializer == "msgpack":
        try:
            msgpack = importlib.import_module("msgpack")
        except ImportError:
            raise ConfigError("serializer='msgpack' needs msgpack: pip install msgpack") from None
        return (
            lambda value: msgpack.packb(value, use_bin_type=True),
            lambda data: msgpack.unpackb(data, raw=False),
        )
    if serializer == "pickle":
        return (lambda value: pickle.dumps(value, pickle.HIGHEST_PROTOCOL), pickle.loads)
    raise ConfigError(f"serializer must be 'json', 'msgpack' or 'pickle', got {serializer!r}")


class _Unavailable(Exception):
    """Redis is down (or was, less than ``retry_interval`` ago): compute locally."""


class SharedTier:
    """One Redis behind :func:`~boundkit.cached` functions, for every process of an app.

    ``url`` is a ``redis://`` URL or a ``redis.Redis`` client. ``namespace``
    prefixes every key (``bk:<namespace>:``; default: the decorated
    function's top-level package), so apps sharing a server never read each
    other's values. ``ttl`` is how long a value lives in Redis (seconds),
    ``lock_timeout`` how long a computation may hold the lock before another
    process may take over, ``wait_timeout`` how long a process waits for
    another's computation before computing itself. ``serializer`` is
    ``"json"`` (default), ``"msgpack"`` or, by explicit choice, ``"pickle"``.
    Register it with the memory guard (``guard.register_cache(tier,
    name="shared")``) to see its :class:`SharedStats` in ``/health``.
    """

    def __init__(
        self,
        url: str | redis.Redis,
        *,
        namespace: str | None = None,
        ttl: float = 300.0,
        lock_timeout: float = 10.0,
        wait_timeout: float | None = None,
        serializer: Serializer = "json",
        socket_timeout: float = 0.5,
        retry_interval: float = 1.0,
        log_interval: float = 60.0,
    ) -> None:
        ttl = check_seconds("ttl", ttl)
        lock_timeout = check_seconds("lock_timeout", lock_timeout)
        if wait_timeout is not None:
            wait_timeout = check_seconds("wait_timeout", wait_timeout, allow_zero=True)
        socket_timeout = check_seconds("socket_timeout", socket_timeout)
        retry_interval = check_seconds("retry_interval", retry_interval, allow_zero=True)
        log_interval = check_seconds("log_interval", log_interval, allow_zero=True)
        self._dumps, self._loads = _codec(serializer)
        if isinstance(url, str):
            try:
                self._client = redis.Redis.from_url(
                    url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
                )
            except ValueError as exc:
                raise ConfigError(f"invalid Redis URL {redact(url)!r}: {exc}") from None
            self.url = redact(url)
        else:
            self._client = url
            kwargs = url.connection_pool.connection_kwargs
            self.url = (
                f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
            )
        self.namespace = namespace
        self.ttl_ms = max(1, int(ttl * 1000))  # Redis refuses px=0
        self.lock_ms = max(1, int(lock_timeout * 1000))
        self.wait_timeout = 2 * lock_timeout if wait_timeout is None else wait_timeout
        self.retry_interval = retry_interval
        self.log_interval = log_interval
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_log = -float("inf")
        self._reachable = True
        self._counts = dict.fromkeys(
            ("hits", "misses", "computed", "waited", "local_fallbacks", "errors"), 0
        )

    def __repr__(self) -> str:
        return f"<SharedTier {self.url} namespace={self.namespace!r}>"

    # -- health ----------------------------------------------------------------

    def stats(self) -> SharedStats:
        """Return the counters, the redacted URL and whether Redis was reachable last time."""
        with self._lock:
            return SharedStats(
                url=self.url,
                namespace=self.namespace or "",
                reachable=self._reachable,
                **self._counts,
            )

    def shrink(self, fraction: float) -> int:
        """Nothing to drop: the values live in Redis (so the guard can list this tier)."""
        return 0

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # -- talking to Redis, or not ------------------------------------------------

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis command; on failure mark Redis down and raise _Unavailable."""
        if time.monotonic() < self._down_until:
            raise _Unavailable
        try:
            result = getattr(self._client, method)(*args, **kwargs)
        except redis.RedisError as exc:
            self._went_down(exc, what="unreachable")
            raise _Unavailable from None
        if not self._reachable:
            with self._lock:
                self._reachable = True
            _log.info("shared cache %s reachable again", self.url)
        return result

    def _went_down(self, exc: BaseException, *, what: str) -> None:
        """Count a failure and log it at most once per ``log_interval``; an unreachable
        server is left alone for ``retry_interval``."""
        now = time.monotonic()
        with self._lock:
            self._counts["errors"] += 1
            if isinstance(exc, redis.RedisError):
                self._reachable = False
                self._down_until = now + self.retry_interval
            if now - self._last_log < self.log_interval:
                return
            self._last_log = now
        detail = redact(" ".join(str(exc).split()))
        _log.warning(
            "shared cache %s: %s, computing locally (next warning in %gs at most): %s: %s",
            self.url,
            what,
            self.log_interval,
            type(exc).__name__,
            detail,
        )

    # -- the computation ---------------------------------------------------------

    def redis_key(self, func: Callable[..., Any], key: Hashable) -> str:
        """The Redis key of one call: namespace, function and a digest of the arguments'
        ``repr`` (arguments must repr the same way in every process)."""
        namespace = self.namespace or func.__module__.split(".")[0]
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return f"bk:{namespace}:{func.__module__}.{func.__qualname__}:{digest}"

    def fetch(self, func: Callable[..., Any], key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the shared value of ``func`` for ``key``, computing it here at most once
        across the processes that ask at the same time."""
        name = self.redis_key(func, key)
        try:
            return self._fetch(name, compute)
        except _Unavailable:
            self._count("local_fallbacks")
            return compute()

    def _fetch(self, name: str, compute: Callable[[], Any]) -> Any:
        lock_name = f"{name}:lock"
        deadline = time.monotonic() + self.wait_timeout
        pause = 0.005
        waited = False
        while True:
            found = self._call("get", name)
            if found is not None:
                try:
                    value = self._loads(found)
                except Exception as exc:  # not ours, or another format: never trusted
                    self._went_down(exc, what=f"cannot decode the value under {name!r}")
                    raise _Unavailable from None
                self._count("waited" if waited else "hits")
                return value
            token = uuid.uuid4().hex
            if self._call("set", lock_name, token, nx=True, px=self.lock_ms):
                self._count("misses")
                return self._compute_under_lock(name, lock_name, token, compute)
            if time.monotonic() >= deadline:
                self._count("local_fallbacks")
                return compute()
            waited = True
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _compute_under_lock(
        self, name: str, lock_name: str, token: str, compute: Callable[[], Any]
    ) -> Any:
        try:
            value = compute()
            self._count("computed")
            try:
                data = self._dumps(value)
            except (TypeError, ValueError) as exc:
                _log.warning(
                    "shared cache: a %s value cannot be shared (%s); kept in this process only",
                    type(value).__name__,
                    exc,
                )
                return value
            with contextlib.suppress(_Unavailable):  # computed all the same: the caller gets it
                self._call("set", name, data, px=self.ttl_ms)
            return value
        finally:
            with contextlib.suppress(_Unavailable):  # the lock expires by itself
                self._call("eval", _RELEASE, 1, lock_name, token)


class SharedCachedFunction(CachedFunction[P, R]):
    """A :class:`~boundkit.cache.CachedFunction` whose misses go through a :class:`SharedTier`."""

    shared: SharedTier

    def _compute(self, key: Hashable, args: Any, kwargs: Any) -> R:
        func = self.__wrapped__
        value: R = self.shared.fetch(func, key, lambda: func(*args, **kwargs))
        return value


def share(
    func: Callable[P, R],
    cache: Any,
    key: Callable[..., Hashable],
    shared: str | redis.Redis | SharedTier,
) -> SharedCachedFunction[P, R]:
    """Build the memoised function for ``cached(shared=...)``."""
    import inspect

    if inspect.iscoroutinefunction(func):
        raise ConfigError("shared= is for plain functions; an async def cannot use it yet")
    tier = shared if isinstance(shared, SharedTier) else SharedTier(shared)
    made = SharedCachedFunction(func, cache, key)
    made.shared = tier
    return made
