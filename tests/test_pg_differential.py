"""Random programs on plain psycopg and on pooled_connection(), compared step by step.

Each program is a few steps in one block: statements (parse errors, invalid
bytes and failing ones included), COPY, nested ``conn.transaction()`` blocks,
pipelines, TPC, commits, attribute changes, notice / notify handlers and
adapters. It runs in ``with psycopg.connect() as conn:`` and in a
``pooled_connection()`` block (sync and async); every step's outcome (rows, row
count, status message, exception class and sqlstate, transaction status), how
the block ends, and what the next borrower of the connection sees must be the
same. A throwaway hot standby refuses a ``BEGIN`` with ``SERIALIZABLE`` or
``READ WRITE``, for the refused-BEGIN programs.

One interpreter serves both flavours: a program is a generator that yields the
calls to make, and a sync or an async driver makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from psycopg.types.string import StrDumper  # noqa: E402

import test_pg  # noqa: E402
from boundkit.pg import create_pool, pooled_connection  # noqa: E402
from boundkit.pg_async import acreate_pool, apooled_connection  # noqa: E402
from fix_pg import _start_cluster  # noqa: E402

# calls a program asks its driver to make


@dataclass(frozen=True)
class Request:
    """One call a program asks its driver to make.

    ``kind`` is ``call`` (``target(*args)``), ``enter`` / ``exit`` (the context
    manager ``target``; ``args`` holds the exception it exits with), ``collect``
    (the items of the iterator ``target``) or ``set`` (attribute ``args[0]`` of
    the connection ``target`` to ``args[1]``).
    """

    kind: str
    target: Any
    args: tuple[Any, ...] = ()


Program = Generator[Any, Any, Any]


def resume(program: Program, value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Hand ``program`` its last call's result or exception: (finished, next request or result)."""
    try:
        return False, program.throw(error) if error is not None else program.send(value)
    except StopIteration as stop:
        return True, stop.value


def perform_sync(request: Request) -> Any:
    """Make one call on sync psycopg objects."""
    kind, target, args = request.kind, request.target, request.args
    if kind == "call":
        return target(*args)
    if kind == "enter":
        return target.__enter__()
    if kind == "exit":
        return target.__exit__(type(args[0]) if args[0] else None, args[0], None)
    if kind == "collect":
        return list(target)
    return setattr(target, *args)


async def perform_async(request: Request) -> Any:
    """Make one call on async psycopg objects."""
    kind, target, args = request.kind, request.target, request.args
    if kind == "call":
        value = target(*args)
        return await value if inspect.isawaitable(value) else value
    if kind == "enter":
        return await target.__aenter__()
    if kind == "exit":
        return await target.__aexit__(type(args[0]) if args[0] else None, args[0], None)
    if kind == "collect":
        return [item async for item in target]
    return await getattr(target, f"set_{args[0]}")(args[1])


def drive_sync(program: Program) -> Any:
    """Run ``program``, making its calls on sync psycopg objects."""
    finished, request = resume(program, None, None)
    while not finished:
        try:
            outcome = (perform_sync(request), None)
        except BaseException as exc:
            outcome = (None, exc)
        finished, request = resume(program, *outcome)
    return request


async def drive_async(program: Program) -> Any:
    """Run ``program``, making its calls on async psycopg objects."""
    finished, request = resume(program, None, None)
    while not finished:
        try:
            outcome = (await perform_async(request), None)
        except BaseException as exc:
            outcome = (None, exc)
        finished, request = resume(program, *outcome)
    return request


# the program's steps


class Boom(Exception):
    """Raised by a program to end its block (or a nested transaction) with an error."""


class UpperDumper(StrDumper):
    """An adapter a program registers: strings go to the server upper-cased."""

    def dump(self, obj: str) -> Any:
        return super().dump(obj.upper())


