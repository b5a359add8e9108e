"""PostgreSQL connections that are always returned, recover by themselves and never leak.

``pooled_connection()`` lends a connection from a ``psycopg_pool.ConnectionPool``
for one ``with`` block: commit on success, rollback on error, session state reset,
the connection always returned and unusable afterwards. Dead connections are
found without a round trip and replaced; a pool used in a forked child is
replaced by the child's own. The async twins live in :mod:`boundkit.pg_async`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from time import monotonic
from typing import Any

from ._extras import raise_if_extra_missing

try:
    import psycopg
    from psycopg.rows import tuple_row
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as _exc:  # the 'postgres' extra is not installed
    raise_if_extra_missing("boundkit.pg", _exc)
    raise

from ._pg_base import (
    ALIVE,
    DIAGNOSE_AFTER,
    RESET_SESSION,
    TAKE_IDLE_TIMEOUT,
    UNSURE,
    Ended,
    LeaseBase,
    PoolSettings,
    PoolState,
    Registry,
    connect_failed_message,
    deallocate_query,
    exhausted_message,
    forward_attributes,
    idle_count,
    idle_state,
    is_clean,
    needs_reset,
    remove_handlers,
    resolve_conninfo,
    stats_of,
)

__all__ = [
    "PooledConnection",
    "close_pools",
    "create_pool",
    "pool_stats",
    "pooled_connection",
    "release_idle",
]

_REGISTRY = Registry()
os.register_at_fork(after_in_child=_REGISTRY.forget_after_fork)


def create_pool(
    conninfo: str | None = None,
    *,
    min_size: int = 0,
    max_size: int = 3,
    timeout: float = 10.0,
    max_idle: float = 60.0,
    max_lifetime: float = 1800.0,
    statement_timeout: float | None = 30.0,
    idle_in_transaction_timeout: float | None = 30.0,
    connect_timeout: float = 5.0,
    name: str | None = None,
    reset_session: bool = True,
    **pool_kwargs: Any,
) -> ConnectionPool[psycopg.Connection[Any]]:
    """Open a ``psycopg_pool.ConnectionPool`` with memory-friendly defaults.

    ``conninfo`` defaults to ``DATABASE_URL``. Times are in seconds;
    ``statement_timeout`` and ``idle_in_transaction_timeout`` (``None``: no
    limit) are set per connection through libpq ``options``.
    ``reset_session=False`` skips the session reset at the end of each block
    (the ``COMMIT`` / ``ROLLBACK`` and the connection attributes still are
    handled): only for code that never changes session state (``SET``, roles,
    temp tables, ``LISTEN``, advisory locks, ``WITH HOLD`` cursors), to save
    the reset's server and client time. Other keywords go to
    ``ConnectionPool``. Use it with :func:`pooled_connection`.
    """
    settings = PoolSettings(
        conninfo=resolve_conninfo(conninfo),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        max_idle=max_idle,
        max_lifetime=max_lifetime,
        statement_timeout=statement_timeout,
        idle_in_transaction_timeout=idle_in_transaction_timeout,
        connect_timeout=connect_timeout,
        name=name,
        reset_session=reset_session,
        pool_kwargs=pool_kwargs,
    )
    return _open(settings)


def _open(settings: PoolSettings) -> ConnectionPool[psycopg.Connection[Any]]:
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        settings.conninfo,
        open=False,
        reconnect_failed=_regrow_if_waited_on,
        **settings.pool_arguments(),
    )
    _REGISTRY.states[pool] = PoolState(settings)
    pool.open()
    return pool


def _regrow_if_waited_on(pool: ConnectionPool[Any]) -> None:
    # a reconnection gave up: start a new one at once if someone is waiting
    if not pool.closed and pool.get_stats().get("requests_waiting"):
        pool.check()


class PooledConnection(LeaseBase, psycopg.Connection[Any]):
    """A ``psycopg.Connection`` lent for one block; refuses use after it.

    An instance of ``psycopg.Connection`` whose every attribute is the lent
    connection's. Cursors it made are closed when the block ends.
    """

    __slots__ = ()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """``Connection.cursor()``; the cursor closes when the block ends."""
        return self._track(super().cursor(*args, **kwargs))


forward_attributes(PooledConnection, psycopg.Connection)


def pooled_connection(
    conninfo: str | None = None, *, pool: ConnectionPool[Any] | None = None
) -> contextlib.AbstractContextManager[PooledConnection]:
    """Lend a pooled connection for one block; always give it back clean.

    Commits when the block ends normally; rolls back when it raises (the
    exception propagates unchanged). Session state (``SET``, roles, temp
    tables, ``LISTEN``, advisory locks, ``autocommit`` and friends) is reset.
    Without ``pool``, a process-wide pool per ``conninfo`` (default
    ``DATABASE_URL``) is created on first use. Raises
    ``psycopg_pool.PoolTimeout`` (stats in the message) when the pool stays
    exhausted for its ``timeout``, and ``psycopg.OperationalError`` carrying the
    server's cause when no connection can be made.
    """
    return _Lending(conninfo, pool)


class _Lending:
    # a class, not @contextmanager: its generator cost ~2 us per block
    __slots__ = ("_conninfo", "_lent", "_pool")

    def __init__(self, conninfo: str | None, pool: ConnectionPool[Any] | None) -> None:
        self._conninfo = conninfo
        self._pool = pool
        self._lent: tuple[ConnectionPool[Any], PoolState, PooledConnection, Any] | None = None

    def __enter__(self) -> PooledConnection:
        if self._lent is not None:
            raise RuntimeError("this pooled_connection() is already in use; call it again")
        pool, state = _pool_for(self._conninfo, self._pool)
        conn = _checkout(pool, state)
        lease = PooledConnection(conn)
        self._lent = (pool, state, lease, conn)
        return lease

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        lent = self._lent
        self._lent = None
        if lent is not None:
            _give_back(*lent, commit=exc_type is None)


def _pool_for(
    conninfo: str | None, pool: ConnectionPool[Any] | None
) -> tuple[ConnectionPool[Any], PoolState]:
    if pool is None:
        key = resolve_conninfo(conninfo)
        pool = _REGISTRY.defaults.get(key)
        if pool is None or pool.closed:
            with _REGISTRY.lock:
                pool = _REGISTRY.defaults.get(key)
                if pool is None or pool.closed:
                    pool = _REGISTRY.defaults[key] = create_pool(key)
    state = _REGISTRY.state_of(pool)
    if state.pid != _REGISTRY.pid:  # inherited through fork(): never touch it
        with _REGISTRY.lock:
            twin = _REGISTRY.twins.get(id(pool))
            if twin is None:
                twin = _REGISTRY.twins[id(pool)] = _open(state.settings)
        pool, state = twin, _REGISTRY.state_of(twin)
    return pool, state


def _checkout(pool: ConnectionPool[Any], state: PoolState) -> Any:
    started = monotonic()
    deadline = started + pool.timeout
    while True:
        remaining = deadline - monotonic()
        try:
            conn = pool.getconn(timeout=max(min(remaining, DIAGNOSE_AFTER), 0.001))
        except PoolTimeout:
            if monotonic() >= deadline:
                raise PoolTimeout(exhausted_message(pool, state, monotonic() - started)) from None
            if state.leased < pool.max_size:  # not exhausted: is connecting failing?
                _diagnose(pool, state)
            continue
        if _usable(conn):
            state.lent()
            return conn
        state.recoveries += 1
        conn.close()
        pool.putconn(conn)  # the pool replaces it in the background


def _usable(conn: psycopg.Connection[Any]) -> bool:
    found = idle_state(conn.pgconn)
    if found == UNSURE:
        try:
            ConnectionPool.check_connection(conn)
        except Exception:  # psycopg.Error: it is gone
            return False
        return True
    return found == ALIVE


def _diagnose(pool: ConnectionPool[Any], state: PoolState) -> None:
    timeout = max(1, round(state.settings.connect_timeout))
    try:
        probe = psycopg.connect(state.settings.conninfo_with_options(), connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        raise psycopg.OperationalError(connect_failed_message(state, exc)) from exc
    probe.close()
    pool.check()  # the server answers: make the pool try again now


def _give_back(
    pool: ConnectionPool[Any],
    state: PoolState,
    lease: PooledConnection,
    conn: psycopg.Connection[Any],
    *,
    commit: bool,
) -> None:
    ended = lease._end()
    discard = ended.discard or conn.closed  # closed in the block: the pool replaces it
    failed: Exception | None = None  # the commit's error, raised once the connection is back
    try:
        for cursor in ended.cursors:
            with contextlib.suppress(Exception):
                cursor.close()
        if not discard:
            failed, ended_cleanly = _end_transaction(conn, commit=commit)
            if not (ended_cleanly and _reset(conn, ended, session=state.reset)):
                discard = True
    except BaseException:
        discard = True
        raise
    finally:
        if discard or not is_clean(conn.pgconn):
            state.discards += 1
            conn.close()
        pool.putconn(conn)
        state.returned()
    if failed is not None:
        raise failed


def _end_transaction(
    conn: psycopg.Connection[Any], *, commit: bool
) -> tuple[Exception | None, bool]:
    """End the block's transaction as ``with psycopg.connect() as conn:`` does.

    ``commit()`` on success, ``rollback()`` on error (and after a failed
    commit). Returns the commit's error, to raise, and whether psycopg could
    roll back: if not (a broken or busy connection, a transaction context or a
    two-phase transaction left open) the connection must be discarded.
    """
    failed = None
    if commit:
        try:
            conn.commit()
            return None, True
        except Exception as exc:
            failed = exc
    try:
        conn.rollback()
    except Exception:
        return failed, False
    return failed, True


def _reset(conn: psycopg.Connection[Any], ended: Ended, *, session: bool) -> bool:
    """Undo what the block changed on the connection and its session; False if that failed.

    The attributes it set, the handlers it added, then the session
    (:data:`~boundkit._pg_base.RESET_SESSION`, and ``DEALLOCATE`` of what SQL
    ``PREPARE`` made), then the notifications that came for nobody.
    """
    try:
        for name, value in needs_reset(conn, ended.saved).items():
            setattr(conn, name, value)
        remove_handlers(conn, ended.handlers)
        if session:
            autocommit, threshold = conn.autocommit, conn.prepare_threshold
            if not autocommit:  # no BEGIN: the reset runs as one implicit transaction
                conn.autocommit = True
            conn.prepare_threshold = None  # psycopg's statements stay: its cache need not look
            # simple query protocol and tuples, whatever cursor_factory the pool gives
            with psycopg.ClientCursor(conn, row_factory=tuple_row) as cursor:
                cursor.execute(RESET_SESSION)
                while cursor.nextset():  # to the last statement's result
                    pass
                row = cursor.fetchone()  # (None, the names SQL PREPARE gave)
                if row and row[1]:
                    cursor.execute(deallocate_query(row[1]))
            conn.prepare_threshold = threshold
            if not autocommit:
                conn.autocommit = False
        for _ in conn.notifies(timeout=0):  # psycopg queues them for the next notifies()
            pass
    except Exception:  # psycopg.Error: broken, or the server failed the reset
        return False
    return True


def pool_stats() -> dict[str, dict[str, Any]]:
    """Per pool of this process, by name: psycopg_pool's stats and boundkit's counters.

    boundkit adds ``checkouts``, ``recoveries`` (dead connections replaced at
    checkout), ``discards`` (closed instead of returned), ``leased`` and
    ``conninfo`` with its password redacted. Reading does not reset psycopg_pool's
    counters.
    """
    return {pool.name: stats_of(pool, _REGISTRY.states[pool]) for pool in _REGISTRY.own_pools()}


def release_idle(pool: ConnectionPool[Any] | None = None) -> int:
    """Replace each idle connection with a fresh one; return how many were idle.

    For memory pressure: a fresh connection holds about 12 KB of client memory,
    one that received a large result holds that result's size (libpq keeps its
    input buffer). Without ``pool``, every pool boundkit made in this process.
    Uses psycopg_pool's ``drain()`` (3.3+), which also replaces a connection lent
    out now when it comes back; with psycopg_pool 3.2 each idle connection is
    taken out, closed and given back, and the pool opens a new one. The pool
    keeps its size: psycopg_pool closes one unused connection per ``max_idle``.
    """
    pools = _REGISTRY.own_pools() if pool is None else [pool]
    return sum(_replace_idle(each) for each in pools)


def _replace_idle(pool: ConnectionPool[Any]) -> int:
    idle = idle_count(pool)
    if hasattr(pool, "drain"):  # psycopg_pool >= 3.3
        pool.drain()
        return idle
    replaced = 0
    for _ in range(idle):
        try:
            conn = pool.getconn(timeout=TAKE_IDLE_TIMEOUT)
        except PoolTimeout:  # taken by a request meanwhile
            break
        conn.close()
        pool.putconn(conn)  # the pool opens a new one in its place
        replaced += 1
    return replaced


def close_pools() -> None:
    """Close every pool boundkit made in this process (also run at interpreter exit).

    Pools inherited through ``fork()`` are left alone: they belong to the parent.
    """
    for pool in _REGISTRY.own_pools():
        pool.close()
    _REGISTRY.defaults.clear()
    _REGISTRY.twins.clear()


atexit.register(close_pools)
