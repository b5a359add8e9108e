"""pooled_connection() against raw psycopg_pool and connect-per-request; recovery after kills.

Run: python3 benchmarks/bench_pg.py   (DATABASE_URL, else 127.0.0.1:5432 database test)

Latency: per-request medians over 7 repeats (time.perf_counter loops), ratios
against the peers measured in the same run. Recovery: 8 idle connections
terminated with pg_terminate_backend, then 20 requests: time to the first
success and failed requests, for boundkit and psycopg_pool with and without
``check=ConnectionPool.check_connection``.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool

from boundkit.pg import create_pool, pooled_connection

DSN = os.environ.get("DATABASE_URL", "host=127.0.0.1 port=5432 user=postgres dbname=test")
REPEATS = 7


def per_request(fn: Callable[[], object], calls: int) -> float:
    """Median seconds per call over REPEATS loops of ``calls`` calls."""
    fn()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls)
    return statistics.median(times)


def latency() -> None:
    raw = ConnectionPool(DSN, min_size=1, max_size=3, open=True)
    ours = create_pool(DSN, min_size=1, max_size=3)

    def raw_request() -> None:
        with raw.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def our_request() -> None:
        with pooled_connection(pool=ours) as conn:
            conn.execute("SELECT 1").fetchone()

    def connect_request() -> None:
        with psycopg.connect(DSN) as conn:
            conn.execute("SELECT 1").fetchone()

    # interleave so machine noise hits both pools alike
    raw_runs, our_runs = [], []
    for _ in range(3):
        raw_runs.append(per_request(raw_request, 500))
        our_runs.append(per_request(our_request, 500))
    t_raw, t_ours = statistics.median(raw_runs), statistics.median(our_runs)
    t_connect = per_request(connect_request, 40)
    raw.close()
    ours.close()
    print("latency per request, SELECT 1 (median of medians):")
    print(f"  psycopg_pool pool.connection()   {t_raw * 1e6:9.1f} us")
    print(
        f"  boundkit pooled_connection()     {t_ours * 1e6:9.1f} us   "
        f"{t_ours / t_raw:.2f}x raw pool"
    )
    print(
        f"  psycopg.connect() per request    {t_connect * 1e6:9.1f} us   "
        f"boundkit is {t_connect / t_ours:.1f}x faster"
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


def plain_request(pool: object) -> None:
    with pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SELECT 1").fetchone()


def our_request(pool: object) -> None:
    with pooled_connection(pool=pool) as conn:  # type: ignore[arg-type]
        conn.execute("SELECT 1").fetchone()


def main() -> None:
    logging.disable(logging.WARNING)  # psycopg_pool logs every discarded connection
    latency()
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
