"""The invalidation listener of :class:`~boundkit.near_redis.NearRedis`.

One connection of its own, built from a redis-py pool's settings, sends
``CLIENT ID``, ``CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX ...``
and ``SUBSCRIBE __redis__:invalidate`` (RESP2, so Redis 6+), then reports every
key the server names. It pings every quarter of ``max_staleness`` and reports
each answer with the time its ping was sent: every invalidation the server
queued before answering has been reported by then. On any failure it reports
the loss, logs one warning per ``log_interval`` and reconnects after
``retry_interval``. Only redis-py's public ``Connection`` methods are used.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._redact import redact

__all__ = ["TrackingListener"]

_log = logging.getLogger("boundkit.near_redis")

CHANNEL = b"__redis__:invalidate"
_STOP_LATENCY = 0.1  # the longest wait between looks at the stop event
# What the listener takes from the client's pool: where and who to connect as, never the
# pool's own plumbing, timeouts or retries (the listener has its own).
_CONNECTION_SETTINGS = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "socket_keepalive",
        "socket_keepalive_options",
        "client_name",
    }
)


class TrackingListener:
    """A daemon thread that hears the keys written under ``prefixes`` on ``pool``'s server.

    It calls ``on_connected(sent)`` once tracking is on (``sent``: when the
    handshake began), ``on_keys(keys)`` for each invalidation (None: the
    whole keyspace, FLUSHDB/FLUSHALL), ``on_confirmed(sent)`` for each answered
    ping and ``on_lost()`` when the connection fails; all from its thread, in
    the order the server sent them.
    """

    def __init__(
        self,
        pool: redis.ConnectionPool,
        prefixes: tuple[bytes, ...],
        *,
        url: str,
        max_staleness: float,
        retry_interval: float,
        log_interval: float,
        timer: Callable[[], float],
        on_connected: Callable[[float], None],
        on_keys: Callable[[list[bytes] | None], None],
        on_confirmed: Callable[[float], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._prefixes = prefixes
        self.url = url
        self.max_staleness = max_staleness
        self.retry_interval = retry_interval
        self.log_interval = log_interval
        self._timer = timer
        self._on_connected, self._on_keys = on_connected, on_keys
        self._on_confirmed, self._on_lost = on_confirmed, on_lost
        self.connections = 0
        self._last_log = -math.inf
        self._said_lost = False  # a warning went out since the last connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening in a new thread (after a fork: the parent's thread is not here)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(self._stop,), name="boundkit-near-redis", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _listen(self, stop: threading.Event) -> None:
        while not stop.is_set():
            connection = None
            try:
                connection = self.connection()
                self._track(connection, stop)
            except Exception as exc:  # whatever it is, the thread must live on: retry
                self._on_lost()
                if not stop.is_set():
                    self._say_lost(exc)
            finally:
                if connection is not None:
                    connection.disconnect()
            stop.wait(self.retry_interval)

    def connection(self) -> Any:
        """A new, unconnected connection to the pool's server, with the listener's settings."""
        settings = {
            name: value
            for name, value in self._pool.connection_kwargs.items()
            if name in _CONNECTION_SETTINGS or name.startswith("ssl")
        }
        patience = max(self.max_staleness, 1.0)
        settings.update(
            protocol=2,
            decode_responses=False,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=patience,
            socket_connect_timeout=patience,
        )
        return self._pool.connection_class(**settings)

    def _track(self, connection: Any, stop: threading.Event) -> None:
        """Enable tracking on ``connection``, then report what it hears until it fails."""
        timer = self._timer
        sent = timer()
        connection.connect()
        connection.send_command("CLIENT", "ID")
        own_id = connection.read_response()
        command: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST"]
        for prefix in self._prefixes:
            command += ["PREFIX", prefix]
        connection.send_command(*command)
        connection.read_response()
        connection.send_command("SUBSCRIBE", CHANNEL)
        connection.read_response()
        self.connections += 1
        self._on_connected(sent)
        if self._said_lost:
            self._said_lost = False
            _log.info("near cache %s: invalidation listener back", self.url)
        every = self.max_staleness / 4
        ping_sent: float | None = None
        next_ping = timer() + every
        while not stop.is_set():
            now = timer()
            if ping_sent is None and now >= next_ping:
                connection.send_command("PING")
                ping_sent, next_ping = now, now + every
            wait = next_ping - now if ping_sent is None else ping_sent + self.max_staleness - now
            if not connection.can_read(timeout=max(min(wait, every, _STOP_LATENCY), 0.0)):
                # what has arrived is read before the silence counts: a late thread is no loss
                if ping_sent is not None and timer() - ping_sent >= self.max_staleness:
                    raise redis.TimeoutError(f"no answer to PING in {self.max_staleness:g}s")
                continue
            message = connection.read_response()
            if message[0] == b"message" and message[1] == CHANNEL:
                self._on_keys(message[2])
            elif message[0] == b"pong" and ping_sent is not None and not stop.is_set():
                self._on_confirmed(ping_sent)
                ping_sent = None

    def _say_lost(self, exc: BaseException) -> None:
        """Log the loss, at most once per ``log_interval``."""
        now = time.monotonic()
        if now - self._last_log < self.log_interval:
            return
        self._last_log, self._said_lost = now, True
        _log.warning(
            "near cache %s: invalidation listener lost, reads go to Redis until it is back "
            "(retried every %gs; next warning in %gs at most): %s: %s",
            self.url,
            self.retry_interval,
            self.log_interval,
            type(exc).__name__,
            redact(" ".join(str(exc).split())),
        )
