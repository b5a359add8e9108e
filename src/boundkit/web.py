"""Web middleware: a memory check, request timing and a JSON health route.

:class:`WebMonitor` holds the logic (I/O-free); :class:`WSGIMiddleware` and
:class:`ASGIMiddleware` are thin wrappers around it, and :mod:`boundkit.django`
wraps the same core for Django.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, Protocol

from . import dyno
from ._health_access import asgi_headers, health_authorised, wsgi_headers
from ._window import check_seconds
from .admission import admission_status
from .errors import AdmissionTimeout
from .guard import MemoryGuard, default_guard
from .memory import memory_snapshot

__all__ = [
    "ASGIMiddleware",
    "WSGIMiddleware",
    "WebMonitor",
    "default_monitor",
    "flask_route",
    "starlette_route",
]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


def _busy(exc: AdmissionTimeout) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body of the 503 that answers an admission timeout."""
    body = json.dumps({"error": "busy", "retry_after": exc.retry_after}).encode()
    headers = [*_JSON_HEADERS, ("Retry-After", str(exc.retry_after))]
    return [*headers, ("Content-Length", str(len(body)))], body


class _Stats(Protocol):
    def observe(self, route: str, seconds: float, status: int) -> None: ...
    def summary(self) -> dict[str, Any]: ...


