"""boundkit.pg_async against a real PostgreSQL: the same guarantees as the sync twin."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")

import test_pg  # noqa: E402
from boundkit import ConfigError, ResourceClosedError  # noqa: E402
from boundkit.pg_async import (  # noqa: E402
    aclose_pools,
    acreate_pool,
    apool_stats,
    apooled_connection,
    arelease_idle,
    pool_stats,
    release_idle_threadsafe,
)
from boundkit.testing import assert_no_growth  # noqa: E402
from fix_pg import login_user, terminate_backend, terminate_backends  # noqa: E402
from test_pg import BAD_NUMBERS, _count, frontend_messages, round_trips, traced  # noqa: E402

table = test_pg.table  # the fixture: an empty table, dropped after the test


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    """Run one async scenario in a fresh loop, closing its pools afterwards."""

    async def scenario() -> Any:
        try:
            return await test()
        finally:
            await aclose_pools()

    return asyncio.run(scenario())


async def _fetch(pool: psycopg_pool.AsyncConnectionPool, query: str) -> Any:
    async with apooled_connection(pool=pool) as conn:
        return (await (await conn.execute(query)).fetchone())[0]


async def _one(pool: psycopg_pool.AsyncConnectionPool) -> int:
    return int(await _fetch(pool, "SELECT 1"))


async def _failed_requests(pool: psycopg_pool.AsyncConnectionPool, count: int) -> int:
    failures = 0
    for _ in range(count):
        try:
            assert 1 == await _one(pool)
        except psycopg.Error:
            failures += 1
    return failures


def test_commit_rollback_and_use_after_block(pg_dsn):
    """Commit on success, rollback + propagate on error, refuse use after the block."""

    async def scenario() -> tuple[int, bool]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        name = f"t_{uuid.uuid4().hex[:10]}"
        async with apooled_connection(pool=pool) as conn:
            await conn.execute(f"CREATE TABLE {name} (x int)")
        error = KeyError("boom")
        stale = []

        async def failing() -> None:
            async with apooled_connection(pool=pool) as conn:
                stale.append(conn)
                await conn.execute(f"INSERT INTO {name} VALUES (1)")
                raise error

        with pytest.raises(KeyError) as info:
            await failing()
        with pytest.raises(ResourceClosedError):
            await stale[0].execute("SELECT 1")
        async with apooled_connection(pool=pool) as conn:
            rows = (await (await conn.execute(f"SELECT count(*) FROM {name}")).fetchone())[0]
            await conn.execute(f"DROP TABLE {name}")
        return rows, info.value is error

    assert (0, True) == run(scenario)


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT 1; SELECT 2", None),
        ("", None),
        ("SELECT * FROM no_such_table", None),
        ("SELECT %s, %s::text", (1, None)),
        ("SELECT %s::int", ("not a number",)),
    ],
)
def test_first_statement_goes_and_gives_what_psycopg_gives(pg_dsn, query, params):
    """A block's BEGIN and statements go as psycopg sends them; results and errors are its own.

    The block then ends with psycopg's COMMIT or ROLLBACK and the session reset in a round
    trip of its own.
    """

    async def outcome(conn: Any) -> tuple[Any, ...]:
        try:
            cursor = await conn.execute(query, params)
        except psycopg.Error as exc:
            return (type(exc), exc.diag.message_primary, conn.info.transaction_status)
        seen = []
        while True:
            rows = await cursor.fetchall() if cursor.description else None
            seen.append((cursor.statusmessage, rows))
            if not cursor.nextset():
                break
        return (tuple(seen), conn.info.transaction_status)

    async def scenario() -> tuple[Any, ...]:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            with traced(conn.pgconn) as raw_lines:
                expected = await outcome(conn)
        pool = await acreate_pool(pg_dsn, max_size=1)
        with contextlib.ExitStack() as stack:
            async with apooled_connection(pool=pool) as conn:
                lines = stack.enter_context(traced(conn.pgconn))
                seen = await outcome(conn)
                autocommit = conn.autocommit
        sent, psycopg_sent = frontend_messages(lines), frontend_messages(raw_lines)
        return (
            expected == seen,
            autocommit,
            psycopg_sent == sent[: len(psycopg_sent)],
            round_trips(lines) - round_trips(raw_lines),
        )

    # two more round trips: the COMMIT or ROLLBACK, then the session reset
    assert (True, False, True, 2) == run(scenario)


def test_session_state_does_not_reach_next_borrower(pg_dsn):
    """SET and autocommit changes made in one block are gone in the next."""

    async def scenario() -> tuple[str, bool]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        async with apooled_connection(pool=pool) as conn:
            await conn.set_autocommit(True)
            await conn.execute("SET search_path TO nowhere")
        async with apooled_connection(pool=pool) as conn:
            cur = await conn.execute("SELECT current_setting('search_path')")
            return (await cur.fetchone())[0], conn.autocommit

    assert ('"$user", public', False) == run(scenario)


def test_prepare_and_session_user_do_not_reach_next_borrower(pg_dsn):
    """SQL PREPARE and SET SESSION AUTHORIZATION are gone; psycopg's statements still work."""

    async def scenario() -> list[Any]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        seen = []
        for i in range(3):
            async with apooled_connection(pool=pool) as conn:
                conn.prepare_threshold = 0
                cur = await conn.execute(
                    "SELECT (SELECT count(*) FROM pg_prepared_statements WHERE from_sql),"
                    " session_user, %s::int",
                    (i,),
                )
                seen.append(await cur.fetchone())
                await conn.execute("PREPARE mine AS SELECT 1")
                await conn.execute("SET SESSION AUTHORIZATION pg_monitor")
        return seen

    user = login_user(pg_dsn)
    assert [(0, user, 0), (0, user, 1), (0, user, 2)] == run(scenario)


