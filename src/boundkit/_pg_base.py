"""What the sync and async PostgreSQL pools share: settings, reset, probes, stats.

Nothing here waits on the network: :mod:`boundkit.pg` and :mod:`boundkit.pg_async`
add the I/O.
"""

from __future__ import annotations

import contextlib
import operator
import os
import select
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from psycopg import pq, sql
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ._conninfo import check_conninfo, redact, scrub
from ._window import check_count, check_seconds
from .errors import ConfigError, ResourceClosedError

# The session reset, one round trip in autocommit after the COMMIT or ROLLBACK:
# DISCARD ALL's steps (WITH HOLD cursors, roles, settings, LISTEN, advisory locks,
# temp tables, sequence caches) without its DEALLOCATE ALL and DISCARD PLANS. So
# the statements psycopg prepared stay on the server, as its prepared-statement
# cache says: psycopg has no public way to be told that DISCARD ALL dropped them.
# The last statement also lists what SQL PREPARE made, for deallocate_query().
RESET_SESSION = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *;"
    " DISCARD TEMP; DISCARD SEQUENCES;"
    " SELECT pg_catalog.pg_advisory_unlock_all(),"
    " ARRAY(SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql)"
)

# connection attributes a block may change that psycopg_pool does not restore
SESSION_ATTRS = ("autocommit", "isolation_level", "read_only", "deferrable")
PLAIN_ATTRS = (
    "prepare_threshold",
    "prepared_max",
    "row_factory",
    "cursor_factory",
    "server_cursor_factory",
)
_ATTRS = SESSION_ATTRS + PLAIN_ATTRS
_read_attrs = operator.attrgetter(*_ATTRS)  # one C call: the tuple of their values

# how long a checkout waits before asking why no connection came
DIAGNOSE_AFTER = 0.5


def resolve_conninfo(conninfo: str | None) -> str:
    """Return ``conninfo``, else ``DATABASE_URL``; raise :class:`ConfigError` with neither."""
    if conninfo is None:
        conninfo = os.environ.get("DATABASE_URL", "")
    if not conninfo.strip():
        raise ConfigError("no database given: pass conninfo or set DATABASE_URL")
    return conninfo


