"""boundkit.pg against a real PostgreSQL (see fix_pg.py for how it is found)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")

from boundkit import ConfigError, ResourceClosedError  # noqa: E402
from boundkit._pg_base import RESET_SESSION  # noqa: E402
from boundkit.memory import process_memory, trim_memory  # noqa: E402
from boundkit.pg import (  # noqa: E402
    close_pools,
    create_pool,
    pool_stats,
    pooled_connection,
    release_idle,
)
from boundkit.testing import assert_no_growth  # noqa: E402
from fix_pg import (  # noqa: E402
    login_user,
    refused_port,
    silent_port,
    terminate_backend,
    terminate_backends,
)


@pytest.fixture
def make_pool(pg_dsn: str) -> Iterator[object]:
    """Pools for one test, all closed after it."""
    pools = []

    def make(dsn: str = pg_dsn, **options: object) -> psycopg_pool.ConnectionPool:
        options.setdefault("name", f"test-{uuid.uuid4().hex[:8]}")
        pool = create_pool(dsn, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    """An empty table, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (x int)")
        yield name
        conn.execute(f"DROP TABLE {name}")


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _backend_pid(pool: psycopg_pool.ConnectionPool) -> int:
    with pooled_connection(pool=pool) as conn:
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


def test_commits_on_normal_exit(make_pool, pg_dsn, table):
    """A block that ends normally commits its transaction."""
    pool = make_pool()
    with pooled_connection(pool=pool) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")
    assert 1 == _count(pg_dsn, table)


class _Interrupt(BaseException):
    pass


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        (None, KeyError("python")),
        ("SELECT 1/0", None),
        (None, _Interrupt()),
    ],
    ids=["python-error", "sql-error", "base-exception"],
)
def test_rolls_back_returns_and_propagates(make_pool, pg_dsn, table, statement, error):
    """An exception in the block rolls back, returns the connection and propagates unchanged."""
    pool = make_pool(max_size=1)
    raised = None
    try:
        with pooled_connection(pool=pool) as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
            if statement:
                conn.execute(statement)
            raise error
    except BaseException as exc:
        raised = exc
    if error is not None:
        assert error is raised
    else:
        assert isinstance(raised, psycopg.errors.DivisionByZero)
    assert 0 == _count(pg_dsn, table)
    stats = pool_stats()[pool.name]
    assert (0, 1, 0) == (stats["leased"], stats["pool_available"], stats["discards"])
    assert 1 == _count_after_reuse(pool)


def _count_after_reuse(pool: psycopg_pool.ConnectionPool) -> int:
    with pooled_connection(pool=pool) as conn:
        return int(conn.execute("SELECT 1").fetchone()[0])


@contextlib.contextmanager
def traced(pgconn: object) -> Iterator[list[str]]:
    """libpq's protocol trace of ``pgconn`` while the block runs, one message per line."""
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())  # type: ignore[attr-defined]
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)  # type: ignore[attr-defined]
        try:
            yield lines
        finally:
            pgconn.untrace()  # type: ignore[attr-defined]
            trace.seek(0)
            lines += trace.read().splitlines()


def round_trips(lines: list[str]) -> int:
    return sum("\tReadyForQuery\t" in line for line in lines)


def frontend_messages(lines: list[str]) -> list[str]:
    """The messages the client sent, in a libpq trace from :func:`traced`."""
    return [line for line in lines if line.startswith("F\t")]


@pytest.mark.parametrize(
    ("query", "params"),
    [("SELECT 1", None), ("SELECT %s", (1,)), ("SELECT %(x)s::int", {"x": 1})],
    ids=["no-parameters", "parameters", "named-parameters"],
)
def test_the_begin_goes_as_psycopg_sends_it(make_pool, query, params):
    """A block's BEGIN and first statement go as psycopg sends them, then COMMIT and the reset.

    psycopg alone (the pool's raw connection) sends BEGIN, the query, COMMIT; boundkit
    sends the same messages, then the session reset in a round trip of its own.
    """
    pool = make_pool(max_size=1)
    with contextlib.ExitStack() as stack, pooled_connection(pool=pool) as conn:
        lines = stack.enter_context(traced(conn.pgconn))
        assert (1,) == conn.execute(query, params).fetchone()
    raw = pool.getconn()
    try:
        with traced(raw.pgconn) as raw_lines, raw:
            assert (1,) == raw.execute(query, params).fetchone()
    finally:
        pool.putconn(raw)
    sent, expected = frontend_messages(lines), frontend_messages(raw_lines)
    assert expected == sent[: len(expected)]
    assert sent[0].endswith('\tQuery\t "BEGIN"')  # alone in its message
    assert (4, 3) == (round_trips(lines), round_trips(raw_lines))
    reset = [line.split("\t", 2)[-1] for line in sent[len(expected) :]]
    assert [f'Query\t "{RESET_SESSION}"'] == reset