def test_psycopg_keeps_its_prepared_statements_across_blocks(pg_dsn):
    """A statement psycopg prepared in one block is still prepared in the next, and works."""

    async def scenario() -> tuple[list[Any], int]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        async with apooled_connection(pool=pool) as conn:
            conn.prepare_threshold = 0
            await conn.execute("SELECT %s::int + 1", (1,))
        async with apooled_connection(pool=pool) as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements", prepare=False)
            listed = await cur.fetchall()
            cur = await conn.execute("SELECT %s::int + 1", (2,))
            return listed, (await cur.fetchone())[0]

    assert ([("SELECT $1::int + 1",)], 3) == run(scenario)


def test_failed_commit_raises_and_reset_session_false_keeps_state(pg_dsn):
    """A failing COMMIT raises psycopg's error; reset_session=False hands SETs on."""

    async def scenario() -> tuple[bool, str]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        raised = False
        try:
            async with apooled_connection(pool=pool) as conn:
                await conn.execute(
                    "CREATE TEMP TABLE dup (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)"
                )
                await conn.execute("INSERT INTO dup VALUES (1), (1)")
        except psycopg.errors.UniqueViolation:
            raised = True
        bare = await acreate_pool(pg_dsn, max_size=1, reset_session=False)
        async with apooled_connection(pool=bare) as conn:
            await conn.execute("SET search_path TO nowhere")
        return raised, await _fetch(bare, "SELECT current_setting('search_path')")

    assert (True, "nowhere") == run(scenario)


def test_killed_backends_cost_no_failed_request(pg_dsn):
    """After every pooled backend is terminated the next requests all succeed."""
    app = f"bk-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, int]:
        pool = await acreate_pool(f"{pg_dsn} application_name={app}", min_size=4, max_size=4)
        await pool.wait()
        await asyncio.to_thread(terminate_backends, pg_dsn, app)
        failures = await _failed_requests(pool, 10)
        return failures, pool_stats()[pool.name]["recoveries"]

    assert (0, 4) == run(scenario)


