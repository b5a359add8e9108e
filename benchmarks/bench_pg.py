"""pooled_connection() against raw psycopg_pool and connect-per-request; recovery after kills.

Run: python3 benchmarks/bench_pg.py   (DATABASE_URL, else 127.0.0.1:5432 database test)

Latency (time.perf_counter_ns around each request, no pyperf), every contender on
one pool of one connection, so on one server backend (separate pools get separate
backends, whose placement on a loaded 2-core machine moves a whole pool's latency
more than the code does). ROUNDS rounds of CALLS requests each, contenders run
alternately with the order flipped every round; printed: each contender's median
of round medians and the median over rounds of its per-round ratio to the peer:

- ``pool.connection()`` with no reset (psycopg_pool alone: BEGIN, SELECT 1, COMMIT);
- ``pool.connection()`` followed by the same reset as boundkit's (DISCARD ALL's steps
  but DEALLOCATE ALL and DISCARD PLANS in one round trip in autocommit, then
  ``notifies(timeout=0)``): what the reset costs, without boundkit's wrapper;
- ``pooled_connection()`` (the full reset): targets 1.25x the first, 1.10x the
  second (the wrapper's own cost).

Then the cost of the lent connection's forwarding alone: ``execute()`` through
the lease against the same call on the connection it lends, in one block; and the
client CPU of the drain of queued notifications every block does. Then
``psycopg.connect()`` per request, and the recovery after killing 8 idle
connections: 8 idle connections terminated with pg_terminate_backend, then 20
requests: time to the first success and failed requests, for boundkit and
psycopg_pool with and without ``check=ConnectionPool.check_connection``.
"""

from __future__ import annotations

import functools
import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from boundkit._pg_base import RESET_SESSION, deallocate_query
from boundkit.pg import create_pool, pooled_connection

DSN = os.environ.get("DATABASE_URL", "host=127.0.0.1 port=5432 user=postgres dbname=test")
ROUNDS = 31
CALLS = 200


def one_round(fn: Callable[[], object], calls: int) -> float:
    """Median wall seconds per call over ``calls`` calls."""
    times = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1e9