class WebMonitor:
    """The core every middleware shares: guard checks, timing and health output.

    Per request, :meth:`start` checks memory at most once per
    ``check_interval`` seconds and :meth:`finish` records the request in
    ``stats`` (a :class:`~boundkit.RequestStats` by default). ``guard``
    defaults to :func:`~boundkit.guard.default_guard`.
    """

    def __init__(
        self,
        *,
        guard: MemoryGuard | None = None,
        stats: _Stats | None = None,
        check_interval: float = 1.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if stats is None:
            from .metrics import RequestStats

            stats = RequestStats()
        self.guard = guard if guard is not None else default_guard()
        self.stats = stats
        self.check_interval = check_seconds("check_interval", check_interval, allow_zero=True)
        self._timer = timer
        self._next_check = float("-inf")

    def start(self) -> float:
        """Note a request's start (checking memory if it is time); return the start time."""
        now = self._timer()
        if now >= self._next_check:
            self._next_check = now + self.check_interval
            self.guard.check()
        return now

    def finish(self, route: str, started: float, status: int) -> None:
        """Record a request that began at ``started`` (from :meth:`start`)."""
        self.stats.observe(route, self._timer() - started, status)

    def health(self) -> dict[str, Any]:
        """Return the health payload: memory, guard, requests, caches, pools and admission.

        ``admission`` (:meth:`AdmissionStatus.as_dict
        <boundkit.admission.AdmissionStatus.as_dict>`) is there only once a process of
        the dyno has opened its reservation table (:func:`boundkit.admission.admission_status`).

        Holds no secrets: no environment, and pool stats come from
        :func:`boundkit.pg.pool_stats` and :func:`boundkit.pg_async.pool_stats`
        (conninfo redacted), read only when the module is already imported.
        """
        guard = self.guard
        # in a governed dyno the snapshot and the watcher keep figures current: no check here
        level = guard.check() if dyno.current_worker() is None else guard.level
        caches = {}
        for name, cache in guard.caches().items():
            stats = getattr(cache, "stats", None)
            if stats is not None:
                caches[name] = stats().as_dict()
        pools = {}
        for module in ("boundkit.pg", "boundkit.pg_async"):  # sync and async pools
            pg = sys.modules.get(module)
            if pg is not None and hasattr(pg, "pool_stats"):
                pools.update(pg.pool_stats())
        payload = {
            "status": level,
            "memory": memory_snapshot(
                warning=guard.warning, critical=guard.critical, limit=guard.limit
            ),
            "guard": guard.status(),
            "requests": self.stats.summary(),
            "caches": caches,
            "pools": pools,
        }
        admission = admission_status()
        if admission is not None:
            payload["admission"] = admission.as_dict()
        return dyno.with_dyno(payload, level)

    def status(self) -> str:
        """The bare health status: this worker's guard level, or worse if the dyno's is."""
        level = self.guard.check() if dyno.current_worker() is None else self.guard.level
        return dyno.dyno_status(level)

    def health_body(self, *, authorised: bool = True) -> bytes:
        """Return :meth:`health` as JSON, or only ``{"status": ...}`` when not ``authorised``."""
        payload = self.health() if authorised else {"status": self.status()}
        return json.dumps(payload, default=str, sort_keys=True).encode()


_default: WebMonitor | None = None
_default_lock = threading.Lock()


def default_monitor() -> WebMonitor:
    """Return the process-wide monitor that middleware without ``monitor=`` shares."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WebMonitor()
        return _default


class _ObservedBody:
    """Wraps a streamed WSGI body so the request is recorded when it is closed."""

    __slots__ = ("_body", "_done", "_monitor", "_route", "_started", "_status")

    def __init__(
        self,
        body: Iterable[bytes],
        monitor: WebMonitor,
        route: str,
        started: float,
        status: list[int],
    ) -> None:
        self._body = body
        self._monitor = monitor
        self._route = route
        self._started = started
        self._status = status
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._monitor.finish(self._route, self._started, self._status[0])


_ROUTE_KEY = "boundkit.route"  # the environ key flask_route()'s hook fills


def flask_route(app: Any) -> Callable[[dict[str, Any]], str]:
    """A ``route=`` for :class:`WSGIMiddleware` that names requests by Flask's URL rule.

    ``WSGIMiddleware(app.wsgi_app, route=flask_route(app))`` counts
    ``/compute/<int:n>`` as one route whatever ``n``. It registers a
    ``teardown_request`` hook on ``app`` that notes the rule Flask matched in
    the WSGI environ (Flask forgets its request when the app returns); requests
    no rule matched (404s) keep their path.
    """
    from flask import request

    def note_rule(exc: BaseException | None) -> None:
        rule = request.url_rule
        if rule is not None:
            request.environ[_ROUTE_KEY] = rule.rule

    app.teardown_request(note_rule)
    return _path_route


def _path_route(environ: dict[str, Any]) -> str:
    return str(environ.get(_ROUTE_KEY) or environ.get("PATH_INFO") or "/")


class WSGIMiddleware:
    """Guard a WSGI app: memory checks, request stats and a health route.

    ``health_path`` (None to turn it off) answers with :meth:`WebMonitor.health`
    as JSON to authorised callers (``BOUNDKIT_HEALTH_TOKEN`` or loopback, see
    docs/guard.md), with only ``{"status": ...}`` to others, and is not counted
    in the stats. ``route(environ)`` names a request for the stats, after the
    app ran (default: its path; the stats cap the number of routes):
    ``route=flask_route(app)`` names Flask requests by URL rule.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        monitor: WebMonitor | None = None,
        health_path: str | None = "/health",
        route: Callable[[dict[str, Any]], str] = _path_route,
    ) -> None:
        self.app = app
        self.monitor = monitor if monitor is not None else default_monitor()
        self.health_path = health_path
        self.route = route

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.health_path is not None and environ.get("PATH_INFO") == self.health_path:
            authorised = health_authorised(environ.get("REMOTE_ADDR"), wsgi_headers(environ))
            payload = self.monitor.health_body(authorised=authorised)
            start_response("200 OK", [*_JSON_HEADERS, ("Content-Length", str(len(payload)))])
            return [payload]
        monitor = self.monitor
        started = monitor.start()
        status = [500]

        def observing_start_response(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            status[0] = int(status_line[:3])
            return start_response(status_line, headers, exc_info)

        try:
            body = self.app(environ, observing_start_response)
        except AdmissionTimeout as exc:
            headers, payload = _busy(exc)
            start_response("503 Service Unavailable", headers, sys.exc_info())
            monitor.finish(self.route(environ), started, 503)
            return [payload]
        except BaseException:
            monitor.finish(self.route(environ), started, 500)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(body, (list, tuple)) or (
            isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
        ):
            # a server's file wrapper is returned as is, keeping its sendfile() path
            monitor.finish(self.route(environ), started, status[0])
            return body
        return _ObservedBody(body, monitor, self.route(environ), started, status)


class _StatusSend:
    """An ASGI ``send`` that notes the response status on its way through.

    A plain callable returning ``send``'s awaitable: no extra coroutine per message.
    """

    __slots__ = ("send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500
        self.started = False

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
        return self.send(message)


def starlette_route(scope: Scope) -> str:
    """Name a request by the route Starlette or FastAPI matched (``/compute/{n:int}``).

    The default ``route`` of :class:`ASGIMiddleware`: the path of the route the
    router put in ``scope["route"]`` once the app has run, under the paths of
    each ``Mount`` it went through (for a Starlette without ``scope["route"]``,
    the one route whose endpoint is ``scope["endpoint"]``). Requests no route
    matched (404s) and other frameworks' keep their path.
    """
    route = scope.get("route")
    if route is None:
        route = _only_route_to(scope.get("router"), scope.get("endpoint"))
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    mounts = root[len(str(scope.get("app_root_path", root))) :]  # the Mounts passed through
    if hasattr(route, "routes") and mounts.endswith(path):  # the Mount itself answered
        mounts = mounts[: len(mounts) - len(path)]
    return mounts + path


def _only_route_to(router: Any, endpoint: Any) -> Any:
    if endpoint is None:
        return None
    found, todo = [], list(getattr(router, "routes", ()))
    while todo:
        route = todo.pop()
        if getattr(route, "endpoint", None) is endpoint:
            found.append(route)
        todo += getattr(route, "routes", ())
    return found[0] if len(found) == 1 else None


class ASGIMiddleware:
    """The ASGI twin of :class:`WSGIMiddleware`; other scopes (lifespan, websocket) pass through.

    ``route(scope)`` names a request after the app ran; by default
    :func:`starlette_route`: the route Starlette or FastAPI matched, else the path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        monitor: WebMonitor | None = None,
        health_path: str | None = "/health",
        route: Callable[[Scope], str] = starlette_route,
    ) -> None:
        self.app = app
        self.monitor = monitor if monitor is not None else default_monitor()
        self.health_path = health_path
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.health_path is not None and scope.get("path") == self.health_path:
            client = scope.get("client")
            authorised = health_authorised(
                client[0] if client else None, asgi_headers(scope.get("headers") or [])
            )
            body = self.monitor.health_body(authorised=authorised)
            headers = [(k.lower().encode(), v.encode()) for k, v in _JSON_HEADERS]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        monitor = self.monitor
        started = monitor.start()
        observing_send = _StatusSend(send)
        try:
            await self.app(scope, receive, observing_send)
        except AdmissionTimeout as exc:
            if observing_send.started:
                raise
            busy_headers, payload = _busy(exc)
            raw = [(k.lower().encode(), v.encode()) for k, v in busy_headers]
            await observing_send({"type": "http.response.start", "status": 503, "headers": raw})
            await send({"type": "http.response.body", "body": payload})
        finally:
            monitor.finish(self.route(scope), started, observing_send.status)
