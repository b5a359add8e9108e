"""Tests of boundkit.web: WSGI (Flask) and ASGI (Starlette, FastAPI) middleware on one core."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from boundkit import ASGIMiddleware, ConfigError, MemoryGuard, WebMonitor, WSGIMiddleware
from boundkit.cache import BoundedCache
from boundkit.metrics import RequestStats
from boundkit.testing import assert_no_growth
from boundkit.web import flask_route
from fakes import FakeTimer

MB = 1024**2
SECRET = "hunter2-not-for-health"
HEALTH_KEYS = {"status", "memory", "guard", "requests", "caches", "pools"}


@pytest.fixture(autouse=True)
def _no_admission_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Health shows ``admission`` once this dyno's table exists; an earlier test's table
    (the suite shares one process group) must not reach these tests."""
    from boundkit.admission import ENV_ADMISSION_FILE

    monkeypatch.setenv(ENV_ADMISSION_FILE, str(tmp_path / "admission"))


class StatsCache:
    """A cache-like object with shrink() and stats(), as BoundedCache has."""

    class Stats:
        def as_dict(self) -> dict[str, int]:
            return {"entries": 3}

    def shrink(self, fraction: float) -> None:
        pass

    def stats(self) -> StatsCache.Stats:
        return StatsCache.Stats()


@pytest.fixture
def guard() -> MemoryGuard:
    return MemoryGuard(limit="64G")


@pytest.fixture
def monitor(guard: MemoryGuard) -> WebMonitor:
    return WebMonitor(guard=guard, stats=RequestStats(max_routes=10, window=100))


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in the environment that the health output must never show."""
    monkeypatch.setenv("BOUNDKIT_TEST_SECRET", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db.example/app")


def routes(monitor: WebMonitor) -> dict[str, Any]:
    return dict(monitor.stats.summary()["routes"])


def check_health(body: bytes, monitor: WebMonitor) -> dict[str, Any]:
    """The health JSON has the documented keys, the guard's view, and no secret."""
    assert SECRET not in body.decode()
    payload = json.loads(body)
    assert HEALTH_KEYS == set(payload)
    assert payload["guard"]["limit"] == monitor.guard.status()["limit"]
    assert payload["status"] == payload["guard"]["level"]
    assert "rss_mb" in payload["memory"]
    return dict(payload)


# -- WSGI with Flask ---------------------------------------------------------------------------


@pytest.fixture
def flask_client(monitor: WebMonitor) -> Any:
    flask = pytest.importorskip("flask")
    app = flask.Flask("guarded")

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    app.wsgi_app = WSGIMiddleware(app.wsgi_app, monitor=monitor)  # type: ignore[method-assign]
    client = app.test_client()
    # buffered: read and close each body, as a WSGI server does
    return functools.partial(client.get, buffered=True)


def test_flask_requests_are_timed_by_route_and_status(
    flask_client: Any, monitor: WebMonitor
) -> None:
    """Each request lands in RequestStats under its path with its status (404 and 500 too)."""
    assert 200 == flask_client("/hello").status_code
    assert 200 == flask_client("/hello").status_code
    assert 404 == flask_client("/missing").status_code
    assert 500 == flask_client("/boom").status_code
    seen = routes(monitor)
    assert (2, {"200": 2}) == (seen["/hello"]["requests"], seen["/hello"]["statuses"])
    assert {"404": 1} == seen["/missing"]["statuses"]
    assert {"500": 1} == seen["/boom"]["statuses"]


@pytest.mark.usefixtures("secret_env")
def test_flask_health_route(flask_client: Any, monitor: WebMonitor) -> None:
    """/health answers JSON with memory, guard, requests, caches and pools, and no secrets."""
    monitor.guard.register_cache(StatsCache(), name="pages")
    flask_client("/hello")
    response = flask_client("/health")
    assert (200, "application/json") == (response.status_code, response.content_type)
    payload = check_health(response.data, monitor)
    assert {"pages": {"entries": 3}} == payload["caches"]
    assert ["/hello"] == list(payload["requests"]["routes"])  # the health route is not counted