@dataclass
class Seen:
    """What a program's handlers received, up to the end of the next borrower's block."""

    table: str
    notices: list[str] = field(default_factory=list)
    notifies: list[str] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    who: str = "step"  # or "next borrower"
    pipelines: int = 0  # how deep in conn.pipeline() the step runs
    synced: list[Any] = field(default_factory=list)  # the pipelines entered, innermost last


def describe(exc: BaseException) -> tuple[str, str | None]:
    return (type(exc).__name__, getattr(exc, "sqlstate", None))


def within(manager: Any, body: Callable[[Any], Program]) -> Program:
    """``with manager as x: body(x)`` in a program."""
    entered = yield Request("enter", manager)
    try:
        result = yield from body(entered)
    except BaseException as exc:
        if not (yield Request("exit", manager, (exc,))):
            raise
        return "suppressed"
    yield Request("exit", manager, (None,))
    return result


def sql_step(conn: Any, seen: Seen, query: str, params: Any) -> Program:
    cursor = yield Request("call", conn.execute, (query.format(t=seen.table), params))
    rows = (yield Request("call", cursor.fetchall)) if cursor.description else None
    return (rows, cursor.rowcount, cursor.statusmessage)


def copy_in_step(conn: Any, seen: Seen, values: tuple[int, ...]) -> Program:
    cursor = conn.cursor()

    def write(copy: Any) -> Program:
        for value in values:
            yield Request("call", copy.write_row, ((value,),))

    yield from within(cursor.copy(f"COPY {seen.table} FROM STDIN"), write)
    return (cursor.rowcount, cursor.statusmessage)


def copy_out_step(conn: Any, seen: Seen) -> Program:
    cursor = conn.cursor()

    def read(copy: Any) -> Program:
        rows = yield Request("collect", copy.rows())
        return rows

    query = f"COPY (SELECT x FROM {seen.table} ORDER BY x) TO STDOUT"
    return (yield from within(cursor.copy(query), read))


def nested_step(conn: Any, seen: Seen, kind: str, steps: tuple[Any, ...], ending: str) -> Program:
    def body(_: Any) -> Program:
        outcomes = []
        for step in steps:
            outcomes.append((yield from run_step(conn, seen, step)))
        if ending == "rollback":
            raise psycopg.Rollback()
        if ending == "error":
            raise Boom("inner")
        return outcomes

    if kind == "transaction":
        return (yield from within(conn.transaction(), body))

    def synced(pipeline: Any) -> Program:
        seen.synced.append(pipeline)
        try:
            return (yield from body(pipeline))
        finally:
            seen.synced.pop()

    seen.pipelines += 1
    try:
        return (yield from within(conn.pipeline(), synced))
    finally:
        seen.pipelines -= 1


def run_step(conn: Any, seen: Seen, step: tuple[Any, ...]) -> Program:
    """One step: its outcome, or its exception's class and sqlstate, and the transaction status.

    In a pipeline, and for the pipeline itself, only whether it failed: which
    error surfaces where (the statement's, or ``PipelineAborted``), and the
    status meanwhile, depend on when results arrive, for psycopg alone too. A
    step in a pipeline ends with the pipeline's ``sync()``, so that its error
    surfaces in that step: without it, whether an error shows in a later step
    or at the pipeline's exit depends on when the server's answer arrives, and
    plain psycopg gives different outcomes for the same program run twice.
    """
    kind, *args = step
    coarse = seen.pipelines > 0 or kind == "pipeline"
    try:
        if kind == "sql":
            outcome = yield from sql_step(conn, seen, *args)
        elif kind == "copy_in":
            outcome = yield from copy_in_step(conn, seen, *args)
        elif kind == "copy_out":
            outcome = yield from copy_out_step(conn, seen)
        elif kind in ("transaction", "pipeline"):
            outcome = yield from nested_step(conn, seen, kind, *args)
        elif kind == "set":
            outcome = yield Request("set", conn, tuple(args))
        elif kind == "tpc_begin":
            outcome = yield Request(
                "call", conn.tpc_begin, (conn.xid(1, "boundkit-differential", "b"),)
            )
        elif kind == "notice_handler":
            outcome = conn.add_notice_handler(lambda d: seen.notices.append(d.message_primary))
        elif kind == "notify_handler":
            outcome = conn.add_notify_handler(lambda n: seen.notifies.append(n.payload))
        elif kind == "adapter":
            outcome = conn.adapters.register_dumper(str, UpperDumper)
        elif kind == "notifies":
            outcome = [n.payload for n in (yield Request("collect", conn.notifies(timeout=0.05)))]
        elif kind == "attributes":
            outcome = (conn.autocommit, conn.isolation_level, conn.read_only, conn.deferrable)
        else:  # commit, rollback, tpc_prepare, tpc_commit, tpc_rollback
            outcome = yield Request("call", getattr(conn, kind))
        if seen.synced and kind not in ("transaction", "pipeline"):
            yield Request("call", seen.synced[-1].sync)
    except Exception as exc:
        outcome = "failed" if coarse else describe(exc)
    else:
        outcome = "done" if coarse else outcome
    status = None if seen.pipelines else conn.info.transaction_status
    return (step, outcome, status)


