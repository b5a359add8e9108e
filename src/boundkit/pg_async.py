"""The async twins of :mod:`boundkit.pg`: ``acreate_pool()`` and ``apooled_connection()``.

Same guarantees as the sync module; the I/O-free logic is shared in ``_pg_base``.
Names that start with ``a`` are awaited (``acreate_pool``, ``arelease_idle``,
``aclose_pools``) or entered with ``async with`` (``apooled_connection``); the
others are plain calls: :func:`pool_stats` reads counters, and
:func:`release_idle_threadsafe` is for code outside the event loop (the memory
guard's thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import warnings
import weakref
from time import monotonic
from typing import Any

from ._extras import raise_if_extra_missing

try:
    import psycopg
    from psycopg.rows import tuple_row
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as _exc:  # the 'postgres' extra is not installed
    raise_if_extra_missing("boundkit.pg_async", _exc)
    raise

from ._pg_base import (
    ALIVE,
    DIAGNOSE_AFTER,
    RESET_SESSION,
    SESSION_ATTRS,
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
from ._window import check_seconds

__all__ = [
    "AsyncPooledConnection",
    "aclose_pools",
    "acreate_pool",
    "apool_stats",
    "apooled_connection",
    "arelease_idle",
    "pool_stats",
    "release_idle_threadsafe",
]

logger = logging.getLogger("boundkit.pg_async")

_REGISTRY = Registry()
os.register_at_fork(after_in_child=_REGISTRY.forget_after_fork)
# the event loop each pool was opened on: the only one that may touch it
_LOOPS: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()
# releases release_idle_threadsafe() scheduled on the caller's own loop, kept until done
_PENDING: set[asyncio.Task[int]] = set()


async def acreate_pool(
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
) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """Open a ``psycopg_pool.AsyncConnectionPool``; arguments as :func:`boundkit.pg.create_pool`."""
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
    return await _open(settings)


async def _open(settings: PoolSettings) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        settings.conninfo,
        open=False,
        reconnect_failed=_regrow_if_waited_on,
        **settings.pool_arguments(),
    )
    _REGISTRY.states[pool] = PoolState(settings)
    _LOOPS[pool] = asyncio.get_running_loop()
    await pool.open()
    return pool


async def _regrow_if_waited_on(pool: AsyncConnectionPool[Any]) -> None:
    if not pool.closed and pool.get_stats().get("requests_waiting"):
        await pool.check()


class AsyncPooledConnection(LeaseBase, psycopg.AsyncConnection[Any]):
    """A ``psycopg.AsyncConnection`` lent for one block; refuses use after it."""

    __slots__ = ()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """``AsyncConnection.cursor()``; the cursor closes when the block ends."""
        return self._track(super().cursor(*args, **kwargs))


forward_attributes(AsyncPooledConnection, psycopg.AsyncConnection)


def apooled_connection(
    conninfo: str | None = None, *, pool: AsyncConnectionPool[Any] | None = None
) -> contextlib.AbstractAsyncContextManager[AsyncPooledConnection]:
    """The async twin of :func:`boundkit.pg.pooled_connection`, with the same guarantees."""
    return _Lending(conninfo, pool)


class _Lending:
    # a class, not @asynccontextmanager: its generator cost ~2 us per block
    __slots__ = ("_conninfo", "_lent", "_pool")

    def __init__(self, conninfo: str | None, pool: AsyncConnectionPool[Any] | None) -> None:
        self._conninfo = conninfo
        self._pool = pool
        self._lent: (
            tuple[AsyncConnectionPool[Any], PoolState, AsyncPooledConnection, Any] | None
        ) = None

    async def __aenter__(self) -> AsyncPooledConnection:
        if self._lent is not None:
            raise RuntimeError("this apooled_connection() is already in use; call it again")
        pool, state = await _pool_for(self._conninfo, self._pool)
        conn = await _checkout(pool, state)
        lease = AsyncPooledConnection(conn)
        self._lent = (pool, state, lease, conn)
        return lease

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        lent = self._lent
        self._lent = None
        if lent is not None:
            await _give_back(*lent, commit=exc_type is None)


async def _pool_for(
    conninfo: str | None, pool: AsyncConnectionPool[Any] | None
) -> tuple[AsyncConnectionPool[Any], PoolState]:
    if pool is None:
        key = resolve_conninfo(conninfo)
        pool = _REGISTRY.defaults.get(key)
        if pool is None or pool.closed:
            pool = _REGISTRY.defaults[key] = await acreate_pool(key)
    state = _REGISTRY.state_of(pool)
    if state.pid != _REGISTRY.pid:  # inherited through fork(): never touch it
        twin = _REGISTRY.twins.get(id(pool))
        if twin is None:
            twin = _REGISTRY.twins[id(pool)] = await _open(state.settings)
        pool, state = twin, _REGISTRY.state_of(twin)
    return pool, state


async def _checkout(pool: AsyncConnectionPool[Any], state: PoolState) -> Any:
    started = monotonic()
    deadline = started + pool.timeout
    while True:
        remaining = deadline - monotonic()
        try:
            conn = await pool.getconn(timeout=max(min(remaining, DIAGNOSE_AFTER), 0.001))
        except PoolTimeout:
            if monotonic() >= deadline:
                raise PoolTimeout(exhausted_message(pool, state, monotonic() - started)) from None
            if state.leased < pool.max_size:
                await _diagnose(pool, state)
            continue
        if await _usable(conn):
            state.lent()
            return conn
        state.recoveries += 1
        await conn.close()
        await pool.putconn(conn)


async def _usable(conn: psycopg.AsyncConnection[Any]) -> bool:
    found = idle_state(conn.pgconn)
    if found == UNSURE:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:  # psycopg.Error: it is gone
            return False
        return True
    return found == ALIVE


async def _diagnose(pool: AsyncConnectionPool[Any], state: PoolState) -> None:
    timeout = max(1, round(state.settings.connect_timeout))
    try:
        probe = await psycopg.AsyncConnection.connect(
            state.settings.conninfo_with_options(), connect_timeout=timeout
        )
    except psycopg.OperationalError as exc:
        raise psycopg.OperationalError(connect_failed_message(state, exc)) from exc
    await probe.close()
    await pool.check()


async def _give_back(
    pool: AsyncConnectionPool[Any],
    state: PoolState,
    lease: AsyncPooledConnection,
    conn: psycopg.AsyncConnection[Any],
    *,
    commit: bool,
) -> None:
    ended = lease._end()
    discard = ended.discard or conn.closed  # closed in the block: the pool replaces it
    failed: Exception | None = None  # the commit's error, raised once the connection is back
    try:
        for cursor in ended.cursors:
            with contextlib.suppress(Exception):
                await cursor.close()
        if not discard:
            failed, ended_cleanly = await _end_transaction(conn, commit=commit)
            if not (ended_cleanly and await _reset(conn, ended, session=state.reset)):
                discard = True
    except BaseException:
        discard = True
        raise
    finally:
        if discard or not is_clean(conn.pgconn):
            state.discards += 1
            await conn.close()
        await pool.putconn(conn)
        state.returned()
    if failed is not None:
        raise failed


async def _end_transaction(
    conn: psycopg.AsyncConnection[Any], *, commit: bool
) -> tuple[Exception | None, bool]:
    """As :func:`boundkit.pg._end_transaction`: ``commit()``, else ``rollback()``."""
    failed = None
    if commit:
        try:
            await conn.commit()
            return None, True
        except Exception as exc:
            failed = exc
    try:
        await conn.rollback()
    except Exception:
        return failed, False
    return failed, True


async def _reset(conn: psycopg.AsyncConnection[Any], ended: Ended, *, session: bool) -> bool:
    """As :func:`boundkit.pg._reset`: attributes, handlers, session, queued notifications."""
    try:
        for name, value in needs_reset(conn, ended.saved).items():
            if name in SESSION_ATTRS:
                await getattr(conn, f"set_{name}")(value)
            else:
                setattr(conn, name, value)
        remove_handlers(conn, ended.handlers)
        if session:
            autocommit, threshold = conn.autocommit, conn.prepare_threshold
            if not autocommit:  # no BEGIN: the reset runs as one implicit transaction
                await conn.set_autocommit(True)
            conn.prepare_threshold = None  # psycopg's statements stay: its cache need not look
            async with psycopg.AsyncClientCursor(conn, row_factory=tuple_row) as cursor:
                await cursor.execute(RESET_SESSION)
                while cursor.nextset():  # to the last statement's result
                    pass
                row = await cursor.fetchone()  # (None, the names SQL PREPARE gave)
                if row and row[1]:
                    await cursor.execute(deallocate_query(row[1]))
            conn.prepare_threshold = threshold
            if not autocommit:
                await conn.set_autocommit(False)
        async for _ in conn.notifies(timeout=0):  # psycopg queues them for the next notifies()
            pass
    except Exception:  # psycopg.Error: broken, or the server failed the reset
        return False
    return True


def pool_stats() -> dict[str, dict[str, Any]]:
    """Per async pool of this process, by name: as :func:`boundkit.pg.pool_stats`.

    A plain call (nothing is awaited), safe from any thread.
    """
    return {pool.name: stats_of(pool, _REGISTRY.states[pool]) for pool in _REGISTRY.own_pools()}


def apool_stats() -> dict[str, dict[str, Any]]:
    """Deprecated alias of :func:`pool_stats`: an ``a`` name that is not awaited."""
    warnings.warn(
        "boundkit.pg_async.apool_stats() is deprecated: call boundkit.pg_async.pool_stats() "
        "(a plain call; the a-prefixed names are the awaited ones)",
        DeprecationWarning,
        stacklevel=2,
    )
    return pool_stats()


async def arelease_idle(pool: AsyncConnectionPool[Any] | None = None) -> int:
    """Replace each idle connection with a fresh one; return how many were idle.

    The async twin of :func:`boundkit.pg.release_idle`, run on the pools' event
    loop. Without ``pool``, every async pool boundkit made in this process on
    the running loop.
    """
    if pool is None:
        loop = asyncio.get_running_loop()
        pools = [each for each in _REGISTRY.own_pools() if _LOOPS.get(each) is loop]
    else:
        pools = [pool]
    return sum([await _replace_idle(each) for each in pools])


async def _replace_idle(pool: AsyncConnectionPool[Any]) -> int:
    idle = idle_count(pool)
    if hasattr(pool, "drain"):  # psycopg_pool >= 3.3
        await pool.drain()
        return idle
    replaced = 0
    for _ in range(idle):
        try:
            conn = await pool.getconn(timeout=TAKE_IDLE_TIMEOUT)
        except PoolTimeout:  # taken by a request meanwhile
            break
        await conn.close()
        await pool.putconn(conn)  # the pool opens a new one in its place
        replaced += 1
    return replaced


def release_idle_threadsafe(*, timeout: float = 2.0) -> int:
    """Replace idle connections of every async pool, from any thread; return how many.

    For a thread outside the event loop (the memory guard's watcher): each
    pool's :func:`arelease_idle` runs on the loop that opened the pool, through
    ``asyncio.run_coroutine_threadsafe``, waiting at most ``timeout`` seconds
    per loop (then it is cancelled and a warning logged). Called on a loop's
    own thread (a guard check inside a request), it schedules the release as a
    task and does not wait: the loop is never blocked. Pools whose loop has
    stopped are skipped.
    """
    check_seconds("timeout", timeout)
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    loops = {id(loop): loop for pool in _REGISTRY.own_pools() if (loop := _LOOPS.get(pool))}
    closed = 0
    for loop in loops.values():
        if loop.is_closed() or not loop.is_running():
            continue
        if loop is current:
            _PENDING.add(task := loop.create_task(arelease_idle()))
            task.add_done_callback(_PENDING.discard)
            continue
        future = asyncio.run_coroutine_threadsafe(arelease_idle(), loop)
        try:
            closed += future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            logger.warning("release_idle_threadsafe() gave up after %.1f s on a busy loop", timeout)
    return closed


async def aclose_pools() -> None:
    """Close every async pool boundkit made in this process; inherited ones are left alone."""
    for pool in _REGISTRY.own_pools():
        await pool.close()
    _REGISTRY.defaults.clear()
    _REGISTRY.twins.clear()
