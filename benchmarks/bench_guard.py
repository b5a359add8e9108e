"""Cost of the memory guard: check(), the web middleware per request, and a full cleanup.

Run: ``PYTHONPATH=src python3 benchmarks/bench_guard.py``. Timings use ``timeit``
with repeats; each line shows the median and, for the middleware, the ratio to
the bare app measured in the same run (target: under 1.05, i.e. under 5 %).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import http.client
import importlib.util
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boundkit import ASGIMiddleware, MemoryGuard, WebMonitor, WSGIMiddleware, process_memory
from boundkit.metrics import RequestStats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fix_servers import free_port, wait_for_port

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
    stats = RequestStats()
    observe = median_seconds(lambda: stats.observe("/", 0.001, 200), 20_000)
    print(f"  RequestStats.observe()         {us(observe)}   (boundkit.metrics, per request)")


def bench_interleaved(
    pairs: list[tuple[str, Callable[[], object]]], number: int, batch: int = 1
) -> dict[str, float]:
    """Time variants interleaved repeat by repeat, so drift hits them alike.

    Each call of a variant serves ``batch`` requests; times are per request.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in pairs}
    for repeat in range(REPEATS):
        # alternate the order: whichever runs first in a round gains a few percent here
        for name, fn in pairs if repeat % 2 == 0 else pairs[::-1]:
            times[name].append(timeit.timeit(fn, number=number) / (number * batch))
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    base = medians[pairs[0][0]]
    for name, med in medians.items():
        print(f"  {name:<30} {us(med)}   {med / base:5.3f}x")
    return medians


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


async def _asgi_hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def bench_wsgi() -> float:
    """Return the middleware's cost per request (seconds), measured around a bare callable."""
    import flask

    def flask_client(check_interval: float | None) -> Any:
        app = flask.Flask("bench")
        app.add_url_rule("/", view_func=lambda: "Hello, world!")
        if check_interval is not None:
            app.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, monitor=monitor(check_interval=check_interval)
            )
        return app.test_client()

    bare, guarded, every = flask_client(None), flask_client(1.0), flask_client(0)
    print("WSGI: Flask hello-world through its test client (one full request each)")
    bench_interleaved(
        [
            ("bare Flask", lambda: bare.get("/", buffered=True)),
            ("+ WSGIMiddleware", lambda: guarded.get("/", buffered=True)),
            ("+ WSGIMiddleware, check each", lambda: every.get("/", buffered=True)),
        ],
        number=500,
    )
    environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET"}

    def start_response(status: str, headers: Any, exc: Any = None) -> None:
        pass

    wrapped = WSGIMiddleware(_hello, monitor=monitor())
    no_stats = WSGIMiddleware(_hello, monitor=monitor(stats=False))
    print("WSGI: the middleware around a bare callable (its absolute cost)")
    raw = bench_interleaved(
        [
            ("bare WSGI callable", lambda: _hello(environ, start_response)),
            ("+ WSGIMiddleware", lambda: wrapped(environ, start_response)),
            ("+ WSGIMiddleware, no stats", lambda: no_stats(environ, start_response)),
        ],
        number=20_000,
    )
    return raw["+ WSGIMiddleware"] - raw["bare WSGI callable"]