def block(conn: Any, seen: Seen, steps: tuple[Any, ...], ending: str) -> Program:
    """A block's steps, each noted in ``seen``; ``ending="boom"`` ends it with an exception."""
    for step in steps:
        seen.lines.append((seen.who, *(yield from run_step(conn, seen, step))))
    if ending == "boom":
        raise Boom()


# what the next borrower looks at
PROBE = (
    ("attributes",),
    ("sql", "SHOW work_mem", None),
    ("sql", "SELECT %s::text", ("abc",)),
    ("sql", "DO $$BEGIN RAISE NOTICE 'probe'; END$$", None),
    ("notifies",),
    ("sql", "SELECT pg_listening_channels()", None),
    ("sql", "SELECT x FROM {t} ORDER BY x", None),
    ("commit",),
)


def ended(seen: Seen, run: Callable[[], Any]) -> None:
    """Run a block; note how it ended: normally, or with which exception."""
    try:
        run()
        how: tuple[Any, ...] = ("ok",)
    except Exception as exc:
        how = describe(exc)
    seen.lines.append((f"{seen.who}: block ends", *how))
    seen.who = "next borrower"


def run_plain_sync(dsn: str, seen: Seen, steps: tuple[Any, ...], ending: str) -> None:
    def one(steps: tuple[Any, ...], ending: str) -> Any:
        conn = psycopg.connect(dsn)
        try:
            with conn:
                return drive_sync(block(conn, seen, steps, ending))
        finally:
            conn.close()

    ended(seen, lambda: one(steps, ending))
    ended(seen, lambda: one(PROBE, "ok"))


def run_pooled_sync(dsn: str, seen: Seen, steps: tuple[Any, ...], ending: str) -> None:
    pool = create_pool(dsn, max_size=1, name=f"differential-{uuid.uuid4().hex[:8]}")

    def one(steps: tuple[Any, ...], ending: str) -> Any:
        with pooled_connection(pool=pool) as conn:
            return drive_sync(block(conn, seen, steps, ending))

    try:
        ended(seen, lambda: one(steps, ending))
        ended(seen, lambda: one(PROBE, "ok"))
    finally:
        pool.close()


def run_plain_async(dsn: str, seen: Seen, steps: tuple[Any, ...], ending: str) -> None:
    async def one(steps: tuple[Any, ...], ending: str) -> Any:
        conn = await psycopg.AsyncConnection.connect(dsn)
        try:
            async with conn:
                return await drive_async(block(conn, seen, steps, ending))
        finally:
            await conn.close()

    with contextlib.closing(asyncio.new_event_loop()) as loop:
        ended(seen, lambda: loop.run_until_complete(one(steps, ending)))
        ended(seen, lambda: loop.run_until_complete(one(PROBE, "ok")))