def test_server_restart_costs_no_failed_request(pg_cluster):
    """After the server restarts, requests succeed with no error and no backoff stall."""

    async def scenario() -> tuple[int, float]:
        pool = await acreate_pool(pg_cluster.dsn, min_size=4, max_size=4)
        await pool.wait()
        await asyncio.to_thread(pg_cluster.restart)
        started = time.monotonic()
        return await _failed_requests(pool, 10), time.monotonic() - started

    failures, took = run(scenario)
    assert 0 == failures
    assert took < 2.0


def test_serves_within_a_second_after_an_outage(pg_cluster):
    """During a short outage requests fail with the cause; after it, serving resumes in ~1 s."""

    async def scenario() -> float:
        pool = await acreate_pool(pg_cluster.dsn, min_size=2, max_size=2, timeout=5)
        await pool.wait()
        await asyncio.to_thread(pg_cluster.stop)
        try:
            with pytest.raises(psycopg.OperationalError, match=r"cannot connect to .*refused"):
                await _one(pool)
            await asyncio.sleep(0.5)
        finally:
            await asyncio.to_thread(pg_cluster.start)
        started = time.monotonic()
        assert 1 == await _one(pool)
        return time.monotonic() - started

    assert run(scenario) < 1.5


def test_statement_timeout_cancels_and_connection_stays_usable(pg_dsn):
    """A statement over statement_timeout raises QueryCanceled; the connection is reused."""

    async def scenario() -> tuple[int, int]:
        pool = await acreate_pool(pg_dsn, max_size=1, statement_timeout=0.2)
        before = await _fetch(pool, "SELECT pg_backend_pid()")
        with pytest.raises(psycopg.errors.QueryCanceled):
            await _fetch(pool, "SELECT pg_sleep(5)")
        return before, await _fetch(pool, "SELECT pg_backend_pid()")

    before, after = run(scenario)
    assert before == after


def test_idle_in_transaction_timeout_ends_the_session(pg_dsn):
    """A transaction left idle past the timeout fails; the next borrower gets a fresh one."""

    async def scenario() -> int:
        pool = await acreate_pool(pg_dsn, max_size=1, idle_in_transaction_timeout=0.2)

        async def idle_too_long() -> None:
            async with apooled_connection(pool=pool) as conn:
                await conn.execute("SELECT 1")
                await asyncio.sleep(0.6)
                await conn.execute("SELECT 1")

        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            await idle_too_long()
        return await _one(pool)

    assert 1 == run(scenario)


