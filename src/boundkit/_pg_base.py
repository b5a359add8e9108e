"""What the sync and async PostgreSQL pools share: settings, BEGIN, reset, probes, stats.

Nothing here waits on the network: :mod:`boundkit.pg` and :mod:`boundkit.pg_async`
add the I/O.
"""

from __future__ import annotations

import logging
import operator
import os
import select
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
import psycopg_pool
from psycopg import generators, pq
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ._conninfo import check_conninfo, redact, scrub
from ._window import check_count, check_finite
from .errors import ConfigError, ResourceClosedError

# A block ends with one round trip: its COMMIT or ROLLBACK, then DISCARD ALL
# (session settings, roles, temp tables, LISTEN, advisory locks, cursors,
# prepared statements, sequence caches), pipelined without a Sync between them
# (DISCARD ALL cannot run in the transaction block a multi-statement query
# makes). COMMIT first: when it fails (a deferred constraint) that is the error
# the block raises, and the server skips the DISCARD ALL, so the rollback path
# sends DISCARD ALL again. Measured cheaper than the six-statement reset string
# it replaced (benchmarks/bench_pg.py, docs/pg.md).
COMMIT, ROLLBACK, DISCARD = b"COMMIT", b"ROLLBACK", b"DISCARD ALL"
_INTRANS, _INERROR, _IDLE = (
    pq.TransactionStatus.INTRANS,
    pq.TransactionStatus.INERROR,
    pq.TransactionStatus.IDLE,
)

# psycopg sends a block's BEGIN in a round trip of its own before the first
# statement. boundkit sends it in the first statement's round trip instead (as
# Npgsql does): one round trip fewer per block. That takes psycopg internals;
# without them (another psycopg release) statements go as psycopg sends them.
_CURSOR_INTERNALS = (
    "_start_query",
    "_convert_query",
    "_get_prepared",
    "_maybe_prepare_gen",
    "_execute_send",
    "_send_query_prepared",
    "_check_results",
    "_set_results",
)
CAN_SHARE_BEGIN = all(
    hasattr(psycopg.Connection, name) for name in ("_get_tx_start_command", "_exec_command")
) and all(hasattr(psycopg.Cursor, name) for name in _CURSOR_INTERNALS)
_PLAIN_EXECUTES = (psycopg.Cursor.execute, psycopg.AsyncCursor.execute)
# cursors that bind parameters into the query text: simple query protocol always
_CLIENT_SIDE = (psycopg.ClientCursor, psycopg.AsyncClientCursor)

# connection attributes a block may change that psycopg_pool does not restore
SESSION_ATTRS = ("autocommit", "isolation_level", "read_only", "deferrable")
PLAIN_ATTRS = ("prepare_threshold", "row_factory", "cursor_factory")
_ATTRS = SESSION_ATTRS + PLAIN_ATTRS
_read_attrs = operator.attrgetter(*_ATTRS)  # one C call: the tuple of their values