@dataclass(frozen=True)
class PoolSettings:
    """The arguments of ``create_pool()``, validated; enough to rebuild the pool after fork."""

    conninfo: str = field(repr=False)
    min_size: int = 0
    max_size: int = 3
    timeout: float = 10.0
    max_idle: float = 60.0
    max_lifetime: float = 1800.0
    statement_timeout: float | None = 30.0
    idle_in_transaction_timeout: float | None = 30.0
    connect_timeout: float = 5.0
    name: str | None = None
    reset_session: bool = True
    pool_kwargs: dict[str, Any] = field(default_factory=dict)
    # the conninfo's secrets as written and as read, to hide in libpq's messages
    secrets: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_count("min_size", self.min_size, minimum=0)
        check_count("max_size", self.max_size, minimum=1)
        if self.min_size > self.max_size:
            raise ConfigError(
                f"need 0 <= min_size <= max_size and max_size >= 1, "
                f"got min_size={self.min_size!r}, max_size={self.max_size!r}"
            )
        for key in ("timeout", "max_idle", "max_lifetime", "connect_timeout"):
            check_seconds(key, getattr(self, key))
        for key in ("statement_timeout", "idle_in_transaction_timeout"):
            if getattr(self, key) is not None:
                check_seconds(key, getattr(self, key), allow_zero=True)
        for key in ("kwargs", "check", "reset", "open"):
            if key in self.pool_kwargs:
                raise ConfigError(f"create_pool() sets {key!r} itself; it cannot be passed")
        object.__setattr__(self, "secrets", check_conninfo(self.conninfo))

    def connection_kwargs(self) -> dict[str, Any]:
        """Connection parameters; the timeouts ride on libpq ``options`` so RESET ALL keeps them."""
        options = [
            f"-c {guc}={round(seconds * 1000)}"
            for guc, seconds in (
                ("statement_timeout", self.statement_timeout),
                ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout),
            )
            if seconds is not None
        ]
        given = conninfo_to_dict(self.conninfo).get("options")
        if given:
            options.append(str(given))  # later -c settings win: the caller's
        kwargs: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout))}
        if options:
            kwargs["options"] = " ".join(options)
        return kwargs

    def conninfo_with_options(self) -> str:
        """The conninfo for a one-off diagnostic connection, with the pool's parameters."""
        return make_conninfo(self.conninfo, **self.connection_kwargs())

    def pool_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``ConnectionPool`` / ``AsyncConnectionPool``."""
        arguments: dict[str, Any] = {
            "min_size": self.min_size,
            "max_size": self.max_size,
            "timeout": self.timeout,
            "max_idle": self.max_idle,
            "max_lifetime": self.max_lifetime,
            # give up a failed reconnection fast: a waiting request starts a new
            # attempt at once instead of sitting out the 1, 2, 4... s backoff
            "reconnect_timeout": 1.0,
            "kwargs": self.connection_kwargs(),
        }
        if self.name is not None:
            arguments["name"] = self.name
        arguments.update(self.pool_kwargs)
        return arguments


class PoolState:
    """boundkit's bookkeeping for one pool: counters, outstanding leases, owner process."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.redacted = redact(settings.conninfo)
        self.reset = settings.reset_session
        self.pid = os.getpid()
        self.checkouts = 0
        self.recoveries = 0
        self.discards = 0
        self.leased = 0
        self._lock = threading.Lock()

    def lent(self) -> None:
        with self._lock:
            self.leased += 1
            self.checkouts += 1

    def returned(self) -> None:
        with self._lock:
            self.leased -= 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "conninfo": self.redacted,
            "pid": self.pid,
            "checkouts": self.checkouts,
            "recoveries": self.recoveries,
            "discards": self.discards,
            "leased": self.leased,
        }


class Registry:
    """The pools boundkit created in this process, and the per-conninfo default pools.

    After ``fork()`` the child forgets the parent's pools without closing them:
    closing would send a Terminate message down sockets the parent still uses.
    """

    def __init__(self) -> None:
        self.states: weakref.WeakKeyDictionary[Any, PoolState] = weakref.WeakKeyDictionary()
        self.defaults: dict[str, Any] = {}
        self.twins: dict[int, Any] = {}  # id(parent's pool) -> this child's own pool
        self.lock = threading.Lock()
        self.pid = os.getpid()  # kept current by the at-fork hook: no syscall per checkout

    def forget_after_fork(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.defaults = {}
        self.twins = {}

    def own_pools(self) -> list[Any]:
        pid = os.getpid()
        pools = list(self.states.items())
        return [pool for pool, state in pools if state.pid == pid and not pool.closed]

    def state_of(self, pool: Any) -> PoolState:
        try:
            return self.states[pool]
        except KeyError:
            raise ConfigError(
                f"pool {pool.name!r} was not made by boundkit's create_pool()"
            ) from None


def stats_of(pool: Any, state: PoolState) -> dict[str, Any]:
    """psycopg_pool's stats of ``pool`` plus boundkit's counters, conninfo redacted."""
    stats: dict[str, Any] = dict(pool.get_stats())
    stats.update(state.as_dict())
    stats["closed"] = pool.closed
    return stats


# how long release_idle() waits for a connection psycopg_pool 3.2 counted as idle
TAKE_IDLE_TIMEOUT = 0.01


def idle_count(pool: Any) -> int:
    """How many connections wait in ``pool``: psycopg_pool's ``pool_available``."""
    return int(pool.get_stats().get("pool_available", 0))


def exhausted_message(pool: Any, state: PoolState, waited: float) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in sorted(stats_of(pool, state).items()))
    return f"no connection free in pool {pool.name!r} after {waited:.2f} s ({shown})"