def test_forked_child_uses_its_own_pool(pg_dsn):
    """A child process never uses the parent's async pool's connections nor closes them."""

    async def in_child(pool: psycopg_pool.AsyncConnectionPool) -> int:
        try:
            return int(await _fetch(pool, "SELECT pg_backend_pid()"))
        finally:
            await aclose_pools()

    async def scenario() -> tuple[int, int, int]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        parent_backend = await _fetch(pool, "SELECT pg_backend_pid()")
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child, on a loop of its own
            try:
                os.write(write_end, str(asyncio.run(in_child(pool))).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as reader:
            child_backend = int(await asyncio.to_thread(reader.read) or 0)
        await asyncio.to_thread(os.waitpid, child, 0)
        return parent_backend, child_backend, await _fetch(pool, "SELECT pg_backend_pid()")

    parent_backend, child_backend, parent_after = run(scenario)
    assert child_backend not in (0, parent_backend)
    assert parent_backend == parent_after


def test_exhaustion_and_connection_errors(pg_dsn, pg_cluster):
    """Exhaustion raises PoolTimeout with stats; a bad password raises the cause, redacted."""

    async def scenario() -> str:
        pool = await acreate_pool(pg_dsn, max_size=1, timeout=0.5)
        async with apooled_connection(pool=pool):
            with pytest.raises(psycopg_pool.PoolTimeout, match="leased=1"):
                await _one(pool)
        bad = await acreate_pool(f"{pg_cluster.dsn} password=wrong-secret-123")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            await _one(bad)
        assert time.monotonic() - started < 2.0
        return str(info.value)

    message = run(scenario)
    assert "password authentication failed" in message
    assert "wrong-secret-123" not in message


def test_no_growth_over_checkouts(pg_dsn):
    """Async checkouts hold memory still."""

    async def scenario() -> None:
        pool = await acreate_pool(pg_dsn, max_size=2)

        async def batch() -> None:
            for _ in range(200):
                await _one(pool)
            with contextlib.suppress(psycopg.errors.DivisionByZero):
                async with apooled_connection(pool=pool) as conn:
                    await conn.execute("SELECT 1/0")

        loop = asyncio.get_running_loop()

        def calls() -> None:
            asyncio.run_coroutine_threadsafe(batch(), loop).result()

        await asyncio.to_thread(assert_no_growth, calls, calls=10, rounds=5)

    run(scenario)


def test_pool_stats_is_a_plain_call_and_apool_stats_a_deprecated_alias(pg_dsn):
    """pool_stats() is not awaited (as its sync twin); apool_stats() still works, with a warning."""

    async def scenario() -> tuple[Any, Any, str]:
        pool = await acreate_pool(pg_dsn, name=f"stats-{uuid.uuid4().hex[:8]}")
        await _one(pool)
        with pytest.warns(DeprecationWarning, match=r"pool_stats\(\)") as warned:
            old = apool_stats()[pool.name]["checkouts"]
        return pool_stats()[pool.name]["checkouts"], old, warned[0].filename

    assert (1, 1, __file__) == run(scenario)


def _three_idle_then(
    release: Callable[[Any], Awaitable[int]], pg_dsn: str
) -> tuple[int, set[int], int]:
    """Three connections at once, all idle, then ``release(pool)``.

    Returns what it returned, the backend pids the pool's connections share
    before and after, and the pool's size after.
    """

    async def three_at_once(pool: Any) -> set[int]:
        lease = functools.partial(apooled_connection, pool=pool)
        async with lease() as one, lease() as two, lease() as three:
            return {await _pid_of(conn) for conn in (one, two, three)}

    async def scenario() -> tuple[int, set[int], int]:
        pool = await acreate_pool(pg_dsn, min_size=1, max_size=3)
        before = await three_at_once(pool)
        replaced = await release(pool)
        after = await three_at_once(pool)
        assert 3 == len(after)
        return replaced, before & after, pool.get_stats()["pool_size"]

    return run(scenario)


async def _pid_of(conn: Any) -> int:
    return int((await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0])


def test_arelease_idle_replaces_every_idle_connection(pg_dsn, replacing):
    """arelease_idle() closes each idle connection on the pool's loop; the pool opens new ones."""
    assert (3, set(), 3) == _three_idle_then(arelease_idle, pg_dsn)


def test_release_idle_threadsafe_reaches_the_loop_from_another_thread(pg_dsn, replacing):
    """From a thread outside the loop, release_idle_threadsafe() replaces the idle connections."""

    async def from_a_thread(pool: Any) -> int:
        return await asyncio.to_thread(release_idle_threadsafe, timeout=5)

    assert (3, set(), 3) == _three_idle_then(from_a_thread, pg_dsn)


@pytest.mark.parametrize("timeout", [0, -1, "2", True, float("nan"), float("inf")])
def test_release_idle_threadsafe_refuses_a_bad_timeout(timeout):
    """A timeout that is not positive seconds is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="timeout"):
        release_idle_threadsafe(timeout=timeout)


@pytest.mark.parametrize("options", BAD_NUMBERS, ids=repr)
def test_every_numeric_argument_is_checked(options):
    """acreate_pool() checks its numbers as create_pool() does: ConfigError naming the value."""
    ((name, value),) = options.items()
    with pytest.raises(ConfigError, match=f"{name}.*{re.escape(repr(value))}"):
        asyncio.run(acreate_pool("host=127.0.0.1", **options))


def test_a_failed_first_statement_fails_the_transaction(pg_dsn, table):
    """A first statement the server cannot parse leaves the transaction failed, as psycopg."""

    async def try_each(conn: Any) -> list[type]:
        errors = []
        for each in ("SELEC 1", f"INSERT INTO {table} VALUES (1)"):
            try:
                await conn.execute(each)
            except psycopg.Error as exc:
                errors.append(type(exc))
        return errors

    async def scenario() -> list[type]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        async with apooled_connection(pool=pool) as conn:
            return await try_each(conn)

    assert [psycopg.errors.SyntaxError, psycopg.errors.InFailedSqlTransaction] == run(scenario)
    assert 0 == _count(pg_dsn, table)


async def _copy_through_execute(conn: Any, table: str) -> None:
    """An INSERT, then a COPY through execute(), whose error the block catches: busy connection."""
    await conn.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(psycopg.ProgrammingError, match="COPY cannot be used"):
        await conn.execute(f"COPY {table} FROM STDIN")


def test_a_busy_connection_at_commit_raises_and_its_exception_survives(pg_dsn, table):
    """A busy connection: a commit due raises psycopg's error; the block's own error survives.

    Both connections are discarded, nothing is committed, and the pool serves the next block.
    """

    async def scenario() -> tuple[str, bool, int, int]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        with pytest.raises(psycopg.OperationalError) as at_commit:
            async with apooled_connection(pool=pool) as conn:
                await _copy_through_execute(conn, table)
        error = KeyError("mine")

        async def fail_busy() -> None:
            async with apooled_connection(pool=pool) as conn:
                await conn.set_read_only(False)
                await _copy_through_execute(conn, table)
                raise error

        with pytest.raises(KeyError) as raised:
            await fail_busy()
        discards = pool_stats()[pool.name]["discards"]
        return str(at_commit.value), raised.value is error, discards, await _one(pool)

    message, same, discards, one = run(scenario)
    assert ("another command is already in progress" in message, same) == (True, True)
    assert (2, 1) == (discards, one)
    assert 0 == _count(pg_dsn, table)


def test_a_failed_reset_after_the_commit_is_not_an_error(pg_dsn, table):
    """Once the COMMIT succeeded, a failing session reset only discards the connection."""

    async def scenario() -> tuple[int, int]:
        pool = await acreate_pool(pg_dsn, max_size=1, statement_timeout=0.3)
        with psycopg.connect(pg_dsn) as other:
            async with apooled_connection(pool=pool) as conn:
                await conn.execute("CREATE TEMP TABLE locked (x int)")
                cur = await conn.execute("SELECT pg_my_temp_schema()::regnamespace::text")
                schema = (await cur.fetchone())[0]
                await conn.commit()
                other.execute(f"LOCK TABLE {schema}.locked IN ACCESS SHARE MODE")
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
        return pool_stats()[pool.name]["discards"], await _one(pool)

    assert (1, 1) == run(scenario)
    assert 1 == _count(pg_dsn, table)


def test_a_two_phase_transaction_is_never_committed_in_one_phase(pg_dsn, table):
    """A block that began a two-phase transaction and did not finish it raises as psycopg."""

    async def scenario() -> None:
        pool = await acreate_pool(pg_dsn, max_size=1)

        async def unfinished() -> None:
            async with apooled_connection(pool=pool) as conn:
                await conn.tpc_begin(conn.xid(1, f"bk-{uuid.uuid4().hex}", "b"))
                await conn.execute(f"INSERT INTO {table} VALUES (1)")

        with pytest.raises(psycopg.ProgrammingError, match="two-phase"):
            await unfinished()
        async with apooled_connection(pool=pool) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (2)")
            await conn.commit()

    run(scenario)
    assert 1 == _count(pg_dsn, table)


@pytest.mark.parametrize("where", ["at-commit", "after-commit"])
def test_a_fatal_error_keeps_its_class_and_sqlstate(pg_dsn, where):
    """A backend terminated in a block raises AdminShutdown (57P01), as psycopg does."""

    async def scenario() -> tuple[str | None, int]:
        pool = await acreate_pool(pg_dsn, max_size=1)

        async def killed() -> None:
            async with apooled_connection(pool=pool) as conn:
                await conn.execute("SELECT 1")
                if where == "after-commit":
                    await conn.commit()
                await asyncio.to_thread(terminate_backend, pg_dsn, conn.info.backend_pid)
                if where == "after-commit":
                    await conn.execute("SELECT 1")

        with pytest.raises(psycopg.errors.AdminShutdown) as raised:
            await killed()
        return raised.value.sqlstate, await _one(pool)

    assert ("57P01", 1) == run(scenario)


def test_the_lent_connection_passes_psycopgs_own_checks(pg_dsn):
    """The lent object is a psycopg.AsyncConnection: TypeInfo.fetch, `async with`, .connection."""

    async def scenario() -> list[bool]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        async with apooled_connection(pool=pool) as conn:
            info = await psycopg.types.TypeInfo.fetch(conn, "text")
            cursor = await conn.execute("SELECT 1")
            async with conn:
                await conn.execute("SELECT 1")
            return [
                isinstance(conn, psycopg.AsyncConnection),
                info is not None and info.oid == 25,
                cursor.connection is conn,
                conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE,
                not conn.closed,
            ]

    assert [True] * 5 == run(scenario)


def test_python_side_state_does_not_reach_next_borrower(pg_dsn):
    """Adapters, notice handlers and queued notifications end with the block."""

    class Hex(psycopg.adapt.Loader):
        def load(self, data: bytes) -> str:
            return bytes(data).hex()

    async def scenario() -> tuple[Any, ...]:
        pool = await acreate_pool(pg_dsn, max_size=1)
        seen: list[object] = []
        async with apooled_connection(pool=pool) as conn:
            conn.adapters.register_loader("text", Hex)
            conn.add_notice_handler(seen.append)
            await conn.execute("LISTEN boundkit_queue")
            await conn.commit()
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as other:
                await other.execute("NOTIFY boundkit_queue, 'for block one'")
            await conn.execute("SELECT pg_sleep(0.1)")  # reads the notification in
        async with apooled_connection(pool=pool) as conn:
            value = (await (await conn.execute("SELECT 'hi'::text")).fetchone())[0]
            await conn.execute("DO $$ BEGIN RAISE NOTICE 'to nobody'; END $$")
            queued = [n async for n in conn.notifies(timeout=0)]
        return value, queued, seen

    assert ("hi", [], []) == run(scenario)


def test_a_transaction_context_left_inconsistent_is_not_handed_on(pg_dsn, table):
    """psycopg's transaction bookkeeping after an error never reaches the next borrower.

    On psycopg 3.2.x, an error followed by ``async with conn.transaction():`` left it
    counting an open transaction context, and every later commit() on the connection failed.
    """

    async def scenario() -> None:
        pool = await acreate_pool(pg_dsn, max_size=1)
        with contextlib.suppress(psycopg.Error):
            async with apooled_connection(pool=pool) as conn:
                with contextlib.suppress(psycopg.errors.DivisionByZero):
                    await conn.execute("SELECT 1/0")
                async with conn.transaction():
                    await conn.execute("SELECT 1")
        for value in (1, 2):
            async with apooled_connection(pool=pool) as conn:
                await conn.execute(f"INSERT INTO {table} VALUES (%s)", (value,))
                await conn.commit()

    run(scenario)
    assert 2 == _count(pg_dsn, table)