def test_health_path_none_passes_through(monitor: WebMonitor) -> None:
    """With health_path=None the app answers /health itself."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return [b""]

    wrapped = WSGIMiddleware(app, monitor=monitor, health_path=None)
    statuses: list[str] = []
    wrapped({"PATH_INFO": "/health"}, lambda status, headers, exc=None: statuses.append(status))
    assert ["204 No Content"] == statuses
    assert {"204": 1} == routes(monitor)["/health"]["statuses"]


def test_wsgi_exception_is_recorded_and_raised(monitor: WebMonitor) -> None:
    """An app that raises is recorded as a 500 and the exception propagates unchanged."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise KeyError("lost")

    with pytest.raises(KeyError, match="lost"):
        WSGIMiddleware(app, monitor=monitor)({"PATH_INFO": "/x"}, lambda *a: None)
    assert {"500": 1} == routes(monitor)["/x"]["statuses"]


def test_streamed_wsgi_body_is_recorded_on_close(monitor: WebMonitor) -> None:
    """A generator body is recorded when the server closes it, with the status sent."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("201 Created", [])
        yield b"a"
        yield b"b"

    body = WSGIMiddleware(app, monitor=monitor)({"PATH_INFO": "/s"}, lambda *a: None)
    assert b"ab" == b"".join(body)
    assert "/s" not in routes(monitor)
    body.close()  # type: ignore[attr-defined]
    assert {"201": 1} == routes(monitor)["/s"]["statuses"]


def test_file_wrapper_body_is_returned_unwrapped(monitor: WebMonitor) -> None:
    """A server's wsgi.file_wrapper body comes back as is (sendfile) and is recorded at once."""

    class FileWrapper:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __iter__(self) -> Iterator[bytes]:
            yield self.data

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](b"file")

    environ = {"PATH_INFO": "/f", "wsgi.file_wrapper": FileWrapper}
    body = WSGIMiddleware(app, monitor=monitor)(environ, lambda *a: None)
    assert isinstance(body, FileWrapper)
    assert {"200": 1} == routes(monitor)["/f"]["statuses"]


def test_memory_is_checked_at_most_once_per_interval(guard: MemoryGuard) -> None:
    """The guard is checked on the first request and then once per check_interval."""
    timer = FakeTimer(100.0)
    monitor = WebMonitor(guard=guard, stats=RequestStats(), check_interval=1.0, timer=timer)
    for _ in range(50):
        monitor.finish("/", monitor.start(), 200)
    assert 1 == guard.status()["checks"]
    timer.now += 1.0
    monitor.start()
    assert 2 == guard.status()["checks"]


@pytest.mark.parametrize("interval", [-1, "1", True, float("nan"), float("inf"), None])
def test_bad_check_interval_raises_config_error(guard: MemoryGuard, interval: Any) -> None:
    """A check_interval that is not seconds >= 0 is refused with a ConfigError naming it."""
    message = f"check_interval must be a number of seconds zero or more, got {interval!r}"
    with pytest.raises(ConfigError, match=message):
        WebMonitor(guard=guard, check_interval=interval)


def _wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_wsgi_middleware_holds_no_growth(monitor: WebMonitor) -> None:
    """The WSGI middleware holds zero net growth over 10,000 requests per round."""
    wrapped = WSGIMiddleware(_wsgi_hello, monitor=monitor)
    environ = {"PATH_INFO": "/hello", "REQUEST_METHOD": "GET"}

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        pass

    assert_no_growth(lambda: wrapped(environ, start_response), calls=10_000, rounds=5)
    assert routes(monitor)["/hello"]["requests"] > 10_000


# -- ASGI with Starlette and FastAPI -----------------------------------------------------------


HEALTH_TOKEN = {"Authorization": "Bearer test-health-token"}