_FIRST_STATEMENTS = [
    ("SELECT 1", None),
    (b"SELECT 1", None),
    ("SELECT 1; SELECT 2", None),
    ("", None),
    ("-- no statement", None),
    ("SHOW transaction_isolation", None),
    ("SELECT * FROM no_such_table", None),
    ("SELECT %s, %s::text, %s", (1, None, b"\x00")),
    ("SELECT %(a)s || %(a)s", {"a": "x"}),
    ("SELECT 100 %% 7, %s", ["y"]),
    ("SELECT %s::int", ("not a number",)),
    ("SELECT %s", ()),
    ("SELECT 1, %s", ()),
    ("SELECT generate_series(1, %s)", (3,)),
    ("SELECT 1; SELECT %s", (2,)),
]


def _outcome(conn: object, query: object, params: object) -> tuple[object, ...]:
    """What ``conn.execute(query, params)`` gives: every result set and status, or the error."""
    try:
        cursor = conn.execute(query, params)  # type: ignore[attr-defined]
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # refused before sending: boundkit has sent no BEGIN yet either
            return (type(exc), str(exc))
        return (type(exc), exc.diag.message_primary, conn.info.transaction_status)  # type: ignore[attr-defined]
    seen = []
    while True:
        rows = cursor.fetchall() if cursor.description else None
        seen.append((cursor.statusmessage, cursor.rowcount, rows))
        if not cursor.nextset():
            break
    return (tuple(seen), conn.info.transaction_status)  # type: ignore[attr-defined]


@pytest.mark.parametrize("factory", ["Cursor", "ClientCursor"])
@pytest.mark.parametrize(("query", "params"), _FIRST_STATEMENTS, ids=repr)
def test_first_statement_gives_what_psycopg_gives(make_pool, pg_dsn, query, params, factory):
    """Results, statuses and errors of a block's first statement are psycopg's own.

    With ClientCursor, psycopg binds parameters into the text and uses the simple protocol.
    """
    pool = make_pool(max_size=1)
    with psycopg.connect(pg_dsn, cursor_factory=getattr(psycopg, factory)) as conn:
        expected = _outcome(conn, query, params)
        conn.rollback()
    with pooled_connection(pool=pool) as conn:
        conn.cursor_factory = getattr(psycopg, factory)
        seen = _outcome(conn, query, params)
        assert (False, 1) == (conn.autocommit, _count_after_reuse_in(conn))
    assert expected == seen
    assert 1 == _count_after_reuse(pool)


def _count_after_reuse_in(conn: object) -> int:
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:  # type: ignore[attr-defined]
        conn.rollback()  # type: ignore[attr-defined]
    return int(conn.execute("SELECT 1").fetchone()[0])  # type: ignore[attr-defined]


def test_first_statements_are_prepared_as_psycopg_prepares_them(make_pool, pg_dsn):
    """A first statement still counts toward prepare_threshold: psycopg prepares it on time."""

    def run(execute: object) -> list[object]:
        seen = []
        for i in range(8):
            seen.append(execute("SELECT %s::int", (i,)))
        seen.append(execute("SELECT statement FROM pg_prepared_statements ORDER BY 1", None))
        return seen

    with psycopg.connect(pg_dsn) as conn:

        def psycopg_alone(query: str, params: object) -> object:
            rows = conn.execute(query, params).fetchall()
            conn.commit()  # a transaction per query, as a block has
            return rows

        expected = run(psycopg_alone)
    pool = make_pool(max_size=1, reset_session=False)

    def ours(query: str, params: object) -> object:
        with pooled_connection(pool=pool) as conn:
            return conn.execute(query, params).fetchall()

    assert [[("SELECT $1::int",)]] == expected[-1:]
    assert expected == run(ours)


def test_a_cursor_factory_with_its_own_execute_sees_the_first_statement(make_pool):
    """A cursor class that overrides execute() (to log, say) runs every statement itself."""
    seen = []

    class Logging(psycopg.Cursor):  # type: ignore[type-arg]
        def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def, override]
            seen.append(query)
            return super().execute(query, params, **kwargs)

    pool = make_pool(max_size=1)
    with pooled_connection(pool=pool) as conn:
        conn.cursor_factory = Logging
        assert (1,) == conn.execute("SELECT 1").fetchone()
    assert ["SELECT 1"] == seen


def test_transaction_attributes_shape_the_begin(make_pool, table):
    """isolation_level and read_only set before the first statement shape its BEGIN."""
    pool = make_pool(max_size=1)
    with pooled_connection(pool=pool) as conn:
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.read_only = True
        seen = conn.execute(
            "SELECT current_setting('transaction_isolation'),"
            " current_setting('transaction_read_only')"
        ).fetchone()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(f"INSERT INTO {table} VALUES (1)")
    assert ("serializable", "on") == seen
    with pooled_connection(pool=pool) as conn:
        conn.autocommit = True
        conn.execute("SELECT 1")
        assert psycopg.pq.TransactionStatus.IDLE == conn.info.transaction_status