# how long a checkout waits before asking why no connection came
DIAGNOSE_AFTER = 0.5


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float seconds if finite and positive (or zero), else ConfigError."""
    seconds = check_finite(name, value)
    if isinstance(value, bool) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be seconds {bound}, got {value!r}")
    return seconds


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


def shrink_internals(
    pool: Any, lock_protocol: str, logger: logging.Logger
) -> tuple[deque[Any], Any, Any] | None:
    """The private fields psycopg_pool's ``_shrink_pool()`` uses: idle deque, lock, close.

    ``None`` (and a warning to ``logger``) when this psycopg_pool lacks them.
    ``lock_protocol`` is ``"__enter__"`` for a sync pool, ``"__aenter__"`` for an async one.
    """
    idle: Any = getattr(pool, "_pool", None)
    fields = (getattr(pool, name, None) for name in ("_nconns", "_nconns_min"))
    lock: Any = getattr(pool, "_lock", None)
    close: Any = getattr(pool, "_close_connection", None)
    if (
        isinstance(idle, deque)
        and all(type(value) is int for value in fields)
        and callable(getattr(lock, lock_protocol, None))
        and callable(close)
    ):
        return idle, lock, close
    logger.warning(
        "release_idle() closed nothing in pool %r: this psycopg_pool %s no longer "
        "has the internals it relies on; idle connections still close after max_idle",
        pool.name,
        psycopg_pool.__version__,
    )
    return None


def take_idle(pool: Any, idle: deque[Any]) -> list[Any]:
    """Pop idle connections down to ``min_size``, as ``_shrink_pool()`` counts; hold its lock."""
    count = max(0, min(len(idle), pool._nconns - pool.min_size))
    released = [idle.popleft() for _ in range(count)]
    pool._nconns -= count
    pool._nconns_min = min(pool._nconns_min, len(idle))
    return released


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
    used: bool
    saved: tuple[Any, ...]
    cursors: list[Any]


class LeaseBase:
    """The connection a block borrowed: forwards to it until the block ends.

    After the block every attribute access raises
    :class:`~boundkit.ResourceClosedError`, and the cursors it opened are closed,
    so no later borrower's transaction can be touched through it.
    """

    __slots__ = ("_conn", "_cursors", "_discard", "_saved", "_used")

    def __init__(self, conn: Any) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_cursors", [])
        object.__setattr__(self, "_discard", False)
        object.__setattr__(self, "_used", False)
        object.__setattr__(self, "_saved", _read_attrs(conn))

    def _live(self) -> Any:
        conn = self._conn
        if conn is None:
            raise ResourceClosedError(
                "this connection went back to its pool when its block ended; "
                "use it only inside the `with` block"
            )
        if not self._used:
            object.__setattr__(self, "_used", True)
        return conn

    def _track(self, cursor: Any) -> Any:
        self._cursors.append(weakref.ref(cursor))
        return cursor

    def _end(self) -> Ended:
        """Refuse further use; return what the block left to clean up."""
        cursors = [cursor for ref in self._cursors if (cursor := ref()) is not None]
        self._cursors.clear()
        object.__setattr__(self, "_conn", None)
        return Ended(self._discard, self._used, self._saved, cursors)

    def discard(self) -> None:
        """Close this connection when the block ends instead of returning it.

        Use it after a large result: libpq keeps its input buffer at the size of
        the largest message received, for as long as the connection lives.
        """
        self._live()
        object.__setattr__(self, "_discard", True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._live(), name, value)

    def __repr__(self) -> str:
        conn = self._conn
        state = "returned" if conn is None else repr(conn)
        return f"<{type(self).__name__} {state}>"


def begin_command(conn: Any, cursor: Any) -> bytes | None:
    """The ``BEGIN`` psycopg is about to send before ``cursor``'s statement, or ``None``.

    ``None`` when psycopg would send none (``autocommit``, a transaction or a
    pipeline already open), when ``cursor``'s class has an ``execute()`` of its
    own (a ``cursor_factory`` that logs, say: it must see every statement) or
    asks for binary results, or when boundkit cannot send the ``BEGIN`` for
    psycopg. Call it under
    ``conn.lock``, then run :func:`execute_after_begin` under the same hold.
    """
    if (
        conn.pgconn.transaction_status != _IDLE  # first: every later statement stops here
        or not CAN_SHARE_BEGIN
        or type(cursor).execute not in _PLAIN_EXECUTES
        or cursor.format != pq.Format.TEXT
        or getattr(conn, "_autocommit", True)
        or conn.pgconn.pipeline_status != pq.PipelineStatus.OFF
    ):
        return None
    begin: bytes = conn._get_tx_start_command()
    return begin


def execute_after_begin(cursor: Any, begin: bytes, query: Any, params: Any) -> PQGen[None]:
    """``cursor.execute(query, params)`` with ``begin`` sent in the same round trip.

    For ``conn.wait()``: psycopg's own ``execute()``, the ``BEGIN`` moved. A
    query psycopg sends by the simple query protocol (no parameters, or bound
    into the text by a ``ClientCursor``; it may hold several statements) goes
    as one message, ``BEGIN;``
    then a newline then the query: the server's ``LINE n:`` in an error is one
    more than psycopg alone gives. Any other, or one psycopg prepared before,
    goes in a libpq pipeline behind the ``BEGIN``, with one Sync. A query
    psycopg prepares now (``prepare_threshold`` reached) goes as psycopg sends
    it, ``BEGIN`` apart. A query psycopg refuses before sending (a parameter
    missing) leaves no transaction open, where psycopg alone has opened one.
    """
    conn = cursor.connection
    pgconn = conn.pgconn
    conn._autocommit = True  # so psycopg's own _start_query() sends no BEGIN
    try:
        yield from cursor._start_query(query)
    finally:
        conn._autocommit = False
    pgq = cursor._convert_query(query, params)
    prepare, name = cursor._get_prepared(pgq)
    if prepare is type(prepare).SHOULD:  # a statement to prepare first: psycopg's way
        yield from conn._exec_command(begin)
        yield from cursor._maybe_prepare_gen(pgq)
    else:
        if name or (pgq.params and not isinstance(cursor, _CLIENT_SIDE)):
            pgconn.enter_pipeline_mode()
            pgconn.send_query_params(begin, None)
            if name:  # prepared by an earlier block (reset_session=False)
                cursor._send_query_prepared(name, pgq)
            else:
                cursor._execute_send(pgq, force_extended=True)
            results = (yield from synced_pipeline(pgconn))[1:]
        else:
            pgconn.send_query(begin + b";\n" + pgq.query)
            results = (yield from generators.execute(pgconn))[1:]
            if not results:  # the query held no statement: let the server answer it alone
                cursor._execute_send(pgq)
                results = yield from generators.execute(pgconn)
        key = conn._prepared.maybe_add_to_cache(pgq, prepare, name)  # counts toward preparing
        if key is not None:
            conn._prepared.validate(key, prepare, name, results)
        cursor._check_results(results)
        cursor._set_results(results)
    cursor._last_query = query
    yield from conn._prepared.maintain_gen(conn)


def synced_pipeline(pgconn: pq.abc.PGconn) -> PQGen[list[Any]]:
    """End the libpq pipeline the caller filled with one Sync: one round trip.

    Returns every statement's results in order, the Sync's left out, and leaves
    pipeline mode.
    """
    pgconn.pipeline_sync()
    yield from generators.send(pgconn)
    results: list[Any] = []
    while not results or results[-1].status != pq.ExecStatus.PIPELINE_SYNC:
        results += yield from generators.fetch_many(pgconn)
    pgconn.exit_pipeline_mode()
    return results[:-1]


def closing_statements(
    status: int, *, commit: bool, used: bool, reset: bool = True
) -> tuple[bytes, ...]:
    """The statements that end a block's transaction and reset the session.

    With ``reset=False`` (``create_pool(reset_session=False)``) only the
    ``COMMIT`` or ``ROLLBACK``. Empty: nothing to send (the connection was not
    used, or is broken or busy and will be discarded). Send them with
    :func:`closing_gen`: they run whatever psycopg's ``autocommit`` says.

    >>> INTRANS, INERROR, IDLE = 2, 3, 0  # pq.TransactionStatus
    >>> closing_statements(INTRANS, commit=True, used=True)
    (b'COMMIT', b'DISCARD ALL')
    >>> closing_statements(INERROR, commit=True, used=True)
    (b'ROLLBACK', b'DISCARD ALL')
    >>> closing_statements(IDLE, commit=True, used=True)
    (b'DISCARD ALL',)
    >>> closing_statements(IDLE, commit=True, used=False)
    ()
    >>> closing_statements(INTRANS, commit=True, used=True, reset=False)
    (b'COMMIT',)
    >>> closing_statements(IDLE, commit=True, used=True, reset=False)
    ()
    """
    if status == _INTRANS:
        end = COMMIT if commit else ROLLBACK
    elif status == _INERROR:
        end = ROLLBACK
    elif status == _IDLE and used:
        return (DISCARD,) if reset else ()
    else:
        return ()
    return (end, DISCARD) if reset else (end,)


def closing_gen(pgconn: pq.abc.PGconn, statements: tuple[bytes, ...]) -> PQGen[Any]:
    """Send ``statements`` (from :func:`closing_statements`); return the first failure.

    For ``conn.wait()`` under ``conn.lock``. Straight through libpq, as
    ``conn.commit()`` does: a psycopg cursor's ``execute()`` cost ~30 us more
    client CPU per block. Two statements go in one libpq pipeline with a single
    Sync: one round trip. Returns ``None``, or the ``PGresult`` of the first
    statement that failed, for the caller to raise as psycopg's error class.
    """
    if len(statements) == 1:
        pgconn.send_query(statements[0])
        results = yield from generators.execute(pgconn)
    else:
        pgconn.enter_pipeline_mode()
        for statement in statements:
            pgconn.send_query_params(statement, None)
        results = yield from synced_pipeline(pgconn)
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            return result
    return None


def forget_prepared(conn: Any) -> None:
    """Make psycopg forget the statements it prepared, after a DISCARD ALL dropped them.

    Its next execution of a query prepares it again under a new name. Uses
    psycopg's own cache reset (what it does when a cursor runs DISCARD ALL),
    minus the DEALLOCATE ALL that reset queues: the server already forgot them.
    """
    prepared = conn._prepared
    prepared.clear()
    prepared._to_flush.clear()


def is_clean(pgconn: pq.abc.PGconn) -> bool:
    """Whether a returned connection can go back to the pool: idle, no pipeline left open."""
    return (
        pgconn.transaction_status == pq.TransactionStatus.IDLE
        and pgconn.pipeline_status == pq.PipelineStatus.OFF
    )


def needs_reset(conn: Any, saved: tuple[Any, ...]) -> dict[str, Any]:
    """The session attributes a block changed, with the values to restore."""
    now = _read_attrs(conn)
    if now == saved:
        return {}
    return {name: was for name, was, value in zip(_ATTRS, saved, now, strict=True) if value != was}