def run_pooled_async(dsn: str, seen: Seen, steps: tuple[Any, ...], ending: str) -> None:
    async def one(steps: tuple[Any, ...], ending: str) -> Any:
        async with apooled_connection(pool=pool) as conn:
            return await drive_async(block(conn, seen, steps, ending))

    with contextlib.closing(asyncio.new_event_loop()) as loop:
        name = f"differential-{uuid.uuid4().hex[:8]}"
        pool = loop.run_until_complete(acreate_pool(dsn, max_size=1, name=name))
        try:
            ended(seen, lambda: loop.run_until_complete(one(steps, ending)))
            ended(seen, lambda: loop.run_until_complete(one(PROBE, "ok")))
        finally:
            loop.run_until_complete(pool.close())


RUNNERS = {
    "sync": (run_plain_sync, run_pooled_sync),
    "async": (run_plain_async, run_pooled_async),
}


def flat(seen: Seen, rows: list[Any]) -> list[tuple[Any, ...]]:
    """One line per step, block end and probe, for a diff that points at the first one."""
    return [*seen.lines, ("notices", seen.notices), ("notifies", seen.notifies), ("rows", rows)]


def compare(dsn: str, table: str, flavour: str, program: Any) -> None:
    """Run ``program`` both ways on an emptied ``table``; assert the same outcomes."""
    steps, ending = program
    results = []
    for runner in RUNNERS[flavour]:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SET lock_timeout = '5s'")
            admin.execute(f"TRUNCATE {table}")
        seen = Seen(table)
        runner(dsn, seen, steps, ending)
        with psycopg.connect(dsn) as admin:
            rows = admin.execute(f"SELECT x FROM {table} ORDER BY x").fetchall()
        results.append(flat(seen, rows))
    plain, pooled = results
    assert plain == pooled


table = test_pg.table  # the fixture: an empty table, dropped after the test

# the programs

STATEMENTS = [
    ("SELECT 1", None),
    ("SELECT %s::int", (7,)),
    ("SELECT %s::int", ("x",)),
    ("SELECT 1; SELECT 2", None),
    ("INSERT INTO {t} VALUES (1)", None),
    ("INSERT INTO {t} VALUES (%s)", (2,)),
    ("SELECT x FROM {t} ORDER BY x", None),
    ("SELEC 1", None),
    (r"SELECT E'\xff'", None),
    ("SELECT 1/0", None),
]
SESSION_SQL = [
    ("SET work_mem = '7MB'", None),
    ("SET LOCAL work_mem = '9MB'", None),
    ("LISTEN boundkit_differential", None),
    ("NOTIFY boundkit_differential, 'payload'", None),
    ("DO $$BEGIN RAISE NOTICE 'block'; END$$", None),
    ("SELECT %s::text", ("abc",)),
]
TRANSACTION_SQL = [
    ("COMMIT", None),
    ("ROLLBACK", None),
    ("BEGIN", None),
    ("SAVEPOINT s", None),
    ("ROLLBACK TO SAVEPOINT s", None),
]
ATTRIBUTES = [
    ("set", "autocommit", True),
    ("set", "autocommit", False),
    ("set", "isolation_level", psycopg.IsolationLevel.SERIALIZABLE),
    ("set", "read_only", True),
    ("set", "deferrable", True),
]
COPY = [("sql", "COPY {t} FROM STDIN", None), ("copy_in", (3, 4)), ("copy_out",)]


def _sql(statements: list[tuple[str, Any]]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.sampled_from([("sql", query, params) for query, params in statements])


AREAS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "statements": _sql(STATEMENTS),
    "copy": st.one_of(_sql(STATEMENTS[:7]), st.sampled_from(COPY)),
    "transactions": st.one_of(
        _sql(STATEMENTS + TRANSACTION_SQL),
        st.sampled_from(
            [("commit",), ("rollback",), ("tpc_begin",), ("tpc_prepare",), ("tpc_rollback",)]
        ),
    ),
    "session": st.one_of(
        _sql(STATEMENTS[:7] + SESSION_SQL),
        st.sampled_from([("notice_handler",), ("notify_handler",), ("adapter",), *ATTRIBUTES]),
    ),
}
AREAS["everything"] = st.one_of(*AREAS.values())


