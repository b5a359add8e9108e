"""The governed dyno in a real gunicorn: supervisor, shared health, stats across recycles.

Each test starts gunicorn with ``govern_dyno(globals())`` on a free local port, with
``BOUNDKIT_MEMORY_LIMIT`` as the dyno's limit (no cgroup is needed: the supervisor then
sums the arbiter's process tree), and a WSGI app whose workers allocate real memory.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from boundkit._dyno_memory import DynoMemory
from boundkit.dyno import DynoState, RequestLedger
from boundkit.supervisor import DynoSupervisor
from fix_servers import free_port, stop_server

MB = 1024 * 1024
SRC = str(Path(__file__).resolve().parent.parent / "src")

APP = """
import os, time
from boundkit import WSGIMiddleware

HELD = []


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    query = dict(p.split("=") for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    if path == "/grow":  # allocate mb MiB in steps over `seconds`, hold it, then answer
        steps = int(query.get("mb", "0")) // 10
        chunk = []
        for _ in range(steps):
            chunk.append(bytearray(b"x" * (10 * 1024 * 1024)))
            time.sleep(float(query.get("seconds", "0")) / max(steps, 1))
        time.sleep(float(query.get("hold", "0")))
    elif path == "/leak":  # keep 8 MiB per request
        HELD.append(bytearray(b"x" * (8 * 1024 * 1024)))
    elif path == "/busy":  # a busy request: CPU and a churning heap (~30 MiB) for `seconds`
        end = time.monotonic() + float(query.get("seconds", "1"))
        junk = []
        while time.monotonic() < end:
            junk.append([str(i) for i in range(1000)])
            if len(junk) > 500:
                junk.clear()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = WSGIMiddleware(inner)
"""

CONF = """
from boundkit.gunicorn import govern_dyno; govern_dyno(globals())

bind = "127.0.0.1:{port}"
workers = {workers}
threads = {threads}
worker_class = "{worker_class}"
loglevel = "info"
graceful_timeout = 20
timeout = 60
control_socket_disable = True
"""


class Dyno:
    """A running gunicorn under govern_dyno: its port, log, and an HTTP helper."""

    def __init__(self, port: int, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.log, self.proc = port, log, proc

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 60) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers=headers or {}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/health") else int(body)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict[str, Any]:
        return self.get("/health")  # type: ignore[no-any-return]


@pytest.fixture
def start_dyno(tmp_path: Path) -> Iterator[Callable[..., Dyno]]:
    """Start gunicorn under govern_dyno with a given limit, workers and worker class."""
    pytest.importorskip("gunicorn")
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *, limit: str, workers: int = 2, threads: int = 1, worker_class: str = "sync"
    ) -> Dyno:
        port = free_port()
        (tmp_path / "dynoapp.py").write_text(textwrap.dedent(APP))
        conf = tmp_path / "gunicorn.conf.py"
        conf.write_text(
            CONF.format(port=port, workers=workers, threads=threads, worker_class=worker_class)
        )
        log = tmp_path / "gunicorn.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path)]),
            "BOUNDKIT_MEMORY_LIMIT": limit,
        }
        env.pop("BOUNDKIT_HEALTH_TOKEN", None)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(conf), "dynoapp:app"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        dyno = Dyno(port, log, proc)

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gunicorn exited: {log.read_text()[-3000:]}")
            try:
                return len(dyno.health().get("workers", [])) == workers
            except OSError:
                return False

        dyno.wait_for(serving, 60, "gunicorn to serve /health with every worker")
        return dyno

    yield start
    for proc in started:
        stop_server(proc, timeout=30)


@pytest.mark.slow
def test_supervisor_retires_the_largest_worker_gracefully(start_dyno: Callable[..., Dyno]) -> None:
    """A worker growing inside one request past retire_at is retired: its request still succeeds.

    The worker allocates 300 MiB in 10 MiB steps within one request, so its own recycler (which
    checks after the request) cannot act; the supervisor sees the dyno's total pass retire_at,
    sends SIGTERM to the largest worker, which finishes the request and is replaced. The other
    worker is untouched, and nothing is stopped.
    """
    dyno = start_dyno(limit="400M")
    before = {w["pid"] for w in dyno.health()["workers"]}
    retire_at = dyno.health()["plan"]["retire_at"]
    grown = dyno.get("/grow?mb=300&seconds=3&hold=2")
    assert grown in before
    dyno.wait_for(
        lambda: grown not in {w["pid"] for w in dyno.health()["workers"]}, 30, "retirement"
    )
    dyno.wait_for(lambda: len(dyno.health()["workers"]) == 2, 30, "a replacement worker")
    health = dyno.health()
    after = {w["pid"] for w in health["workers"]}
    assert before - {grown} <= after  # the innocent worker lives on
    action = health["supervisor"]["last_action"]
    assert "retiring" == action["action"]
    assert grown == action["pid"]
    assert action["dyno_used"] >= retire_at
    assert 1 == health["supervisor"]["retirements"]
    assert 0 == health["supervisor"]["stops"]
    log = dyno.log.read_text()
    assert f"retiring worker {grown}" in log
    assert "(it finishes its request)" in log


@pytest.mark.slow
def test_stats_survive_recycling_and_cover_every_worker(start_dyno: Callable[..., Dyno]) -> None:
    """Workers recycled by their share's threshold leave their requests in the dyno's stats."""
    dyno = start_dyno(limit="300M")
    pids = [dyno.get("/leak") for _ in range(60)]
    assert len(set(pids)) >= 4  # at least two recycles happened (2 workers at the start)

    def counted() -> bool:
        return dyno.health()["requests"]["routes"].get("/leak", {}).get("requests") == 60

    dyno.wait_for(counted, 15, "every /leak request in the dyno's stats")
    health = dyno.health()
    assert health["recycles"] >= len(set(pids)) - 2
    assert {"200": 60} == health["requests"]["routes"]["/leak"]["statuses"]
    assert "/health" not in health["requests"]["routes"]
    assert health["requests"]["routes"]["/leak"]["seconds"]["p50"] > 0


@pytest.mark.slow
def test_a_reload_keeps_one_supervisor_and_the_stats(start_dyno: Callable[..., Dyno]) -> None:
    """After SIGHUP (gunicorn reloads its config and replaces every worker) one supervisor
    runs on, and the requests served before the reload are still counted."""
    dyno = start_dyno(limit="1G")
    before = {dyno.get("/hello") for _ in range(10)}
    dyno.proc.send_signal(signal.SIGHUP)

    def replaced() -> bool:
        pids = {w["pid"] for w in dyno.health()["workers"]}
        return len(pids) == 2 and not pids & before

    dyno.wait_for(replaced, 60, "new workers after the reload")
    dyno.wait_for(
        lambda: dyno.health()["requests"]["routes"].get("/hello", {}).get("requests") == 10,
        15,
        "the requests from before the reload",
    )
    ticks = dyno.health()["supervisor"]["ticks"]
    time.sleep(2.5)
    assert 6 <= dyno.health()["supervisor"]["ticks"] - ticks <= 14  # ticking, ~4 a second
    status = Path(f"/proc/{dyno.proc.pid}/status").read_text()
    assert "Threads:\t2\n" in status  # the arbiter's main thread and one supervisor


@pytest.mark.slow
def test_health_answers_while_every_worker_is_busy(start_dyno: Callable[..., Dyno]) -> None:
    """With a busy request on every worker, /health still answers, from a snapshot.

    gthread workers with 2 threads: 3 busy requests (CPU and a churning heap for 10 s)
    occupy both workers; /health is served by a free thread from the supervisor's snapshot,
    never by measuring or collecting on the request path. Each answer must arrive while
    all three busy requests are still running (an order, not a time: a /health queued
    behind them would come only after one ends).
    """
    dyno = start_dyno(limit="2G", threads=2, worker_class="gthread")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(dyno.get, "/busy?seconds=10") for _ in range(3)]
        time.sleep(1.0)
        for _ in range(8):
            health = dyno.health()
            assert not any(future.done() for future in busy), "a busy request ended first"
            assert 2 == len(health["workers"])
            time.sleep(0.1)
        busy_pids = {future.result() for future in busy}
    assert 2 == len(busy_pids)  # every worker was busy while /health was polled


@pytest.mark.slow
def test_health_details_only_when_authorised(start_dyno: Callable[..., Dyno]) -> None:
    """A caller through a proxy gets the bare status; loopback gets the dyno's details."""
    dyno = start_dyno(limit="1G")
    assert {"status"} == set(dyno.get("/health", {"X-Forwarded-For": "203.0.113.7"}))
    details = dyno.health()
    assert {"status", "dyno", "plan", "workers", "requests", "recycles"} <= set(details)
    worker = details["workers"][0]
    assert {"pid", "rss_mb", "share_mb", "requests", "age_seconds"} <= set(worker)
    assert details["plan"]["table"][0][0] == "limit"


# -- the supervisor's decisions, with injected readings -----------------------------------


class FakeDyno:
    """Injected readings for a DynoSupervisor: the dyno's total, workers' RSS and signals."""

    def __init__(self, tmp_path: Path, rss: dict[int, int]) -> None:
        self.used = 100 * MB
        self.rss = rss
        self.now = 0.0
        self.signals: list[tuple[int, int]] = []
        self.supervisor = DynoSupervisor(
            DynoState(tmp_path),
            workers=lambda: list(self.rss),
            num_workers=lambda: 2,
            limit=512 * MB,
            reader=self.read,
            rss=self.rss.get,
            kill=lambda pid, sig: self.signals.append((pid, sig)),
            clock=lambda: self.now,
        )

    def read(self) -> DynoMemory:
        return DynoMemory(self.used, 512 * MB, self.used, 0, 0, 0, "fake", "fake", True)

    def tick(self, used_mb: float, advance: float = 0.25) -> None:
        self.used = int(used_mb * MB)
        self.now += advance
        self.supervisor.tick()


def test_supervisor_retires_once_then_backs_off(tmp_path: Path) -> None:
    """Past retire_at: SIGTERM to the largest worker, once; nothing more while it is in flight."""
    fake = FakeDyno(tmp_path, {11: 150 * MB, 12: 250 * MB})
    fake.tick(300)
    assert [] == fake.signals
    plan = fake.supervisor.plan
    assert plan is not None
    fake.tick(plan.retire_at / MB + 1)
    assert [(12, signal.SIGTERM)] == fake.signals
    for _ in range(10):
        fake.tick(plan.retire_at / MB + 1)
    assert 1 == len(fake.signals)  # at most one retirement in flight
    del fake.rss[12]
    fake.supervisor.worker_exited(12)
    fake.rss[13] = 40 * MB
    fake.tick(plan.retire_at / MB + 1, advance=0.1)
    assert 1 == len(fake.signals)  # backing off
    fake.tick(plan.retire_at / MB + 1, advance=5)
    assert (11, signal.SIGTERM) == fake.signals[-1]


def test_supervisor_stops_the_largest_at_the_edge(tmp_path: Path) -> None:
    """Past stop_at the worker being retired (or else the largest) is stopped with SIGKILL."""
    fake = FakeDyno(tmp_path, {11: 150 * MB, 12: 250 * MB})
    fake.tick(300)
    plan = fake.supervisor.plan
    assert plan is not None
    fake.tick(plan.stop_at / MB + 1)
    assert [(12, signal.SIGKILL)] == fake.signals
    assert 1 == fake.supervisor.stops


def test_supervisor_leaves_a_worker_its_recycler_retires(tmp_path: Path) -> None:
    """A worker already retiring by its own recycler counts as the retirement in flight."""
    fake = FakeDyno(tmp_path, {11: 150 * MB, 12: 250 * MB})
    fake.tick(300)
    plan = fake.supervisor.plan
    assert plan is not None
    DynoState(tmp_path).retiring_path(12).touch()
    fake.tick(300, advance=1.5)  # the once-a-second read sees the marker
    fake.tick(plan.retire_at / MB + 1)
    assert [] == fake.signals


def test_request_ledgers_merge_across_processes() -> None:
    """Two workers' ledgers, carried as dicts, merge into counts and quantiles of both."""
    first, second = RequestLedger(), RequestLedger()
    for i in range(100):
        first.observe("/a", 0.01 * (i + 1), 200)
    for _ in range(50):
        second.observe("/a", 5.0, 500)
        second.observe("/b", 0.5, 200)
    merged = RequestLedger.from_dict(json.loads(json.dumps(first.as_dict())))
    merged.merge(json.loads(json.dumps(second.as_dict())))
    summary = merged.summary()
    assert 200 == summary["requests"]
    assert {"200": 150, "500": 50} == summary["statuses"]
    assert summary["routes"]["/a"]["seconds"]["p99"] == pytest.approx(5.0, rel=0.02)


def test_pdf_budget_is_capped_by_the_plan_in_a_governed_worker(tmp_path: Path) -> None:
    """Inside a worker following a plan, a PDF's budget guard acts at the plan's pdf_budget."""
    from boundkit import _pdf_memory
    from boundkit.dyno import WorkerAgent, current_plan, set_current_worker
    from boundkit.share import plan_shares

    state = DynoState(tmp_path)
    plan = plan_shares("512M", workers=4, footprint="41M", arbiter="25M")
    state.write(state.plan_path, plan.as_dict())
    set_current_worker(WorkerAgent(state))
    try:
        assert plan == current_plan()
        guard = _pdf_memory._Guard(64 * MB, rss=lambda: 100 * MB)
        assert plan.pdf_budget == guard.budget
        assert 100 * MB + plan.pdf_budget == guard.limit
    finally:
        set_current_worker(None)
    assert 64 * MB == _pdf_memory._Guard(64 * MB, rss=lambda: 0).budget  # outside: as given


def test_wsgi_health_details_need_the_token_or_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote caller sees only the status; with the token, or from loopback, the details."""
    from boundkit import MemoryGuard, WebMonitor, WSGIMiddleware

    monkeypatch.setenv("BOUNDKIT_HEALTH_TOKEN", "s3cret-token")
    app = WSGIMiddleware(
        lambda environ, start_response: [], monitor=WebMonitor(guard=MemoryGuard(limit="64G"))
    )

    def health(**environ: str) -> dict[str, Any]:
        body = app({"PATH_INFO": "/health", **environ}, lambda *args: None)
        return json.loads(b"".join(body))  # type: ignore[no-any-return]

    assert {"status": "ok"} == health(REMOTE_ADDR="203.0.113.5")
    assert {"status": "ok"} == health(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer nope")
    assert {"status": "ok"} == health(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert {"status": "ok"} == health()  # no address (a unix socket): not loopback
    detailed = health(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert {"memory", "guard", "requests"} <= set(detailed)
    assert "s3cret-token" not in json.dumps(detailed)
    assert "guard" in health(REMOTE_ADDR="203.0.113.5", HTTP_X_BOUNDKIT_TOKEN="s3cret-token")
    assert "guard" in health(REMOTE_ADDR="::1")