def connect_failed_message(state: PoolState, cause: BaseException) -> str:
    detail = scrub(" ".join(str(cause).split()), state.settings.secrets)
    return f"cannot connect to {state.redacted}: {detail}"


DEAD, ALIVE, UNSURE = "dead", "alive", "unsure"


def idle_state(pgconn: pq.abc.PGconn) -> str:
    """Whether an idle connection is ``DEAD``, ``ALIVE`` or ``UNSURE``, without a round trip.

    An idle connection has nothing to read. A readable socket means the server
    hung up (a FATAL message, then end of file) or sent a notice: consume it,
    and if the connection still looks open call it ``UNSURE``, for the caller
    to settle with a round trip.
    """
    if pgconn.status != pq.ConnStatus.OK:
        return DEAD
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    if not poller.poll(0):
        return ALIVE
    for _ in range(4):
        try:
            pgconn.consume_input()
        except Exception:  # psycopg.OperationalError: the server hung up
            return DEAD
        if pgconn.status != pq.ConnStatus.OK:
            return DEAD
        if not poller.poll(0):
            break
    return UNSURE


class Ended(NamedTuple):
    """What a lease knew when its block ended, for the twins to clean up with."""

    discard: bool
    saved: tuple[Any, ...]
    cursors: list[Any]
    handlers: list[tuple[str, Any]]  # (the remove_*_handler method, the callback)


class _Returned:
    """Stands in for the lent connection once its block ended: every use raises."""

    __slots__ = ()

    def _refuse(self, *_: Any) -> Any:
        raise ResourceClosedError(
            "this connection went back to its pool when its block ended; "
            "use it only inside the `with` block"
        )

    __setattr__ = __delattr__ = _refuse

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (doctest, inspect) asking for a protocol
            raise AttributeError(name)
        return self._refuse()


_RETURNED = _Returned()

# psycopg's own methods that run on the lease itself, so the cursors,
# transactions and pipelines they make say `.connection is conn`
_RUN_ON_LEASE = frozenset({"cursor", "execute", "transaction", "pipeline"})


def forward_attributes(lease_class: type, connection_class: type) -> None:
    """Give ``lease_class`` a forwarding property per attribute of ``connection_class``.

    Each reads ``lease._bk_conn.<name>`` in C (``operator.attrgetter``): psycopg's
    own code reads the connection through the lease a few dozen times per block,
    and a Python ``__getattribute__`` cost ~15 us of client CPU per block. Names
    the lease defines, dunders and :data:`_RUN_ON_LEASE` are left alone; instance
    attributes get theirs at the first lend (:meth:`LeaseBase.__init__`).
    """
    for name in dir(connection_class):
        if not (name.startswith("__") or name in _RUN_ON_LEASE or _defined_by_lease(name)):
            setattr(lease_class, name, property(operator.attrgetter(f"_bk_conn.{name}")))


def _defined_by_lease(name: str) -> bool:
    return hasattr(LeaseBase, name)