@pytest.mark.parametrize("statement", ["SELEC 1", "SELECT E'\\xff'"], ids=["syntax", "bad-bytes"])
def test_a_failed_first_statement_fails_the_transaction(make_pool, pg_dsn, table, statement):
    """A first statement the server refuses to parse leaves the transaction failed, as psycopg.

    A loop that tries each statement and logs errors keeps all-or-nothing: the statements
    after the error raise InFailedSqlTransaction and nothing is committed.
    """

    def try_each(conn: object) -> list[type]:
        errors = []
        for each in (statement, f"INSERT INTO {table} VALUES (1)"):
            try:
                conn.execute(each)  # type: ignore[attr-defined]
            except psycopg.Error as exc:
                errors.append(type(exc))
        return errors

    with psycopg.connect(pg_dsn) as conn:
        expected = try_each(conn)
    with pooled_connection(pool=make_pool(max_size=1)) as conn:
        seen = try_each(conn)
    assert psycopg.errors.InFailedSqlTransaction == expected[-1]
    assert expected == seen
    assert 0 == _count(pg_dsn, table)


def _copy_through_execute(conn: object, table: str, *, pipeline: bool = False) -> None:
    """An INSERT, then a COPY through execute(), whose error the block catches: busy connection.

    With ``pipeline``, the COPY runs inside ``conn.pipeline()``, which fails on leaving it.
    """
    conn.execute(f"INSERT INTO {table} VALUES (1)")  # type: ignore[attr-defined]
    if pipeline:
        with pytest.raises(psycopg.OperationalError, match="COPY"), conn.pipeline():  # type: ignore[attr-defined]
            conn.execute(f"COPY {table} FROM STDIN")  # type: ignore[attr-defined]
        return
    with pytest.raises(psycopg.ProgrammingError, match="COPY cannot be used"):
        conn.execute(f"COPY {table} FROM STDIN")  # type: ignore[attr-defined]


@pytest.mark.parametrize("pipeline", [False, True], ids=["execute", "pipeline"])
def test_a_busy_connection_at_commit_raises_as_psycopg(make_pool, pg_dsn, table, pipeline):
    """A block that leaves the connection busy raises psycopg's commit error; nothing is lost.

    The connection is discarded and the pool serves the next block.
    """
    with (
        contextlib.closing(psycopg.connect(pg_dsn)) as conn,
        pytest.raises(psycopg.Error) as expected,
        conn,  # commits on exit
    ):
        _copy_through_execute(conn, table, pipeline=pipeline)
    pool = make_pool(max_size=1)
    with pytest.raises(psycopg.Error) as seen, pooled_connection(pool=pool) as conn:
        _copy_through_execute(conn, table, pipeline=pipeline)
    assert (type(expected.value), str(expected.value)) == (type(seen.value), str(seen.value))
    assert 0 == _count(pg_dsn, table)
    assert 1 == _count_after_reuse(pool)
    assert 1 == pool_stats()[pool.name]["discards"]


def lock_a_temp_table(conn: object, other: object) -> None:
    """Create (and commit) a temp table in ``conn``; lock it from the session ``other``.

    The session reset (its DISCARD TEMP) that ends ``conn``'s block then waits for that
    lock until its statement_timeout.
    """
    conn.execute("CREATE TEMP TABLE locked (x int)")  # type: ignore[attr-defined]
    schema = conn.execute("SELECT pg_my_temp_schema()::regnamespace::text").fetchone()[0]  # type: ignore[attr-defined]
    conn.commit()  # type: ignore[attr-defined]
    other.execute(f"LOCK TABLE {schema}.locked IN ACCESS SHARE MODE")  # type: ignore[attr-defined]


def test_a_failed_reset_after_the_commit_is_not_an_error(make_pool, pg_dsn, table):
    """Once the COMMIT succeeded, a failing session reset only discards the connection.

    The block reports success for committed work: a retrying caller does not do it twice.
    """
    pool = make_pool(max_size=1, statement_timeout=0.3)
    with psycopg.connect(pg_dsn) as other, pooled_connection(pool=pool) as conn:
        lock_a_temp_table(conn, other)
        conn.execute(f"INSERT INTO {table} VALUES (1)")
    assert 1 == _count(pg_dsn, table)
    assert 1 == pool_stats()[pool.name]["discards"]
    assert 1 == _count_after_reuse(pool)


@pytest.mark.parametrize("attribute", ["autocommit", "read_only", "isolation_level", "deferrable"])
def test_the_blocks_exception_survives_a_connection_that_cannot_be_restored(
    make_pool, table, attribute
):
    """An attribute the block changed on a connection left busy does not replace its exception."""
    pool = make_pool(max_size=1)
    error = KeyError("mine")
    value = {"isolation_level": psycopg.IsolationLevel.SERIALIZABLE, "read_only": False}

    def fail_busy() -> None:
        with pooled_connection(pool=pool) as conn:
            setattr(conn, attribute, value.get(attribute, True))
            _copy_through_execute(conn, table)
            raise error

    with pytest.raises(KeyError) as raised:
        fail_busy()
    assert error is raised.value
    assert 1 == pool_stats()[pool.name]["discards"]
    assert 1 == _count_after_reuse(pool)


def test_a_two_phase_transaction_is_never_committed_in_one_phase(make_pool, pg_dsn, table):
    """A block that began a two-phase transaction and did not finish it raises as psycopg.

    Nothing is committed and the next borrower gets a connection that commits normally.
    """
    pool = make_pool(max_size=1)

    def unfinished() -> None:
        with pooled_connection(pool=pool) as conn:
            conn.tpc_begin(conn.xid(1, f"bk-{uuid.uuid4().hex}", "b"))
            conn.execute(f"INSERT INTO {table} VALUES (1)")

    with pytest.raises(psycopg.ProgrammingError, match="two-phase"):
        unfinished()
    with pooled_connection(pool=pool) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        conn.commit()
    assert 1 == _count(pg_dsn, table)


