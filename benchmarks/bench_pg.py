"""pooled_connection() against raw psycopg_pool and connect-per-request; recovery after kills.

Run: python3 benchmarks/bench_pg.py   (DATABASE_URL, else 127.0.0.1:5432 database test)

Latency (time.perf_counter_ns around each request, no pyperf): raw
``pool.connection()`` and ``pooled_connection()`` run alternately, ROUNDS rounds
of CALLS requests each, the order flipped every round so drift and load spikes
hit both alike. Printed: the median over rounds of each round's median request
time, the median over rounds of the per-round ratio, and the client CPU time per
request (process_time, all threads: less sensitive to other processes' load).
Two more contenders: boundkit with ``create_pool(reset_session=False)`` (no
session reset, the opt-out), and the raw pool ending each request with
boundkit's COMMIT + session reset query sent as boundkit sends it, to show how
much of the gap is that reset. Recovery:
8 idle connections terminated with pg_terminate_backend, then 20 requests: time
to the first success and failed requests, for boundkit and psycopg_pool with
and without ``check=ConnectionPool.check_connection``. Then the latency again with
every contender on one pool of one connection, so on one server backend: separate
pools get separate backends, whose placement on this 2-core machine moves the
separate-pool ratios more than the code does. That table also runs ``SELECT %s``
with a parameter, whose BEGIN boundkit sends in a libpq pipeline ahead of it
rather than in one simple-protocol message.
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
from psycopg_pool import ConnectionPool

from boundkit._pg_base import COMMIT, DISCARD, closing_gen, forget_prepared
from boundkit.pg import create_pool, pooled_connection

DSN = os.environ.get("DATABASE_URL", "host=127.0.0.1 port=5432 user=postgres dbname=test")
ROUNDS = 31
CALLS = 200


def one_round(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median wall seconds per call, and client CPU seconds per call, over ``calls`` calls."""
    times = []
    cpu = time.process_time()
    for _ in range(calls):
        started = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1e9, (time.process_time() - cpu) / calls


def interleaved(
    contenders: dict[str, Callable[[], object]], rounds: int, calls: int
) -> dict[str, list[tuple[float, float]]]:
    """Each contender's (median, cpu) per round, run alternately with the order flipped."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm up: connections made, statements prepared
        one_round(fn, calls // 4)
    order = list(contenders)
    for _ in range(rounds):
        for name in order:
            runs[name].append(one_round(contenders[name], calls))
        order.reverse()
    return runs


def paired(runs: dict[str, list[tuple[float, float]]], name: str, peer: str = "raw") -> float:
    """The median over rounds of ``name``'s round median over ``peer``'s in the same round."""
    pairs = zip(runs[name], runs[peer], strict=True)
    return statistics.median(o[0] / r[0] for o, r in pairs)


def plain_request(pool: object) -> None:
    with pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SELECT 1").fetchone()


def our_request(pool: object) -> None:
    with pooled_connection(pool=pool) as conn:  # type: ignore[arg-type]
        conn.execute("SELECT 1").fetchone()


def plain_request_with_parameter(pool: object) -> None:
    with pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SELECT %s", (1,)).fetchone()


def our_request_with_parameter(pool: object) -> None:
    """A first statement with a parameter: its BEGIN goes ahead of it in a libpq pipeline."""
    with pooled_connection(pool=pool) as conn:  # type: ignore[arg-type]
        conn.execute("SELECT %s", (1,)).fetchone()


def reset_request(pool: object) -> None:
    """A raw pool request ending with boundkit's COMMIT + DISCARD ALL, as boundkit sends it."""
    conn = pool.getconn()  # type: ignore[attr-defined]
    conn.execute("SELECT 1").fetchone()
    with conn.lock:
        conn.wait(closing_gen(conn.pgconn, (COMMIT, DISCARD)))
        forget_prepared(conn)
    pool.putconn(conn)  # type: ignore[attr-defined]