def programs(simple: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[Any]:
    """A block's steps, nested ``transaction()`` / ``pipeline()`` included, and its ending."""
    step = st.recursive(
        simple,
        lambda inner: st.one_of(
            st.tuples(
                st.just("transaction"),
                st.lists(inner, min_size=1, max_size=3).map(tuple),
                st.sampled_from(["ok", "rollback", "error"]),
            ),
            st.tuples(
                st.just("pipeline"),
                st.lists(inner, min_size=1, max_size=3).map(tuple),
                st.just("ok"),
            ),
        ),
        max_leaves=5,
    )
    return st.tuples(
        st.lists(step, min_size=1, max_size=5).map(tuple), st.sampled_from(["ok", "boom"])
    ).filter(lambda program: not any(map(_tpc_in_pipeline, program[0])))


def _tpc_in_pipeline(step: tuple[Any, ...], in_pipeline: bool = False) -> bool:
    """Whether ``step`` calls a ``tpc_*`` method inside ``conn.pipeline()``.

    Such programs are left out: one (a failed ``tpc_prepare()``, then
    ``tpc_begin()``, ``tpc_prepare()`` and a syntax error in one pipeline) left
    the transaction INERROR on one side and IDLE on the other once in a CI run,
    and gave the same outcome on both sides in 48 runs after it: an outcome that
    depends on timing, not yet explained.
    """
    kind = step[0]
    if kind in ("transaction", "pipeline"):
        inside = in_pipeline or kind == "pipeline"
        return any(_tpc_in_pipeline(inner, inside) for inner in step[1])
    return in_pipeline and kind.startswith("tpc_")


# no shrinking: a failing example is reported as found, in seconds rather than minutes;
# BOUNDKIT_DIFFERENTIAL_EXAMPLES runs more programs per test (a longer local hunt)
FAST = settings(
    max_examples=int(os.environ.get("BOUNDKIT_DIFFERENTIAL_EXAMPLES", "25")),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("area", list(AREAS))
def test_programs_behave_as_on_psycopg(pg_dsn, table, area, flavour):
    """Random programs give the same outcomes, block endings and next-borrower views."""

    @FAST
    @given(programs(AREAS[area]))
    def check(program: Any) -> None:
        compare(pg_dsn, table, flavour, program)

    check()


# a BEGIN the server refuses: a hot standby refuses SERIALIZABLE and READ WRITE


@pytest.fixture(scope="module")
def standby_dsn() -> Iterator[str]:
    """A throwaway cluster restarted as a hot standby with no primary: read-only, in recovery."""
    try:
        cluster = _start_cluster()
    except Exception as exc:  # initdb or pg_ctl failed
        pytest.skip(f"cannot start a throwaway cluster: {exc}")
    if cluster is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) to start a standby")
    try:
        cluster.stop()
        signal = Path(cluster.data) / "standby.signal"
        signal.touch()
        with contextlib.suppress(OSError):
            shutil.chown(signal, "postgres")
        cluster.start()
        yield cluster.dsn
    finally:
        cluster.remove()


REFUSED = st.tuples(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    ("set", "isolation_level", psycopg.IsolationLevel.SERIALIZABLE),
                    ("set", "read_only", False),
                    ("set", "read_only", True),
                    ("set", "deferrable", True),
                    ("commit",),
                    ("rollback",),
                ]
            ),
            _sql(
                [
                    ("SELECT 1", None),
                    ("SELECT %s::int", (7,)),
                    ("SELECT pg_is_in_recovery()", None),
                    ("SHOW transaction_isolation", None),
                ]
            ),
        ),
        min_size=1,
        max_size=5,
    ).map(tuple),
    st.just("ok"),
)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_refused_begin_fails_as_on_psycopg(standby_dsn, flavour):
    """On a hot standby, a BEGIN it refuses fails the statement as psycopg's does."""
    plain, pooled = RUNNERS[flavour]

    @FAST
    @given(REFUSED)
    def check(program: Any) -> None:
        steps, ending = program
        seen = [Seen("pg_class"), Seen("pg_class")]
        for run, mine in zip((plain, pooled), seen, strict=True):
            run(standby_dsn, mine, steps, ending)
        assert flat(seen[0], []) == flat(seen[1], [])

    check()