class LeaseBase:
    """The connection a block borrowed: forwards to it until the block ends.

    Mixed into a subclass of ``psycopg.Connection`` (or ``AsyncConnection``),
    so psycopg's own type checks (``TypeInfo.fetch()``, ``register_vector()``)
    accept it, but never initialised as one: it holds no connection state of
    its own, every attribute is the lent connection's (see
    :func:`forward_attributes`). After the block every use raises
    :class:`~boundkit.ResourceClosedError`, and the cursors it opened are
    closed, so no later borrower's transaction can be touched through it.
    Adapters registered on it and handlers added through it live as long as
    the block.
    """

    __slots__ = (
        "_bk_adapters",
        "_bk_conn",
        "_bk_cursors",
        "_bk_discard",
        "_bk_handlers",
        "_bk_saved",
    )

    def __init__(self, conn: Any) -> None:  # not psycopg's: nothing of its own to set up
        setattr_ = object.__setattr__
        setattr_(self, "_bk_conn", conn)
        setattr_(self, "_bk_cursors", [])
        setattr_(self, "_bk_discard", False)
        setattr_(self, "_bk_saved", _read_attrs(conn))
        setattr_(self, "_bk_adapters", None)
        setattr_(self, "_bk_handlers", [])
        lease_class = type(self)
        if not lease_class.__dict__.get("_bk_instance_attributes"):
            for name in vars(conn):  # pgconn, lock, psycopg's private state...
                if not hasattr(lease_class, name):
                    setattr(lease_class, name, property(operator.attrgetter(f"_bk_conn.{name}")))
            lease_class._bk_instance_attributes = True  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # attributes set on the connection later
        return getattr(self._bk_conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._bk_conn, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._bk_conn, name)

    def _live(self) -> Any:
        conn = self._bk_conn
        if conn is _RETURNED:
            conn._refuse()
        return conn

    def _track(self, cursor: Any) -> Any:
        self._bk_cursors.append(weakref.ref(cursor))
        return cursor

    def _end(self) -> Ended:
        """Refuse further use; return what the block left to clean up."""
        cursors = [cursor for ref in self._bk_cursors if (cursor := ref()) is not None]
        object.__setattr__(self, "_bk_conn", _RETURNED)
        object.__setattr__(self, "_bk_cursors", [])
        object.__setattr__(self, "_bk_adapters", None)
        return Ended(self._bk_discard, self._bk_saved, cursors, self._bk_handlers)

    def discard(self) -> None:
        """Close this connection when the block ends instead of returning it.

        Use it after a large result: libpq keeps its input buffer at the size of
        the largest message received, for as long as the connection lives.
        """
        self._live()
        object.__setattr__(self, "_bk_discard", True)

    @property
    def adapters(self) -> AdaptersMap:
        """The connection's adapters, copied for this block: what it registers ends with it."""
        mine: AdaptersMap | None = self._bk_adapters
        if mine is None:
            mine = AdaptersMap(self._bk_conn.adapters)
            object.__setattr__(self, "_bk_adapters", mine)
        return mine

    def add_notice_handler(self, callback: Any) -> None:
        """``Connection.add_notice_handler()``; the handler is removed when the block ends."""
        self._bk_conn.add_notice_handler(callback)
        self._bk_handlers.append(("remove_notice_handler", callback))

    def add_notify_handler(self, callback: Any) -> None:
        """``Connection.add_notify_handler()``; the handler is removed when the block ends."""
        self._bk_conn.add_notify_handler(callback)
        self._bk_handlers.append(("remove_notify_handler", callback))

    def __repr__(self) -> str:
        conn = self._bk_conn
        state = "returned" if conn is _RETURNED else repr(conn)
        return f"<{type(self).__name__} {state}>"

    def __del__(self, *_: Any) -> None:  # psycopg's warns of an unclosed connection: not ours
        pass


def remove_handlers(conn: Any, handlers: list[tuple[str, Any]]) -> None:
    """Remove the notice and notify handlers a block added (those it removed itself too)."""
    for remove, callback in handlers:
        with contextlib.suppress(ValueError):
            getattr(conn, remove)(callback)


def deallocate_query(names: list[str]) -> sql.Composed:
    """``DEALLOCATE`` of each statement SQL ``PREPARE`` made, as the reset listed them."""
    deallocate = sql.SQL("DEALLOCATE {}")
    return sql.SQL("; ").join(deallocate.format(sql.Identifier(name)) for name in names)


def is_clean(pgconn: pq.abc.PGconn) -> bool:
    """Whether a returned connection can go back to the pool: open, idle, no pipeline open."""
    return (
        pgconn.status == pq.ConnStatus.OK
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
        and pgconn.pipeline_status == pq.PipelineStatus.OFF
    )


def needs_reset(conn: Any, saved: tuple[Any, ...]) -> dict[str, Any]:
    """The session attributes a block changed, with the values to restore."""
    now = _read_attrs(conn)
    if now == saved:
        return {}
    return {name: was for name, was, value in zip(_ATTRS, saved, now, strict=True) if value != was}