@pytest.fixture
def health_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The health token the ASGI test clients present (their client address is not loopback)."""
    monkeypatch.setenv("BOUNDKIT_HEALTH_TOKEN", "test-health-token")


@pytest.fixture
def starlette_client(monitor: WebMonitor, health_token: None) -> Iterator[Any]:
    pytest.importorskip("httpx")
    applications = pytest.importorskip("starlette.applications")
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def hello(request: Any) -> Any:
        return PlainTextResponse("hello")

    async def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    app = applications.Starlette(routes=[Route("/hello", hello), Route("/boom", boom)])
    app.add_middleware(ASGIMiddleware, monitor=monitor)
    with TestClient(app, raise_server_exceptions=False, headers=HEALTH_TOKEN) as client:  # lifespan
        yield client


def test_starlette_requests_are_timed(starlette_client: Any, monitor: WebMonitor) -> None:
    """ASGI requests land in RequestStats with their status; failures count as 500."""
    assert 200 == starlette_client.get("/hello").status_code
    assert 404 == starlette_client.get("/nope").status_code
    assert 500 == starlette_client.get("/boom").status_code
    seen = routes(monitor)
    assert {"200": 1} == seen["/hello"]["statuses"]
    assert {"404": 1} == seen["/nope"]["statuses"]
    assert {"500": 1} == seen["/boom"]["statuses"]


@pytest.mark.usefixtures("secret_env")
def test_starlette_health_route(starlette_client: Any, monitor: WebMonitor) -> None:
    """The ASGI /health answers the same JSON as the WSGI one, with no secrets."""
    starlette_client.get("/hello")
    response = starlette_client.get("/health")
    assert 200 == response.status_code
    assert "application/json" == response.headers["content-type"]
    payload = check_health(response.content, monitor)
    assert ["/hello"] == list(payload["requests"]["routes"])


@pytest.mark.usefixtures("health_token")
def test_fastapi_app(monitor: WebMonitor) -> None:
    """FastAPI apps take the ASGI middleware like any Starlette app."""
    fastapi = pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.add_middleware(ASGIMiddleware, monitor=monitor)
    with TestClient(app, headers=HEALTH_TOKEN) as client:
        assert {"id": 3} == client.get("/items/3").json()
        check_health(client.get("/health").content, monitor)
    assert {"200": 1} == routes(monitor)["/items/{item_id}"]["statuses"]


def test_asgi_exception_is_recorded_and_raised(monitor: WebMonitor) -> None:
    """An ASGI app that raises is recorded as a 500 and the exception propagates."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("lost")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    wrapped = ASGIMiddleware(app, monitor=monitor)
    with pytest.raises(KeyError, match="lost"):
        asyncio.run(wrapped({"type": "http", "path": "/x"}, receive, send))
    assert {"500": 1} == routes(monitor)["/x"]["statuses"]


def test_asgi_middleware_holds_no_growth(monitor: WebMonitor) -> None:
    """The ASGI middleware holds zero net growth over 10,000 requests per round."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    wrapped = ASGIMiddleware(app, monitor=monitor)
    scope = {"type": "http", "path": "/hello", "method": "GET"}
    loop = asyncio.new_event_loop()
    try:
        assert_no_growth(
            lambda: loop.run_until_complete(wrapped(scope, receive, send)), calls=10_000, rounds=5
        )
    finally:
        loop.close()
    assert routes(monitor)["/hello"]["requests"] > 10_000


def test_health_lists_bounded_cache_stats(monitor: WebMonitor) -> None:
    """A real BoundedCache registered with the guard shows its stats in the health JSON."""
    cache = BoundedCache(maxsize=10)
    cache["a"] = 1
    cache.get("a")
    monitor.guard.register_cache(cache, name="small")
    payload = json.loads(monitor.health_body())
    assert cache.stats().as_dict() == payload["caches"]["small"]
    assert 1 == payload["caches"]["small"]["entries"]


def test_health_shows_the_admission_table_once_it_exists(
    monitor: WebMonitor, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health has no admission key until the dyno's table exists, then its held bytes."""
    from boundkit import Admission
    from boundkit.admission import ENV_ADMISSION_FILE

    path = tmp_path / "admission"
    monkeypatch.setenv(ENV_ADMISSION_FILE, str(path))
    assert "admission" not in check_health(monitor.health_body(), monitor)
    assert not path.exists()  # looking did not create it
    admission = Admission(path, budget=100 * MB)
    with admission.reserve(30 * MB, timeout=1):
        payload = json.loads(monitor.health_body())
    assert {"status"} == set(json.loads(monitor.health_body(authorised=False)))
    assert HEALTH_KEYS | {"admission"} == set(payload)
    shown = payload["admission"]
    assert (100 * MB, 30 * MB, 1, 0) == (
        shown["budget"],
        shown["held"],
        shown["holders"],
        shown["waiters"],
    )