def latency() -> None:
    raw = ConnectionPool(DSN, min_size=1, max_size=3, open=True)
    reset = ConnectionPool(DSN, min_size=1, max_size=3, open=True)
    ours = create_pool(DSN, min_size=1, max_size=3)
    bare = create_pool(DSN, min_size=1, max_size=3, reset_session=False)

    def connect_request() -> None:
        with psycopg.connect(DSN) as conn:
            conn.execute("SELECT 1").fetchone()

    contenders = {
        "raw": functools.partial(plain_request, raw),
        "reset": functools.partial(reset_request, reset),
        "ours": functools.partial(our_request, ours),
        "bare": functools.partial(our_request, bare),
    }
    runs = interleaved(contenders, ROUNDS, CALLS)
    connects = interleaved({"connect": connect_request}, 5, 20)["connect"]
    for pool in (raw, reset, ours, bare):
        pool.close()

    def median(name: str, index: int = 0) -> float:
        return statistics.median(run[index] for run in runs[name])

    t_raw, t_ours = median("raw"), median("ours")
    c_raw, c_ours = median("raw", 1), median("ours", 1)

    t_reset, c_reset = median("reset"), median("reset", 1)
    t_bare, c_bare = median("bare"), median("bare", 1)
    t_connect = statistics.median(run[0] for run in connects)
    print(f"latency per request, SELECT 1: median of {ROUNDS} interleaved round medians")
    print(f"  psycopg_pool pool.connection()   {t_raw * 1e6:9.1f} us   cpu {c_raw * 1e6:6.1f} us")
    print(
        f"  boundkit pooled_connection()     {t_ours * 1e6:9.1f} us   cpu {c_ours * 1e6:6.1f} us"
        f"   {t_ours / t_raw:.2f}x raw pool (median of paired ratios {paired(runs, 'ours'):.2f}x,"
        f" cpu {c_ours / c_raw:.2f}x)"
    )
    print(
        f"  ... with reset_session=False     {t_bare * 1e6:9.1f} us   cpu {c_bare * 1e6:6.1f} us"
        f"   {t_bare / t_raw:.2f}x raw pool (median of paired ratios {paired(runs, 'bare'):.2f}x,"
        f" cpu {c_bare / c_raw:.2f}x)"
    )
    print(
        f"  of which the session reset       {t_reset * 1e6:9.1f} us   cpu {c_reset * 1e6:6.1f} us"
        f"   {t_reset / t_raw:.2f}x raw pool (raw pool ending with boundkit's reset SQL)"
    )
    print(
        f"  psycopg.connect() per request    {t_connect * 1e6:9.1f} us   "
        f"boundkit is {t_connect / t_ours:.1f}x faster"
    )


def same_backend() -> None:
    """Raw ``pool.connection()`` against ``pooled_connection()`` on one pool of one connection.

    Every contender then talks to the same server backend. Separate pools (above) each
    get their own backend, and on this shared 2-core machine where the scheduler puts a
    backend moves a whole pool's latency by up to 1.5x either way, run to run.
    """
    pool = create_pool(DSN, min_size=1, max_size=1)

    contenders = {
        "raw": functools.partial(plain_request, pool),
        "ours": functools.partial(our_request, pool),
        "reset": functools.partial(reset_request, pool),
        "raw %s": functools.partial(plain_request_with_parameter, pool),
        "ours %s": functools.partial(our_request_with_parameter, pool),
    }
    runs = interleaved(contenders, 21, 200)
    pool.close()
    print("the same, all on one pool of one connection (one server backend):")
    for name, label in (
        ("raw", "psycopg_pool pool.connection()"),
        ("ours", "boundkit pooled_connection()"),
        ("reset", "raw + boundkit's reset"),
        ("raw %s", "SELECT %s, (1,): raw pool"),
        ("ours %s", "SELECT %s, (1,): boundkit"),
    ):
        wall = statistics.median(run[0] for run in runs[name])
        print(
            f"  {label:<32} {wall * 1e6:9.1f} us"
            f"   median of paired ratios {paired(runs, name):.2f}x"
        )
    print(
        "  SELECT %s: boundkit over raw pool, median of paired ratios"
        f" {paired(runs, 'ours %s', 'raw %s'):.2f}x"
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
    latency()
    same_backend()
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