def bench_asgi() -> float:
    """Return the middleware's cost per request (seconds), measured around a bare callable."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> Any:
        return PlainTextResponse("Hello, world!")

    starlette = Starlette(routes=[Route("/", hello)])
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

    def serve(app: Any) -> Callable[[], object]:
        async def requests() -> None:
            for _ in range(batch):  # as a server does: many requests on one running loop
                await app(scope, receive, send)

        return lambda: loop.run_until_complete(requests())

    loop = asyncio.new_event_loop()
    print("ASGI: Starlette hello-world, full ASGI calls on a running loop (no HTTP parsing)")
    bench_interleaved(
        [
            ("bare Starlette", serve(starlette)),
            ("+ ASGIMiddleware", serve(ASGIMiddleware(starlette, monitor=monitor()))),
            (
                "+ ASGIMiddleware, check each",
                serve(ASGIMiddleware(starlette, monitor=monitor(check_interval=0))),
            ),
        ],
        number=4,
        batch=batch,
    )
    print("ASGI: the middleware around a bare callable (its absolute cost)")
    raw = bench_interleaved(
        [
            ("bare ASGI callable", serve(_asgi_hello)),
            ("+ ASGIMiddleware", serve(ASGIMiddleware(_asgi_hello, monitor=monitor()))),
            (
                "+ ASGIMiddleware, no stats",
                serve(ASGIMiddleware(_asgi_hello, monitor=monitor(stats=False))),
            ),
        ],
        number=10,
        batch=batch,
    )
    loop.close()
    return raw["+ ASGIMiddleware"] - raw["bare ASGI callable"]


SERVED_APPS = """
import os
from boundkit import ASGIMiddleware, MemoryGuard, WebMonitor, WSGIMiddleware

def _monitor():
    return WebMonitor(guard=MemoryGuard(limit="64G"))

def wsgi_hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]

async def asgi_hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})

guarded = os.environ.get("GUARDED") == "1"
wsgi_app = WSGIMiddleware(wsgi_hello, monitor=_monitor()) if guarded else wsgi_hello
asgi_app = ASGIMiddleware(asgi_hello, monitor=_monitor()) if guarded else asgi_hello
"""


def _serve(command: list[str], folder: str, guarded: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "GUARDED": "1" if guarded else "0"}
    env["PYTHONPATH"] = os.pathsep.join([folder, env.get("PYTHONPATH", "")])
    args = [arg.replace("PORT", str(port)) for arg in command]
    proc = subprocess.Popen(args, cwd=folder, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, timeout=30)
    except RuntimeError:
        proc.kill()
        raise
    return proc, port


def _requests(port: int, count: int, keep_alive: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        if not keep_alive:
            conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/hello")
        conn.getresponse().read()
        if not keep_alive:
            conn.close()
    conn.close()


def bench_http() -> dict[str, float]:
    """Real hello-world HTTP requests: one server per variant, the client in this process.

    Returns the median seconds per request of each bare server.
    """
    bare: dict[str, float] = {}
    python = [sys.executable, "-m"]
    servers = {
        "WSGI": (
            "gunicorn sync, a connection each",
            [*python, "gunicorn", "-b", "127.0.0.1:PORT", "-w", "1", "apps:wsgi_app"],
            False,
        ),
        "ASGI": (
            "uvicorn, keep-alive",
            [*python, "uvicorn", "--port", "PORT", "--log-level", "error", "apps:asgi_app"],
            True,
        ),
    }
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "apps.py"), "w") as out:
            out.write(SERVED_APPS)
        for title, (server, command, keep_alive) in servers.items():
            if importlib.util.find_spec(command[2]) is None:
                print(f"{title}: skipped, {command[2]} is not installed")
                continue
            procs = [_serve(command, folder, guarded) for guarded in (False, True)]
            server = (
                "gunicorn sync, a connection each" if title == "WSGI" else "uvicorn, keep-alive"
            )
            try:
                print(f"{title}: hello-world HTTP requests ({server}; client in this process)")
                medians = bench_interleaved(
                    [
                        ("bare app", functools.partial(_requests, procs[0][1], 200, keep_alive)),
                        (
                            "+ middleware",
                            functools.partial(_requests, procs[1][1], 200, keep_alive),
                        ),
                    ],
                    number=1,
                    batch=200,
                )
                bare[title] = medians["bare app"]
            finally:
                for proc, _ in procs:
                    proc.terminate()
                    proc.wait()
    return bare


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
    costs = {"WSGI": bench_wsgi()}
    print()
    costs["ASGI"] = bench_asgi()
    print()
    requests = bench_http()
    print("middleware cost (around a bare callable) as a share of a real hello-world request")
    for kind, request in requests.items():
        share = 100 * costs[kind] / request
        print(f"  {kind}  {us(costs[kind])} of {us(request)} = {share:4.2f} %   (target < 5 %)")
    print()
    bench_cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