def test_health_lists_pools_with_password_redacted(monitor: WebMonitor, pg_dsn: str) -> None:
    """A boundkit.pg pool shows in the health JSON, its conninfo without the password."""
    pytest.importorskip("psycopg_pool")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from boundkit.pg import create_pool, pooled_connection

    # the test DSN's own password if it has one; else trust auth leaves SECRET unused
    secret = str(conninfo_to_dict(pg_dsn).get("password") or SECRET)
    dsn = make_conninfo(pg_dsn, password=secret)
    pool = create_pool(dsn, max_size=1, name="health-test")
    try:
        with pooled_connection(pool=pool) as conn:
            conn.execute("SELECT 1")
        body = monitor.health_body()
    finally:
        pool.close()
    assert secret not in body.decode()
    pools = json.loads(body)["pools"]
    assert 1 == pools["health-test"]["checkouts"]


# -- requests named by the route the framework matched -----------------------------------------


def test_flask_routes_fill_one_slot_per_url_rule(monitor: WebMonitor) -> None:
    """/compute/<n> on Flask is one route in the stats however many n; a 404 keeps its path."""
    flask = pytest.importorskip("flask")
    app = flask.Flask("routes")
    blueprint = flask.Blueprint("api", "routes", url_prefix="/api")

    @app.get("/compute/<int:n>")
    def compute(n: int) -> str:
        return str(n * 2)

    @blueprint.get("/items/<name>")
    def item(name: str) -> str:
        return name

    app.register_blueprint(blueprint)
    app.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, monitor=monitor, route=flask_route(app)
    )
    get = functools.partial(app.test_client().get, buffered=True)  # bodies closed, as a server does
    for n in range(25):
        assert str(n * 2) == get(f"/compute/{n}").text
    get("/api/items/a")
    get("/api/items/b")
    get("/nothing/here")
    seen = routes(monitor)
    assert ["/api/items/<name>", "/compute/<int:n>", "/nothing/here"] == sorted(seen)
    assert 25 == seen["/compute/<int:n>"]["requests"]


def test_starlette_routes_fill_one_slot_per_route_mounts_included(monitor: WebMonitor) -> None:
    """/compute/{n} on Starlette is one route, under its Mount's path too; a 404 keeps its path."""
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    async def compute(request: Any) -> Any:
        return PlainTextResponse(str(request.path_params["n"] * 2))

    app = Starlette(
        routes=[
            Route("/compute/{n:int}", compute),
            Mount("/v1", routes=[Route("/compute/{n:int}", compute)]),
        ]
    )
    app.add_middleware(ASGIMiddleware, monitor=monitor)
    with TestClient(app) as client:
        for n in range(25):
            assert str(n * 2) == client.get(f"/compute/{n}").text
            client.get(f"/v1/compute/{n}")
        client.get("/nothing/here")
    seen = routes(monitor)
    assert ["/compute/{n:int}", "/nothing/here", "/v1/compute/{n:int}"] == sorted(seen)
    assert 25 == seen["/v1/compute/{n:int}"]["requests"]


def test_fastapi_routes_fill_one_slot_per_path_operation(monitor: WebMonitor) -> None:
    """/compute/{n} on FastAPI (and under an included router's prefix) is one route each."""
    fastapi = pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    app = fastapi.FastAPI()
    router = fastapi.APIRouter(prefix="/v2")

    @app.get("/compute/{n}")
    async def compute(n: int) -> int:
        return n * 2

    @router.get("/compute/{n}")
    async def compute_v2(n: int) -> int:
        return n * 3

    app.include_router(router)
    app.add_middleware(ASGIMiddleware, monitor=monitor)
    with TestClient(app) as client:
        for n in range(25):
            assert n * 2 == client.get(f"/compute/{n}").json()
            assert n * 3 == client.get(f"/v2/compute/{n}").json()
    assert {"/compute/{n}": 25, "/v2/compute/{n}": 25} == {
        route: entry["requests"] for route, entry in routes(monitor).items()
    }


def test_starlette_without_scope_route_is_named_by_its_endpoint(monitor: WebMonitor) -> None:
    """A Starlette that leaves no scope["route"] (older releases): the route to the endpoint."""
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def compute(request: Any) -> Any:
        return PlainTextResponse("x")

    app = Starlette(routes=[Route("/compute/{n:int}", compute)])

    async def older_starlette(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        scope.pop("route", None)

    with TestClient(ASGIMiddleware(older_starlette, monitor=monitor)) as client:
        for n in range(5):
            client.get(f"/compute/{n}")
    assert {"/compute/{n:int}": 5} == {
        route: entry["requests"] for route, entry in routes(monitor).items()
    }