def interleaved(
    contenders: dict[str, Callable[[], object]], rounds: int, calls: int
) -> dict[str, list[float]]:
    """Each contender's median per round, run alternately with the order flipped."""
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm up: connections made, statements prepared
        one_round(fn, calls // 4)
    order = list(contenders)
    for _ in range(rounds):
        for name in order:
            runs[name].append(one_round(contenders[name], calls))
        order.reverse()
    return runs


def paired(runs: dict[str, list[float]], name: str, peer: str) -> float:
    """The median over rounds of ``name``'s round median over ``peer``'s in the same round."""
    return statistics.median(o / r for o, r in zip(runs[name], runs[peer], strict=True))


def plain_request(pool: object) -> None:
    with pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SELECT 1").fetchone()


def our_request(pool: object) -> None:
    with pooled_connection(pool=pool) as conn:  # type: ignore[arg-type]
        conn.execute("SELECT 1").fetchone()


def reset_request(pool: object) -> None:
    """``pool.connection()``, then boundkit's session reset and drain, as boundkit sends them."""
    with pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SELECT 1").fetchone()
        conn.commit()
        conn.autocommit, threshold = True, conn.prepare_threshold
        conn.prepare_threshold = None
        with psycopg.ClientCursor(conn, row_factory=tuple_row) as cursor:
            cursor.execute(RESET_SESSION)
            while cursor.nextset():
                pass
            row = cursor.fetchone()
            if row and row[1]:
                cursor.execute(deallocate_query(row[1]))
        conn.prepare_threshold = threshold
        conn.autocommit = False
        for _ in conn.notifies(timeout=0):
            pass


def latency() -> float:
    """Print the one-backend table; return boundkit's median request time."""
    pool = create_pool(DSN, min_size=1, max_size=1)
    contenders = {
        "raw": functools.partial(plain_request, pool),
        "raw+reset": functools.partial(reset_request, pool),
        "ours": functools.partial(our_request, pool),
    }
    runs = interleaved(contenders, ROUNDS, CALLS)
    pool.close()
    print(
        f"latency per request, SELECT 1, one pool of one connection: "
        f"{ROUNDS} interleaved rounds of {CALLS}"
    )
    for name, label in (
        ("raw", "psycopg_pool pool.connection()"),
        ("raw+reset", "pool.connection() + same reset"),
        ("ours", "boundkit pooled_connection()"),
    ):
        print(f"  {label:<34} {statistics.median(runs[name]) * 1e6:8.1f} us")
    print(
        f"  pooled_connection() / pool.connection(), no reset:"
        f"   {paired(runs, 'ours', 'raw'):.2f}x  (target <= 1.25x)"
    )
    print(
        f"  pooled_connection() / pool.connection() + same reset:"
        f" {paired(runs, 'ours', 'raw+reset'):.2f}x  (target <= 1.10x)"
    )
    print(
        f"  the reset alone, pool.connection() + reset / no reset:"
        f" {paired(runs, 'raw+reset', 'raw'):.2f}x"
    )
    return statistics.median(runs["ours"])


def forwarding() -> None:
    """``execute()`` through a lent connection against the connection it lends, one block."""
    pool = create_pool(DSN, min_size=1, max_size=1)
    with pooled_connection(pool=pool) as lease:
        real = lease._bk_conn  # boundkit's own bookkeeping: the connection it lends
        runs = interleaved(
            {
                "lease": lambda: lease.execute("SELECT 1").fetchone(),
                "real": lambda: real.execute("SELECT 1").fetchone(),
            },
            ROUNDS,
            CALLS,
        )
    pool.close()
    difference = statistics.median(a - b for a, b in zip(runs["lease"], runs["real"], strict=True))
    print(
        "  execute() through the lent connection / on the connection itself:"
        f" {paired(runs, 'lease', 'real'):.3f}x (median of paired differences"
        f" {difference * 1e6:+.1f} us)"
    )


def drain_cost() -> None:
    """Client CPU of the per-block drain, ``notifies(timeout=0)`` on an idle connection."""
    with psycopg.connect(DSN, autocommit=True) as conn:

        def drain() -> None:
            for _ in conn.notifies(timeout=0):
                pass

        rounds = []
        for _ in range(ROUNDS):
            times = []
            for _ in range(CALLS):
                started = time.thread_time_ns()
                drain()
                times.append(time.thread_time_ns() - started)
            rounds.append(statistics.median(times))
    print(
        f"  notifies(timeout=0) per block, client CPU (thread_time):"
        f" {statistics.median(rounds) / 1e3:.1f} us"
    )


def connect_per_request(ours: float) -> None:
    def connect_request() -> None:
        with psycopg.connect(DSN) as conn:
            conn.execute("SELECT 1").fetchone()

    connects = interleaved({"connect": connect_request}, 5, 20)["connect"]
    t_connect = statistics.median(connects)
    print(
        f"  psycopg.connect() per request    {t_connect * 1e6:9.1f} us   "
        f"{t_connect / ours:.1f}x boundkit's median"
    )


def kill(app: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()[0]:
            time.sleep(0.01)


def recovery(label: str, make: Callable[[str], object], request: Callable[[object], None]) -> None:
    app = f"bench-{uuid.uuid4().hex[:8]}"
    pool = make(f"{DSN} application_name={app}")
    pool.wait()  # type: ignore[attr-defined]
    kill(app)
    started = time.monotonic()
    first = None
    failed = 0
    for _ in range(20):
        try:
            request(pool)
        except psycopg.Error:
            failed += 1
            continue
        if first is None:
            first = time.monotonic() - started
    pool.close()  # type: ignore[attr-defined]
    shown = "never" if first is None else f"{first * 1000:8.1f} ms"
    print(f"  {label:<36} first success {shown}   failed requests {failed}/20")


def main() -> None:
    logging.disable(logging.WARNING)  # psycopg_pool logs every discarded connection
    ours = latency()
    forwarding()
    drain_cost()
    connect_per_request(ours)
    print("after killing 8 idle connections (pool of 8), 20 requests:")
    recovery(
        "boundkit pooled_connection()",
        lambda dsn: create_pool(dsn, min_size=8, max_size=8),
        our_request,
    )
    recovery(
        "psycopg_pool, no check",
        lambda dsn: ConnectionPool(dsn, min_size=8, max_size=8, open=True),
        plain_request,
    )
    recovery(
        "psycopg_pool, check=check_connection",
        lambda dsn: ConnectionPool(
            dsn, min_size=8, max_size=8, open=True, check=ConnectionPool.check_connection
        ),
        plain_request,
    )


if __name__ == "__main__":
    main()
