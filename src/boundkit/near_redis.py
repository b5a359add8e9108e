"""A near copy of Redis reads, kept fresh by an invalidation listener of its own.

``NearRedis(client, prefixes=["app:"], max_bytes="64M")`` answers ``get`` from
a local :class:`~boundkit.BoundedCache` when it can, and from ``client``
otherwise. One dedicated connection enables client tracking in broadcast mode
(``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX ...``, RESP2 and Redis 6+)
and hears, on ``__redis__:invalidate``, every key written under the prefixes;
the listener drops them from the local copy. A hit costs a dict lookup and a
clock read, not redis-py's command path.

Staleness is bounded: the listener pings the server every quarter of
``max_staleness`` and the local copy answers only while the last ping that
came back was sent less than ``max_staleness`` seconds ago. Since the server
queues every invalidation ahead of a later ping's reply, a write acknowledged
to its writer more than ``max_staleness`` seconds ago is never served from the
local copy, however the listener fails. Importing this module imports redis;
importing boundkit does not.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ._extras import raise_if_extra_missing

try:
    import redis
except ImportError as _exc:  # the 'redis' extra is not installed
    raise_if_extra_missing("boundkit.near_redis", _exc)
    raise

from ._redact import redact
from ._sizes import estimate_size
from ._store_backed import StoreBacked
from ._tracking_listener import TrackingListener
from ._window import check_seconds
from .cache import BoundedCache
from .errors import ConfigError, InvalidKeyError, ResourceClosedError

__all__ = ["NearRedis", "NearRedisStats"]

Key = str | bytes


@dataclass(frozen=True)
class NearRedisStats:
    """The local copy's :class:`~boundkit.cache.CacheStats` fields and the listener's state.

    ``url`` has its password redacted; ``tracking`` says whether the local copy
    answers now; ``bypassed`` counts reads sent to Redis because it did not;
    ``invalidations`` the keys the server named, ``flushes`` the whole-copy
    drops (FLUSHDB/FLUSHALL, a lost listener), ``reconnects`` the listener's
    connections after the first.
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
    url: str
    prefixes: list[str]
    tracking: bool
    bypassed: int
    invalidations: int
    flushes: int
    reconnects: int

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as a JSON-ready dict."""
        return asdict(self)


def _sized(held: tuple[Key, Any]) -> int:
    return estimate_size(held)


def _client_url(client: redis.Redis) -> str:
    settings = client.connection_pool.connection_kwargs
    if settings.get("path"):
        return f"unix://{settings['path']}?db={settings.get('db', 0)}"
    return (
        f"redis://{settings.get('host', '?')}:{settings.get('port', '?')}/{settings.get('db', 0)}"
    )


def _check_prefixes(prefixes: Iterable[Key], encoding: str) -> tuple[bytes, ...]:
    if isinstance(prefixes, (str, bytes)):
        raise ConfigError(f"prefixes must be a list of prefixes, got the single {prefixes!r}")
    found: list[bytes] = []
    for prefix in prefixes:
        if not isinstance(prefix, (str, bytes)) or not prefix:
            raise ConfigError(f"each prefix must be a non-empty str or bytes, got {prefix!r}")
        found.append(prefix.encode(encoding) if isinstance(prefix, str) else prefix)
    for one in found:
        for other in found:
            if one is not other and other.startswith(one):
                raise ConfigError(f"prefixes {one!r} and {other!r} overlap; Redis refuses that")
    return tuple(found)


class NearRedis(StoreBacked):
    """Reads of ``client`` (a ``redis.Redis`` or a ``redis://`` URL) served from a near copy.

    ``prefixes`` limits the keys read and tracked (default: every key); a key
    outside them is an :class:`~boundkit.errors.InvalidKeyError`. ``maxsize``
    bounds the local entries, ``max_bytes`` their estimated bytes (keys
    included; a size such as ``"64M"``), ``ttl`` their age in seconds.
    ``max_staleness`` bounds how long after a write acknowledged elsewhere the
    old value may still be read here (module docstring). While the listener is
    not confirmed (starting, Redis down, restarting) reads go to ``client``,
    with its own timeouts, retries and errors, and nothing is kept; the
    listener reconnects every ``retry_interval`` seconds, logging one warning
    per ``log_interval``. A miss reads the key's ``PTTL`` in the same round
    trip, so no local copy outlives its key on the server. ``set`` and
    ``delete`` write through ``client`` and drop the local copy, so this
    process reads its own writes. ``timer`` is the clock (tests inject one).
    """

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        prefixes: Iterable[Key] = (),
        maxsize: int | None = 10_000,
        max_bytes: int | str | None = "32M",
        ttl: float | None = None,
        max_staleness: float = 1.0,
        retry_interval: float = 1.0,
        log_interval: float = 60.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        owns_client = isinstance(client, str)
        if isinstance(client, str):
            self.url = redact(client)
            try:
                client = redis.Redis.from_url(client)
            except ValueError as exc:
                raise ConfigError(f"invalid Redis URL {self.url!r}: {exc}") from None
        elif isinstance(client, redis.Redis):
            self.url = _client_url(client)
        else:
            raise ConfigError(f"client must be a redis.Redis or a redis:// URL, got {client!r}")
        self._client = client
        self._encoding: str = client.connection_pool.connection_kwargs.get("encoding", "utf-8")
        self._prefixes = _check_prefixes(prefixes, self._encoding)
        self._shown_prefixes = [
            prefix.decode(self._encoding, "backslashreplace") for prefix in self._prefixes
        ]
        self.max_staleness = check_seconds("max_staleness", max_staleness)
        self._new_store: Callable[[], BoundedCache[Key, tuple[Key, Any]]] = functools.partial(
            BoundedCache, maxsize, max_bytes=max_bytes, ttl=ttl, sizeof=_sized, timer=timer
        )
        self._ttl = math.inf if ttl is None else ttl
        self._store = self._new_store()
        self._timer = timer
        self._lock = threading.Lock()
        # When the last answered ping was sent (-inf: the listener is not confirmed); the
        # local copy answers only while it is less than max_staleness seconds old.
        self._confirmed = -math.inf
        # A fill sets a token per key before its request and stores a reply only if its
        # token is still there: an invalidation of the key drops it, and losing the
        # listener (when invalidations may be missed) drops every token.
        self._tracking = False
        self._pending: dict[Key, object] = {}
        self._counts = dict.fromkeys(("bypassed", "invalidations", "flushes"), 0)
        self._closed = False
        self._owns_client = owns_client
        self._listener = TrackingListener(
            client.connection_pool,
            self._prefixes,
            url=self.url,
            max_staleness=self.max_staleness,
            retry_interval=check_seconds("retry_interval", retry_interval),
            log_interval=check_seconds("log_interval", log_interval, allow_zero=True),
            timer=timer,
            on_connected=self._connected,
            on_keys=self._invalidate,
            on_confirmed=self._confirm,
            on_lost=self._lost,
        )
        try:
            self._listener.connection()
        except Exception as exc:  # e.g. a Sentinel pool's connections need the pool itself
            raise ConfigError(
                f"cannot build a listener connection from {self.url}'s pool "
                f"({type(client.connection_pool).__name__}): {redact(str(exc))}"
            ) from None
        _INSTANCES.add(self)
        self._listener.start()

    # -- reading ---------------------------------------------------------------

    def get(self, key: Key) -> Any:
        """Return ``GET key``: from the local copy when it holds the key and the
        listener is confirmed, else from Redis (then kept)."""
        fresh = self._timer() - self._confirmed < self.max_staleness
        if fresh:
            try:
                held = self._store.get(key)
            except TypeError:  # unhashable: _fill says what is wrong with it
                held = None
            if held is not None:
                return held[1]
        values = [None]
        self._fill([key], [0], values, fresh)
        return values[0]

    def get_many(self, keys: Iterable[Key]) -> list[Any]:
        """Return ``MGET keys`` in order; the local copy answers what it can, one ``MGET``
        the rest."""
        keys = list(keys)
        for key in keys:
            self._check_key(key)
        values: list[Any] = [None] * len(keys)
        fresh = self._timer() - self._confirmed < self.max_staleness
        wanted: list[int] = []
        for index, key in enumerate(keys):
            held = self._store.get(key) if fresh else None
            if held is None:
                wanted.append(index)
            else:
                values[index] = held[1]
        if wanted:
            self._fill(keys, wanted, values, fresh)
        return values

    def _fill(self, keys: list[Key], wanted: list[int], values: list[Any], fresh: bool) -> None:
        """Read ``keys[i]`` for each ``i`` in ``wanted`` from Redis into ``values``, and keep
        each one whose pending token survived: no invalidation of it arrived meanwhile."""
        names = [keys[index] for index in wanted]
        for name in names:
            self._check_key(name)
        if self._closed:
            raise ResourceClosedError(f"NearRedis for {self.url} was closed")
        token = object()
        with self._lock:
            if not fresh:
                self._counts["bypassed"] += len(names)
            keep = self._tracking
            if keep:
                for name in names:
                    self._pending[name] = token
        started = self._timer()
        try:
            found, lifetimes = self._read(names, with_ttl=keep)
        except BaseException:
            self._forget(names, token)
            raise
        for index, value in zip(wanted, found, strict=True):
            values[index] = value
        if not keep:
            return
        with self._lock:
            for name, value, lifetime in zip(names, found, lifetimes, strict=True):
                if self._pending.get(name) is token:
                    del self._pending[name]
                    self._keep(name, value, lifetime, started)

    def _read(self, names: list[Key], *, with_ttl: bool) -> tuple[list[Any], list[int]]:
        """``GET``/``MGET`` of ``names`` and, ``with_ttl``, each key's ``PTTL`` in the same
        round trip (-1: no expiry; -2: no key)."""
        if not with_ttl:
            if len(names) == 1:
                return [self._client.get(names[0])], [-1]
            return self._client.mget(names), [-1] * len(names)
        pipe = self._client.pipeline(transaction=False)
        if len(names) == 1:
            pipe.get(names[0])
        else:
            pipe.mget(names)
        for name in names:
            pipe.pttl(name)
        replies = pipe.execute()
        found = [replies[0]] if len(names) == 1 else list(replies[0])
        return found, [int(lifetime) for lifetime in replies[1:]]

    def _keep(self, name: Key, value: Any, lifetime: int, started: float) -> None:
        """Store a reply; one whose key expires on the server expires here no later (its
        ``PTTL`` counted from before the request was sent). Call with the lock held."""
        if lifetime < 0:
            self._store[name] = (name, value)
            return
        left = started + lifetime / 1000 - self._timer()
        if left > 0:
            self._store.set(name, (name, value), ttl=min(left, self._ttl))

    def _forget(self, names: list[Key], token: object) -> None:
        with self._lock:
            for name in names:
                if self._pending.get(name) is token:
                    del self._pending[name]

    def _check_key(self, key: object) -> None:
        if isinstance(key, str):
            name = key.encode(self._encoding)
        elif isinstance(key, bytes):
            name = key
        else:
            raise InvalidKeyError(f"a Redis key must be str or bytes, got {key!r}")
        if self._prefixes and not name.startswith(self._prefixes):
            raise InvalidKeyError(
                f"key {key!r} is outside the tracked prefixes {self._shown_prefixes!r}"
            )

    # -- writing through ---------------------------------------------------------

    def set(self, key: Key, value: Any, **options: Any) -> Any:
        """``client.set(key, value, **options)``, then drop the local copy of ``key``."""
        self._check_key(key)
        try:
            return self._client.set(key, value, **options)
        finally:
            self._drop([key])

    def delete(self, *keys: Key) -> int:
        """``client.delete(*keys)``, then drop the local copies; returns how many existed."""
        for key in keys:
            self._check_key(key)
        try:
            deleted: int = self._client.delete(*keys)
            return deleted
        finally:
            self._drop(list(keys))

    def _drop(self, keys: Iterable[Key]) -> None:
        """Forget ``keys`` (either spelling) and any fill of them under way."""
        store, pending = self._store, self._pending
        with self._lock:
            for key in keys:
                other = self._other_spelling(key)
                for name in (key, other) if other is not None else (key,):
                    store.pop(name, None)
                    pending.pop(name, None)

    def _other_spelling(self, key: Key) -> Key | None:
        if isinstance(key, str):
            return key.encode(self._encoding)
        try:
            return key.decode(self._encoding)
        except UnicodeDecodeError:
            return None

    def _flush(self, *, stop_tracking: bool = False) -> None:
        """Empty the local copy and drop every fill's token (and, ``stop_tracking``, keep
        no fill until the listener is back)."""
        with self._lock:
            if stop_tracking:
                self._tracking = False
            self._store.clear()
            self._pending.clear()
            self._counts["flushes"] += 1

    # -- the listener ----------------------------------------------------------

    @property
    def tracking(self) -> bool:
        """Whether the local copy answers now: the listener is connected and confirmed."""
        return self._timer() - self._confirmed < self.max_staleness

    def wait_for_tracking(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :attr:`tracking`; return it."""
        deadline = time.monotonic() + check_seconds("timeout", timeout, allow_zero=True)
        while not self.tracking and time.monotonic() < deadline and not self._closed:
            time.sleep(0.005)
        return self.tracking

    def _invalidate(self, keys: list[bytes] | None) -> None:
        if keys is None:  # FLUSHDB, FLUSHALL
            self._flush()
            return
        self._drop(keys)
        with self._lock:
            self._counts["invalidations"] += len(keys)

    def _connected(self, sent: float) -> None:
        """Tracking is on since ``sent``: keep fills and answer locally from now on."""
        # nothing was kept, and no token set, since the last flush: not tracking meanwhile
        with self._lock:
            self._tracking = True
            self._confirmed = sent

    def _confirm(self, sent: float) -> None:
        self._confirmed = sent

    def _lost(self) -> None:
        """Stop answering locally and forget everything: invalidations may have been lost."""
        self._confirmed = -math.inf
        self._flush(stop_tracking=True)

    def _after_fork_in_child(self) -> None:
        """The parent's listener thread does not exist here: forget its copy, start anew."""
        self._lock = threading.Lock()
        self._confirmed = -math.inf
        self._tracking = False
        self._pending = {}
        self._store = self._new_store()  # the parent's may have been locked
        if not self._closed:
            self._listener.start()

    # -- the rest --------------------------------------------------------------

    def stats(self) -> NearRedisStats:  # type: ignore[override]
        """Return the local copy's counters and bounds, and the listener's state."""
        with self._lock:
            counts = dict(self._counts)
        return NearRedisStats(
            **asdict(self._store.stats()),
            url=self.url,
            prefixes=list(self._shown_prefixes),
            tracking=self.tracking,
            reconnects=max(self._listener.connections - 1, 0),
            **counts,
        )

    def close(self, timeout: float = 5.0) -> None:
        """Stop the listener (waiting up to ``timeout`` seconds) and drop the local copy;
        reads then raise :class:`~boundkit.errors.ResourceClosedError`. A client made
        from a URL is closed too."""
        self._closed = True
        self._confirmed = -math.inf
        self._listener.stop(check_seconds("timeout", timeout, allow_zero=True))
        self._lost()
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> NearRedis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        stats = self._store.stats()
        return (
            f"<NearRedis {self.url} tracking={self.tracking} entries={stats.entries} "
            f"bytes={stats.bytes} max_bytes={stats.max_bytes}>"
        )


_INSTANCES: weakref.WeakSet[NearRedis] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for near in list(_INSTANCES):
        near._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
