"""Cost of the memory guard: check(), the web middleware per request, and a full cleanup.

Run: ``PYTHONPATH=src python3 benchmarks/bench_guard.py``. Timings use ``timeit``
with repeats; each line shows the median and, for the middleware, the ratio to
the bare app measured in the same run (target: under 1.05, i.e. under 5 %).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

from boundkit import ASGIMiddleware, MemoryGuard, WebMonitor, WSGIMiddleware, process_memory

REPEATS = 15


class NoStats:
    """A stats sink that records nothing: isolates the middleware from RequestStats."""

    def observe(self, route: str, seconds: float, status: int) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


def monitor(*, check_interval: float = 1.0, stats: bool = True) -> WebMonitor:
    return WebMonitor(
        guard=MemoryGuard(limit="64G"),
        stats=None if stats else NoStats(),
        check_interval=check_interval,
    )


def median_seconds(fn: Callable[[], object], number: int) -> float:
    """Median seconds per call of ``fn`` over REPEATS runs of ``number`` calls (timeit)."""
    runs = timeit.repeat(fn, number=number, repeat=REPEATS)
    return statistics.median(runs) / number


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f} us"


def bench_check() -> None:
    guard = MemoryGuard(limit="64G")
    print("check()")
    print(f"  process_memory()               {us(median_seconds(process_memory, 20_000))}")
    print(f"  MemoryGuard.check()            {us(median_seconds(guard.check, 20_000))}")


def bench_interleaved(
    pairs: list[tuple[str, Callable[[], object]]], number: int, batch: int = 1
) -> None:
    """Time variants interleaved repeat by repeat, so drift hits them alike.

    Each call of a variant serves ``batch`` requests; times are per request.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in pairs}
    for _ in range(REPEATS):
        for name, fn in pairs:
            times[name].append(timeit.timeit(fn, number=number) / (number * batch))
    base = statistics.median(times[pairs[0][0]])
    for name, _ in pairs:
        med = statistics.median(times[name])
        print(f"  {name:<30} {us(med)}   {med / base:5.3f}x")


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def bench_wsgi() -> None:
    import flask

    app = flask.Flask("bench")

    @app.get("/")
    def hello() -> str:
        return "Hello, world!"

    bare = app.test_client()
    guarded_app = flask.Flask("bench-guarded")
    guarded_app.add_url_rule("/", view_func=hello)
    guarded_app.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
        guarded_app.wsgi_app, monitor=monitor()
    )
    guarded = guarded_app.test_client()
    every = flask.Flask("bench-every")
    every.add_url_rule("/", view_func=hello)
    every.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
        every.wsgi_app, monitor=monitor(check_interval=0)
    )
    every_client = every.test_client()
    print("WSGI: Flask hello-world through its test client (one full request each)")
    bench_interleaved(
        [
            ("bare Flask", lambda: bare.get("/", buffered=True)),
            ("+ WSGIMiddleware", lambda: guarded.get("/", buffered=True)),
            ("+ WSGIMiddleware, check each", lambda: every_client.get("/", buffered=True)),
        ],
        number=500,
    )

    environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET"}

    def start_response(status: str, headers: Any, exc: Any = None) -> None:
        pass

    wrapped = WSGIMiddleware(_hello, monitor=monitor())
    no_stats = WSGIMiddleware(_hello, monitor=monitor(stats=False))
    print("WSGI: the middleware around a bare callable (its absolute cost)")
    bench_interleaved(
        [
            ("bare WSGI callable", lambda: _hello(environ, start_response)),
            ("+ WSGIMiddleware", lambda: wrapped(environ, start_response)),
            ("+ WSGIMiddleware, no stats", lambda: no_stats(environ, start_response)),
        ],
        number=20_000,
    )


def bench_asgi() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> Any:
        return PlainTextResponse("Hello, world!")

    bare = Starlette(routes=[Route("/", hello)])
    guarded = ASGIMiddleware(bare, monitor=monitor())
    every = ASGIMiddleware(bare, monitor=monitor(check_interval=0))
    no_stats = ASGIMiddleware(bare, monitor=monitor(stats=False))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    batch = 500

    async def serve(app: Any) -> None:
        for _ in range(batch):  # as a server does: many requests on one running loop
            await app(scope, receive, send)

    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    print("ASGI: Starlette hello-world, full ASGI calls on a running loop (no HTTP parsing)")
    bench_interleaved(
        [
            ("bare Starlette", lambda: run(serve(bare))),
            ("+ ASGIMiddleware", lambda: run(serve(guarded))),
            ("+ ASGIMiddleware, check each", lambda: run(serve(every))),
            ("+ ASGIMiddleware, no stats", lambda: run(serve(no_stats))),
        ],
        number=4,
        batch=batch,
    )
    loop.close()


def bench_cleanup() -> None:
    """A full cleanup (hooks + gc + malloc_trim) on a heap of a million live objects."""
    heap = [{"i": i} for i in range(1_000_000)]
    garbage: list[Any] = []
    level = {"used": 0}
    guard = MemoryGuard(limit=100, cooldown=0, reader=lambda: level["used"])
    guard.register_cleanup(garbage.clear)

    def cleanup() -> None:
        garbage.extend([[j] for j in range(10_000)])
        level["used"] = 95  # critical: check() runs the full cleanup
        guard.check()
        level["used"] = 0
        guard.check()

    print(f"cleanup with {len(heap):,} live objects on the heap")
    print(f"  gc.collect() alone             {median_seconds(gc.collect, 3) * 1e3:9.1f} ms")
    print(f"  full guard cleanup             {median_seconds(cleanup, 3) * 1e3:9.1f} ms")
    del heap


def main() -> int:
    logging.getLogger("boundkit").setLevel(logging.ERROR)  # the cleanup logs each run
    print(f"python {sys.version.split()[0]}; medians of {REPEATS} timeit repeats\n")
    bench_check()
    print()
    bench_wsgi()
    print()
    bench_asgi()
    print()
    bench_cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