def test_a_transaction_context_left_inconsistent_is_not_handed_on(make_pool, pg_dsn, table):
    """psycopg's transaction bookkeeping after an error never reaches the next borrower.

    On psycopg 3.2.x, an error followed by ``with conn.transaction():`` left it counting
    an open transaction context, and every later commit() on the connection failed.
    """
    pool = make_pool(max_size=1)
    with contextlib.suppress(psycopg.Error), pooled_connection(pool=pool) as conn:
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with conn.transaction():
            conn.execute("SELECT 1")
    for value in (1, 2):
        with pooled_connection(pool=pool) as conn:
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (value,))
            conn.commit()
    assert 2 == _count(pg_dsn, table)


@pytest.mark.parametrize("where", ["at-commit", "after-commit"])
def test_a_fatal_error_keeps_its_class_and_sqlstate(make_pool, pg_dsn, where):
    """A backend terminated in a block raises AdminShutdown (57P01), as psycopg does."""
    pool = make_pool(max_size=1)

    def killed() -> None:
        with pooled_connection(pool=pool) as conn:
            conn.execute("SELECT 1")
            if where == "after-commit":
                conn.commit()
            terminate_backend(pg_dsn, conn.info.backend_pid)
            if where == "after-commit":
                conn.execute("SELECT 1")

    with pytest.raises(psycopg.errors.AdminShutdown) as raised:
        killed()
    assert "57P01" == raised.value.sqlstate
    assert 1 == _count_after_reuse(pool)


def test_the_lent_connection_passes_psycopgs_own_checks(make_pool):
    """The lent object is a psycopg.Connection: TypeInfo.fetch, `with conn:`, .connection.

    Cursors, transactions and pipelines it makes name it as their connection; `with conn:`
    commits as psycopg's does for a pooled connection, without closing it.
    """
    pool = make_pool(max_size=1)
    with pooled_connection(pool=pool) as conn:
        assert isinstance(conn, psycopg.Connection)
        info = psycopg.types.TypeInfo.fetch(conn, "text")
        assert (25, 1009) == (info.oid, info.array_oid)
        cursor = conn.cursor()
        assert (conn, conn) == (cursor.connection, conn.execute("SELECT 1").connection)
        with conn.transaction() as tx:
            assert conn is tx.connection
        with conn:
            conn.execute("SELECT 1")
        assert (psycopg.pq.TransactionStatus.IDLE, False) == (
            conn.info.transaction_status,
            conn.closed,
        )
        conn.my_attribute = 1
        del conn.my_attribute
        assert not hasattr(conn, "my_attribute")
    assert 0 == pool_stats()[pool.name]["discards"]


def test_python_side_state_does_not_reach_next_borrower(make_pool, pg_dsn):
    """Adapters, notice and notify handlers, queued notifications and cursor factories end too."""
    pool = make_pool(max_size=1)

    class Hex(psycopg.adapt.Loader):
        def load(self, data: bytes) -> str:
            return bytes(data).hex()

    class Named(psycopg.ServerCursor):  # type: ignore[type-arg]
        pass

    seen: list[object] = []
    with pooled_connection(pool=pool) as conn:
        conn.adapters.register_loader("text", Hex)
        assert "6869" == conn.execute("SELECT 'hi'::text").fetchone()[0]
        conn.add_notice_handler(seen.append)
        conn.add_notify_handler(seen.append)
        conn.server_cursor_factory = Named
        conn.prepared_max = 7
        conn.execute("LISTEN boundkit_queue")
        conn.commit()
        conn.remove_notify_handler(seen.append)  # notifications now queue for notifies()
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            other.execute("NOTIFY boundkit_queue, 'for block one'")
        conn.execute("SELECT pg_sleep(0.1)")  # reads the notification in
    with pooled_connection(pool=pool) as conn:
        value = conn.execute("SELECT 'hi'::text").fetchone()[0]
        conn.execute("DO $$ BEGIN RAISE NOTICE 'to nobody'; END $$")
        queued = list(conn.notifies(timeout=0))
        factory, prepared_max = conn.server_cursor_factory, conn.prepared_max
    assert ("hi", [], psycopg.ServerCursor, 100, []) == (
        value,
        queued,
        factory,
        prepared_max,
        seen,
    )


def test_use_after_block_is_refused(make_pool):
    """The connection and its cursors refuse use once the block has ended."""
    pool = make_pool(max_size=1)
    with pooled_connection(pool=pool) as conn:
        cursor = conn.execute("SELECT 1")
        other = conn.cursor()
    with pytest.raises(ResourceClosedError, match="went back to its pool"):
        conn.execute("SELECT 1")
    with pytest.raises(ResourceClosedError):
        conn.commit()
    for stale in (cursor, other):  # closed, and their connection refuses them
        assert stale.closed
        with pytest.raises(ResourceClosedError):
            stale.execute("SELECT 1")
    with pooled_connection(pool=pool) as conn:
        assert psycopg.pq.TransactionStatus.IDLE == conn.info.transaction_status