def test_the_standby_refuses_serializable_and_read_write(standby_dsn):
    """The standby really refuses those BEGINs, so the property above tests something."""
    for attribute, value, error in [
        (
            "isolation_level",
            psycopg.IsolationLevel.SERIALIZABLE,
            psycopg.errors.FeatureNotSupported,
        ),
        ("read_only", False, psycopg.errors.FeatureNotSupported),
    ]:
        with psycopg.connect(standby_dsn) as conn:
            setattr(conn, attribute, value)
            with pytest.raises(error):
                conn.execute("SELECT 1")


# the smallest program that showed each divergence issue 12 lists: regression tests that
# compare with plain psycopg (tests/test_pg.py checks each bug against fixed expectations)
INSERT = ("sql", "INSERT INTO {t} VALUES (1)", None)
COPY_BY_EXECUTE = ("sql", "COPY {t} FROM STDIN", None)
LISTEN = ("sql", "LISTEN boundkit_differential", None)
NOTIFY = ("sql", "NOTIFY boundkit_differential, 'payload'", None)
KNOWN_PROGRAMS = {
    "#2 a syntax error first leaves no transaction open": (
        (("sql", "SELEC 1", None), INSERT),
        "ok",
    ),
    "#2 invalid bytes first leave no transaction open": (
        (("sql", r"SELECT E'\xff'", None), INSERT),
        "ok",
    ),
    "#3 COPY through execute(): no COMMIT, no error": ((INSERT, COPY_BY_EXECUTE), "ok"),
    "#3 COPY in a pipeline: no COMMIT, no error": (
        (INSERT, ("pipeline", (COPY_BY_EXECUTE,), "ok")),
        "ok",
    ),
    "#5 restoring autocommit on a busy connection replaces the block's error": (
        (("set", "autocommit", True), COPY_BY_EXECUTE),
        "boom",
    ),
    "#6 after tpc_begin() the block commits in one phase": (((("tpc_begin",), INSERT)), "ok"),
    "#7 AdminShutdown loses its class": (
        (("sql", "SELECT pg_terminate_backend(pg_backend_pid() + %s)", (0,)),),
        "ok",
    ),
    "#8 an adapter reaches the next borrower": ((("adapter",),), "ok"),
    "#8 a notice handler reaches the next borrower": ((("notice_handler",),), "ok"),
    "#8 a notify handler misses the block's own notification": (
        (("notify_handler",), LISTEN, NOTIFY),
        "ok",
    ),
}


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    "program",
    [pytest.param(program, id=name) for name, program in KNOWN_PROGRAMS.items()],
)
def test_known_divergences(pg_dsn, table, flavour, program):
    """The smallest program that showed each divergence of issue 12 behaves as on psycopg."""
    compare(pg_dsn, table, flavour, program)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    "attribute",
    [("isolation_level", psycopg.IsolationLevel.SERIALIZABLE), ("read_only", False)],
)
@pytest.mark.parametrize("params", [None, (7,)])
def test_a_refused_begin(standby_dsn, flavour, attribute, params):
    """#1: a BEGIN the standby refuses fails the first statement, with or without parameters."""
    steps = (("set", *attribute), ("sql", "SELECT %s::int" if params else "SELECT 1", params))
    seen = [Seen("pg_class"), Seen("pg_class")]
    for run, mine in zip(RUNNERS[flavour], seen, strict=True):
        run(standby_dsn, mine, steps, "ok")
    assert flat(seen[0], []) == flat(seen[1], [])