def test_session_state_does_not_reach_next_borrower(make_pool, pg_dsn):
    """SET, roles, temp tables, LISTEN, advisory locks and attributes are reset on return."""
    pool = make_pool(max_size=1, statement_timeout=7)
    with pooled_connection(pool=pool) as conn:
        conn.execute("SET search_path TO nowhere")
        conn.execute("SET statement_timeout = 2000")
        conn.execute("SET ROLE pg_monitor")
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("LISTEN boundkit")
        conn.execute("SELECT pg_advisory_lock(42)")
        conn.commit()
        conn.autocommit = True
        conn.execute("SET work_mem = '77MB'")
    with pooled_connection(pool=pool) as conn:
        seen = conn.execute(
            "SELECT current_setting('search_path'), current_setting('statement_timeout'),"
            " current_user, to_regclass('pg_temp.scratch'),"
            " (SELECT count(*) FROM pg_listening_channels()),"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "   AND pid = pg_backend_pid()),"
            " current_setting('work_mem')"
        ).fetchone()
        seen = (*seen, conn.autocommit)
    assert ('"$user", public', "7s", login_user(pg_dsn), None, 0, 0, "4MB", False) == seen


@pytest.mark.parametrize("ending", ["commit", "rollback", "autocommit"])
def test_prepare_cursors_sequences_and_session_user_do_not_reach_next_borrower(
    make_pool, pg_dsn, ending
):
    """SQL PREPARE (any name), WITH HOLD cursors, currval() and SESSION AUTHORIZATION end too."""
    pool = make_pool(max_size=1)
    with contextlib.suppress(KeyError), pooled_connection(pool=pool) as conn:
        conn.autocommit = ending == "autocommit"
        conn.execute("PREPARE mine AS SELECT 41 + 1")
        conn.execute('PREPARE "Mixed; Case" AS SELECT 1')
        conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1")
        conn.execute("CREATE TEMP SEQUENCE seq")
        conn.execute("CREATE SEQUENCE IF NOT EXISTS boundkit_seq")
        conn.execute("SELECT nextval('boundkit_seq')")
        conn.execute("SET SESSION AUTHORIZATION pg_monitor")
        conn.commit()
        if ending == "rollback":
            raise KeyError(ending)
    with pooled_connection(pool=pool) as conn:
        seen = conn.execute(
            "SELECT (SELECT count(*) FROM pg_prepared_statements),"
            " (SELECT count(*) FROM pg_cursors), session_user, current_user"
        ).fetchone()
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="currval"):
            conn.execute("SELECT currval('boundkit_seq')")
    assert (0, 0, login_user(pg_dsn), login_user(pg_dsn)) == seen
    assert 0 == pool_stats()[pool.name]["discards"]


def test_psycopg_prepared_statements_stay_consistent_across_blocks(make_pool):
    """psycopg's prepared statements and its cache agree after every reset: no stale name.

    With psycopg alone, a DISCARD ALL run while nothing was prepared leaves later
    ones unseen by its cache (``prepared statement "_pg3_0" does not exist``).
    """
    pool = make_pool(max_size=1)
    with pooled_connection(pool=pool) as conn:  # a first reset while nothing is prepared
        conn.execute("SELECT 1")
    seen = []
    for i in range(4):
        with pooled_connection(pool=pool) as conn:
            conn.prepare_threshold = 0  # prepare at first use
            for j in range(3):
                seen.append(conn.execute("SELECT %s::int * 10 + %s", (i, j)).fetchone()[0])
            seen.append(conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0])
    assert [0, 1, 2, 2, 10, 11, 12, 2, 20, 21, 22, 2, 30, 31, 32, 2] == seen
    assert 0 == pool_stats()[pool.name]["discards"]


def test_psycopg_keeps_its_prepared_statements_across_blocks(make_pool):
    """A statement psycopg prepared in one block is still prepared, and used, in the next.

    The reset leaves out DISCARD ALL's DEALLOCATE ALL, so psycopg's cache and the
    server agree without boundkit touching the cache: no Parse of it again.
    """
    pool = make_pool(max_size=1)
    query = "SELECT %s::int + 1"
    with pooled_connection(pool=pool) as conn:
        conn.prepare_threshold = 0
        conn.execute(query, (1,))
    with pooled_connection(pool=pool) as conn, traced(conn.pgconn) as lines:
        cursor = conn.execute("SELECT statement FROM pg_prepared_statements", prepare=False)
        listed = cursor.fetchall()
        assert 3 == conn.execute(query, (2,)).fetchone()[0]
    parses = [line for line in frontend_messages(lines) if "\tParse\t" in line]
    assert [("SELECT $1::int + 1",)] == listed
    assert [] == [line for line in parses if "SELECT $1::int + 1" in line]


@pytest.mark.parametrize("ending", ["python-error", "sql-error", "autocommit"])
def test_session_state_is_reset_whatever_the_block_ends_with(make_pool, ending):
    """Blocks ending in an exception, an SQL error or autocommit hand on a clean session."""
    pool = make_pool(max_size=1)
    with (
        contextlib.suppress(KeyError, psycopg.errors.DivisionByZero),
        pooled_connection(pool=pool) as conn,
    ):
        conn.autocommit = ending == "autocommit"
        conn.execute("SET search_path TO nowhere")
        conn.execute("SELECT pg_advisory_lock(42)")
        if ending == "sql-error":
            conn.execute("SELECT 1/0")
        elif ending == "python-error":
            raise KeyError(ending)
    with pooled_connection(pool=pool) as conn:
        seen = conn.execute(
            "SELECT current_setting('search_path'),"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "   AND pid = pg_backend_pid())"
        ).fetchone()
    assert ('"$user", public', 0) == seen
    assert 0 == pool_stats()[pool.name]["discards"]


def test_failed_commit_raises_the_psycopg_error_and_rolls_back(make_pool):
    """An error raised by the COMMIT ending the block propagates as psycopg's error class."""
    pool = make_pool(max_size=1)

    def violate_at_commit() -> None:
        with pooled_connection(pool=pool) as conn:
            conn.execute("CREATE TEMP TABLE dup (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
            conn.execute("INSERT INTO dup VALUES (1), (1)")

    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key"):
        violate_at_commit()
    with pooled_connection(pool=pool) as conn:
        seen = conn.execute("SELECT to_regclass('pg_temp.dup')").fetchone()[0]
    stats = pool_stats()[pool.name]
    assert (None, 0, 0) == (seen, stats["leased"], stats["discards"])


def test_reset_session_false_keeps_session_state_but_ends_the_transaction(make_pool, table):
    """With reset_session=False a SET reaches the next borrower; commit and attributes do not."""
    pool = make_pool(max_size=1, reset_session=False)
    with pooled_connection(pool=pool) as conn:
        conn.execute("SET search_path TO nowhere, public")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        conn.row_factory = psycopg.rows.dict_row
    with pooled_connection(pool=pool) as conn:
        seen = conn.execute(
            f"SELECT current_setting('search_path'), (SELECT count(*) FROM {table})"
        ).fetchone()
    assert ("nowhere, public", 1) == seen


def test_a_pooled_connection_call_is_entered_once(make_pool):
    """Entering the same pooled_connection() object while it is lent raises RuntimeError."""
    lending = pooled_connection(pool=make_pool(max_size=2))
    with lending, pytest.raises(RuntimeError, match="already in use"), lending:
        pass
    with lending as conn:
        assert 1 == conn.execute("SELECT 1").fetchone()[0]


def test_prepared_statements_survive_the_reset(make_pool):
    """psycopg's prepared statements still work across blocks after the reset."""
    pool = make_pool(max_size=1)
    results = []
    for i in range(8):
        with pooled_connection(pool=pool) as conn:
            conn.prepare_threshold = 0
            results.append(conn.execute("SELECT %s::int + 1", (i,)).fetchone()[0])
    assert list(range(1, 9)) == results


def _requests(pool: psycopg_pool.ConnectionPool, count: int) -> int:
    failures = 0
    for _ in range(count):
        try:
            assert 1 == _count_after_reuse(pool)
        except psycopg.Error:
            failures += 1
    return failures


def test_killed_backends_cost_no_failed_request(make_pool, pg_dsn):
    """After every pooled backend is terminated the next requests all succeed, quickly."""
    app = f"bk-{uuid.uuid4().hex[:8]}"
    pool = make_pool(f"{pg_dsn} application_name={app}", min_size=8, max_size=8)
    pool.wait()
    assert 8 == terminate_backends(pg_dsn, app)
    started = time.monotonic()
    assert 0 == _requests(pool, 20)
    assert time.monotonic() - started < 2.0
    assert 8 == pool_stats()[pool.name]["recoveries"]


def test_server_restart_costs_no_failed_request(make_pool, pg_cluster):
    """After the server restarts, requests succeed with no error and no backoff stall."""
    pool = make_pool(pg_cluster.dsn, min_size=4, max_size=4)
    pool.wait()
    pg_cluster.restart()
    started = time.monotonic()
    assert 0 == _requests(pool, 10)
    assert time.monotonic() - started < 2.0


def test_serves_within_a_second_after_an_outage(make_pool, pg_cluster):
    """During an outage requests fail fast with the cause; after it, serving resumes in ~1 s."""
    pool = make_pool(pg_cluster.dsn, min_size=2, max_size=2, timeout=5)
    pool.wait()
    pg_cluster.stop()
    try:
        outage_ends = time.monotonic() + 3.0
        while time.monotonic() < outage_ends:
            with pytest.raises(psycopg.OperationalError, match=r"cannot connect to .*refused"):
                _count_after_reuse(pool)
            time.sleep(0.3)
    finally:
        pg_cluster.start()
    started = time.monotonic()
    assert 1 == _count_after_reuse(pool)
    assert time.monotonic() - started < 1.5


def test_statement_timeout_cancels_and_connection_stays_usable(make_pool):
    """A statement over statement_timeout raises QueryCanceled; the connection is reused."""
    pool = make_pool(max_size=1, statement_timeout=0.2)
    before = _backend_pid(pool)
    with pytest.raises(psycopg.errors.QueryCanceled), pooled_connection(pool=pool) as conn:
        conn.execute("SELECT pg_sleep(5)")
    assert before == _backend_pid(pool)


def test_idle_in_transaction_timeout_ends_the_session(make_pool):
    """A transaction left idle past the timeout fails; the next borrower gets a fresh one."""
    pool = make_pool(max_size=1, idle_in_transaction_timeout=0.2)

    def idle_too_long() -> None:
        with pooled_connection(pool=pool) as conn:
            conn.execute("SELECT 1")
            time.sleep(0.6)
            conn.execute("SELECT 1")

    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        idle_too_long()
    assert 1 == _count_after_reuse(pool)


def test_exhaustion_raises_pool_timeout_with_stats(make_pool):
    """With every connection lent out, a request waits `timeout` then raises PoolTimeout."""
    pool = make_pool(max_size=1, timeout=0.5)
    with pooled_connection(pool=pool):
        started = time.monotonic()
        with pytest.raises(psycopg_pool.PoolTimeout, match=r"leased=1.*pool_max=1"):
            _count_after_reuse(pool)
        assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize(
    ("change", "cause", "within"),
    [
        ("password=wrong-secret-123", "password authentication failed", 2.0),
        ("dbname=boundkit_no_such_db", "does not exist", 2.0),
        ("port={free}", "refused", 2.0),
        # 0.5 s before asking why no connection came, then libpq's connect_timeout
        ("host=127.0.0.1 port={silent}", "timeout expired", 4.0),
    ],
    ids=["bad-password", "unknown-db", "refused-port", "host-never-answers"],
)
def test_connection_errors_carry_the_cause(make_pool, pg_cluster, change, cause, within):
    """A bad password, unknown database, refused port or silent host raises the cause, fast.

    Not a bare PoolTimeout after the pool's 10 s timeout.
    """
    with refused_port() as free, silent_port() as silent:
        dsn = f"{pg_cluster.dsn} {change.format(free=free, silent=silent)}"
        pool = make_pool(dsn, connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            _count_after_reuse(pool)
        waited = time.monotonic() - started
    assert waited < within
    assert not isinstance(info.value, psycopg_pool.PoolTimeout)
    assert cause in str(info.value)
    assert "wrong-secret-123" not in str(info.value)
    assert pg_cluster.password not in str(info.value)
    assert "password=***" in str(info.value)


def test_forked_child_uses_its_own_pool(make_pool):
    """A child process never uses the parent's connections nor closes them."""
    pool = make_pool(max_size=1)
    parent_backend = _backend_pid(pool)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            backend = _backend_pid(pool)
            close_pools()
            os.write(write_end, str(backend).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        child_backend = int(reader.read() or 0)
    os.waitpid(child, 0)
    assert child_backend not in (0, parent_backend)
    assert parent_backend == _backend_pid(pool)


def test_discard_gives_back_a_large_results_memory(make_pool):
    """After a 50 MB value, discard() closes the connection and client memory falls back."""
    pool = make_pool(max_size=1)
    mb50 = 50 * 1024 * 1024

    def fetch_large(discard: bool) -> int:
        trim_memory()
        before = process_memory().rss_anon
        with pooled_connection(pool=pool) as conn:
            value = conn.execute("SELECT repeat('x', %s)", (mb50,)).fetchone()[0]
            assert mb50 == len(value)
            del value
            if discard:
                conn.discard()
        trim_memory()
        return process_memory().rss_anon - before

    kept = fetch_large(discard=False)
    released = fetch_large(discard=True)
    assert kept > mb50 * 0.8  # without discard, libpq keeps its 50 MB buffer
    assert released < mb50 * 0.2 - kept  # discarding gives that back
    assert 1 == pool_stats()[pool.name]["discards"]


def _backends_of_three_at_once(pool: psycopg_pool.ConnectionPool) -> set[int]:
    """The backend pids of three blocks held at once (three connections, then all idle)."""
    lease = functools.partial(pooled_connection, pool=pool)
    with lease() as one, lease() as two, lease() as three:
        return {_pid_of(conn) for conn in (one, two, three)}


def _pid_of(conn: object) -> int:
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[attr-defined]


def test_release_idle_replaces_every_idle_connection(make_pool, replacing):
    """release_idle() closes each idle connection; the pool opens fresh ones and keeps its size."""
    pool = make_pool(min_size=1, max_size=3)
    before = _backends_of_three_at_once(pool)
    assert 3 == release_idle(pool)
    after = _backends_of_three_at_once(pool)
    assert (3, set()) == (len(after), before & after)
    assert 3 == pool.get_stats()["pool_size"]


def test_release_idle_gives_back_a_large_results_memory(make_pool, replacing):
    """After a 50 MB value, release_idle() frees the buffer libpq kept on the idle connection."""
    pool = make_pool(max_size=1)
    mb50 = 50 * 1024 * 1024
    trim_memory()
    before = process_memory().rss_anon
    with pooled_connection(pool=pool) as conn:
        assert mb50 == len(conn.execute("SELECT repeat('x', %s)", (mb50,)).fetchone()[0])
    trim_memory()
    kept = process_memory().rss_anon - before
    assert 1 == release_idle(pool)
    trim_memory()
    released = process_memory().rss_anon - before
    assert kept > mb50 * 0.8  # libpq keeps its 50 MB buffer while the connection lives
    assert released < mb50 * 0.2  # replacing the connection gives that back
    assert 1 == _count_after_reuse(pool)


def test_default_pool_comes_from_database_url(pg_dsn, monkeypatch):
    """Without conninfo or pool, DATABASE_URL names the database; close_pools() closes it."""
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    with pooled_connection() as conn:
        assert 1 == conn.execute("SELECT 1").fetchone()[0]
    password = psycopg.conninfo.conninfo_to_dict(pg_dsn).get("password")
    shown = [s["conninfo"] for s in pool_stats().values()]
    if password:  # the stats show the DSN with its password hidden, so never the DSN itself
        assert not [c for c in shown if str(password) in c]
    assert 1 == len([c for c in shown if _same_but_password(c, pg_dsn)])
    close_pools()
    assert {} == pool_stats()


def _same_but_password(shown: str, dsn: str) -> bool:
    parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    if "password" in parsed:
        parsed["password"] = "***"
    return parsed == psycopg.conninfo.conninfo_to_dict(shown)


def test_no_database_is_a_config_error(monkeypatch):
    """With neither conninfo nor DATABASE_URL, the error names DATABASE_URL."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="DATABASE_URL"), pooled_connection():
        pass  # pragma: no cover


BAD_NUMBERS = [
    {"min_size": "2"},
    {"min_size": -1},
    {"max_size": True},
    {"max_size": 2.5},
    {"timeout": "10"},
    {"timeout": float("nan")},
    {"max_idle": float("inf")},
    {"max_lifetime": -5},
    {"connect_timeout": float("inf")},
    {"statement_timeout": float("inf")},
    {"idle_in_transaction_timeout": -1},
    {"idle_in_transaction_timeout": False},
]


@pytest.mark.parametrize(
    "options",
    [{"min_size": 4, "max_size": 2}, {"max_size": 0}, {"timeout": 0}, {"check": print}],
)
def test_bad_settings_are_config_errors(options):
    """Impossible sizes, timeouts or keywords boundkit owns raise ConfigError."""
    with pytest.raises(ConfigError):
        create_pool("host=127.0.0.1", **options)


@pytest.mark.parametrize("options", BAD_NUMBERS, ids=repr)
def test_every_numeric_argument_is_checked(options):
    """A wrong type, NaN or infinity in any number is a ConfigError naming it, not a TypeError."""
    ((name, value),) = options.items()
    with pytest.raises(ConfigError, match=f"{name}.*{re.escape(repr(value))}"):
        create_pool("host=127.0.0.1", **options)


def test_stats_redact_the_password(make_pool, pg_cluster):
    """pool_stats() shows the conninfo without its password."""
    pool = make_pool(pg_cluster.dsn)
    shown = pool_stats()[pool.name]["conninfo"]
    assert pg_cluster.password not in shown
    assert "password=***" in shown


def test_no_growth_over_10000_checkouts(make_pool, pg_dsn):
    """10,000 checkouts hold client memory and the server's backend count still."""
    app = f"bk-{uuid.uuid4().hex[:8]}"
    pool = make_pool(f"{pg_dsn} application_name={app}", max_size=2)

    def backends() -> int:
        with psycopg.connect(pg_dsn) as admin:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            return int(admin.execute(query, (app,)).fetchone()[0])

    def checkout() -> None:
        with pooled_connection(pool=pool) as conn:
            conn.execute("SELECT 1").fetchone()

    checkout()
    before = backends()
    assert_no_growth(checkout, calls=2000, rounds=5)
    assert before == backends()


def test_no_growth_on_the_error_path(make_pool):
    """Blocks that fail with SQL errors hold memory still too."""
    pool = make_pool(max_size=1)

    def failing() -> None:
        with (
            contextlib.suppress(psycopg.errors.DivisionByZero),
            pooled_connection(pool=pool) as conn,
        ):
            conn.execute("SELECT 1/0")

    assert_no_growth(failing, calls=500, rounds=5)


def test_import_boundkit_does_not_import_psycopg():
    """`import boundkit` leaves psycopg and psycopg_pool unimported."""
    code = "import sys, boundkit; print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("1", {"errors": 1}), ("", {"skipped": 1})], ids=["ci", "local"]
)
def test_database_fixture_fails_under_ci_when_no_database_answers(
    pytester, monkeypatch, ci, outcome
):
    """With no reachable database the pg fixtures fail when CI is set, and skip otherwise."""
    pytester.makeconftest('pytest_plugins = ["fix_pg"]')
    pytester.makeini("[pytest]\nmarkers =\n    pg: needs PostgreSQL")
    pytester.makepyfile("def test_needs_db(pg_dsn):\n    raise AssertionError('ran')\n")
    with refused_port() as port:
        monkeypatch.setenv("BOUNDKIT_TEST_DSN", f"host=127.0.0.1 port={port} user=postgres")
        monkeypatch.setenv("CI", ci)
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # fix_pg alone
        result = pytester.runpytest_inprocess("-rsE")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(["*BOUNDKIT_TEST_DSN is set but cannot be reached*refused*"])
