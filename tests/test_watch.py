"""Tests of ``boundkit watch``: sampling real processes and health routes, the report, errors."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psutil
import pytest

from boundkit.cli import main
from boundkit.errors import ConfigError, HealthFormatError, WatchTargetError
from boundkit.testing import assert_no_growth
from boundkit.watch import EXIT_CODES, SCHEMA, HealthTarget, ProcessTarget, Sample, summarise, watch
from boundkit.web import WSGIMiddleware

MIB = 1024 * 1024

LEAKING = """
import time
held = []
print("ready", flush=True)
while True:
    held.append(bytearray(1 << 20))
    held[-1][::4096] = b"x" * 256
    time.sleep(0.05)
"""

BOUNDED = """
import time
held = [bytearray(1 << 20) for _ in range(20)]
for block in held:
    block[::4096] = b"x" * 256
while True:
    scratch = [bytearray(4096) for _ in range(256)]
    del scratch
    time.sleep(0.01)
"""

REPORT_KEYS = {
    "schema", "target", "interval_s", "ended", "count", "duration_s", "min_mb", "max_mb",
    "mean_mb", "last_mb", "limit_mb", "limit_source", "warmup_s", "min_rate_mb_per_min",
    "rate_mb_per_min", "rate_ci95_mb_per_min", "tail_rate_mb_per_min", "verdict", "exit_code",
    "time_to_limit_s", "samples",
}  # fmt: skip


def run_watch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boundkit", "watch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class FakeClock:
    """A clock that moves only when the watcher sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Series:
    """A target that replays a list of RSS values, then reports that it ended."""

    description = "series"

    def __init__(self, values: list[int]) -> None:
        self.values = iter(values)

    def sample(self) -> tuple[int, int]:
        value = next(self.values, None)
        if value is None:
            raise WatchTargetError("series ended")
        return value, 1

    def limit(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def test_watch_samples_on_the_interval_until_the_duration() -> None:
    """With a fake clock, samples land every interval and stop after the duration."""
    clock = FakeClock()
    samples, ended = watch(
        Series([MIB] * 100), interval=5, duration=60, timer=clock, sleep=clock.sleep
    )
    assert "duration" == ended
    assert [5.0 * i for i in range(13)] == [s.t for s in samples]


def test_watch_stops_when_the_target_ends() -> None:
    """A target that goes away mid-watch ends sampling with what was collected."""
    clock = FakeClock()
    samples, ended = watch(Series([MIB] * 7), interval=1, timer=clock, sleep=clock.sleep)
    assert ("target ended", 7) == (ended, len(samples))


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True, None])
def test_watch_refuses_bad_seconds(bad: Any) -> None:
    """An interval or duration that is not seconds > 0 is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=f"interval must be a number of seconds.*got {bad!r}"):
        watch(Series([1]), interval=bad)
    if bad is not None:  # None is the default duration: until the target ends
        with pytest.raises(ConfigError, match=f"duration must be a number of seconds.*{bad!r}"):
            watch(Series([1]), interval=1, duration=bad)


def test_watch_raises_for_an_unreadable_first_sample() -> None:
    """A target that cannot be read at the first sample raises at once."""
    with pytest.raises(WatchTargetError, match="series ended"):
        watch(Series([]), interval=1)


def test_report_time_to_limit_and_json_form() -> None:
    """A 1 MiB/min leak ending about 100 MiB under the limit reaches it in about 100 minutes."""
    samples = [Sample(5.0 * i, 400 * MIB + int(MIB / 12 * i), 1) for i in range(240)]
    report = summarise("x", samples, interval=5, ended="duration", limit=520 * MIB,
                       limit_source="test")  # fmt: skip
    data = report.as_dict()
    assert REPORT_KEYS == set(data)
    assert (SCHEMA, "growing", EXIT_CODES["growing"]) == (
        data["schema"], data["verdict"], data["exit_code"]
    )  # fmt: skip
    assert data["rate_mb_per_min"] == pytest.approx(1.0, rel=1e-3)
    assert data["time_to_limit_s"] == pytest.approx(60 * (120 - 239 / 12), abs=2)
    assert [400.0, 400.083] == [row[1] for row in data["samples"][:2]]


def test_stable_report_has_no_time_to_limit() -> None:
    """Only a growing verdict projects a time to the limit."""
    samples = [Sample(float(i), 100 * MIB, 1) for i in range(50)]
    report = summarise("x", samples, interval=1, ended="duration", limit=200 * MIB,
                       limit_source="test")  # fmt: skip
    assert ("stable", None, 0) == (report.verdict, report.time_to_limit, report.exit_code)


@pytest.mark.slow
def test_leaking_child_is_growing() -> None:
    """A command that holds 1 MiB more every 50 ms is judged growing, exit status 4."""
    done = run_watch("--interval", "0.1", "--duration", "3", "--json", "--", sys.executable,
                     "-c", LEAKING)  # fmt: skip
    data = json.loads(done.stdout)
    assert ("growing", 4) == (data["verdict"], done.returncode)
    assert data["rate_mb_per_min"] > 300  # it holds about 1200 MiB/min more
    assert data["time_to_limit_s"] is not None


@pytest.mark.slow
def test_bounded_child_is_stable() -> None:
    """A command that holds 20 MiB and churns short-lived blocks is stable, exit status 0."""
    done = run_watch("--interval", "0.1", "--duration", "4", "--warmup", "1", "--json", "--",
                     sys.executable, "-c", BOUNDED)  # fmt: skip
    data = json.loads(done.stdout)
    assert ("stable", 0) == (data["verdict"], done.returncode), data
    assert data["last_mb"] > 20  # the 20 MiB it holds is seen


def test_pid_target_counts_children() -> None:
    """A pid's sample sums the RSS of its children; a dead pid is a WatchTargetError."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; kid = subprocess.Popen([sys.executable, '-c', "
            "'import time; print(1, flush=True); time.sleep(30)'], stdout=subprocess.PIPE); "
            "kid.stdout.readline(); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip; "ok" once the child has started too, so neither grows while measured
    assert parent.stdout is not None
    target = ProcessTarget(parent.pid)
    try:
        assert "ok" == parent.stdout.readline().strip()
        rss, processes = target.sample()
        own = psutil.Process(parent.pid)
        expected = own.memory_info().rss + sum(c.memory_info().rss for c in own.children())
        assert 2 == processes
        assert rss == pytest.approx(expected, rel=0.2)
    finally:
        for kid in psutil.Process(parent.pid).children(recursive=True):
            kid.kill()
        parent.kill()
        parent.wait()
        parent.stdout.close()
    with pytest.raises(WatchTargetError, match=f"process {parent.pid} has exited"):
        target.sample()


def test_dead_pid_exits_1_with_a_clear_message() -> None:
    """``--pid`` naming no process exits 1 and says which pid."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = run_watch("--pid", str(gone.pid))
    assert 1 == done.returncode
    assert f"no process with pid {gone.pid}" in done.stderr


class QuietHandler(WSGIRequestHandler):
    """A request handler that does not log to stderr."""

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    """A real WSGI server thread: boundkit's middleware, and a /text route that is not JSON."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello, not json"]

    server: WSGIServer = make_server(
        "127.0.0.1", 0, WSGIMiddleware(app), handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_url_against_the_middleware_health_route(health_server: str) -> None:
    """``--url`` reads RSS and the limit from the middleware's /health, as a child process."""
    done = run_watch("--url", f"{health_server}/health", "--interval", "0.1", "--duration",
                     "1", "--json")  # fmt: skip
    data = json.loads(done.stdout)
    assert data["count"] >= 8
    assert ("health", "duration") == (data["limit_source"], data["ended"])
    # the samples are the test process's own RSS, which serves the route
    own = psutil.Process().memory_info().rss / MIB
    assert data["last_mb"] == pytest.approx(own, rel=0.3)


def test_url_sends_the_token_and_explains_a_status_only_answer() -> None:
    """The token goes as a bearer header; a status-only answer says details need one."""
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ.get("HTTP_AUTHORIZATION"))
        body = {"memory": {"rss_mb": 42.0, "limit_mb": 512.0}}
        ok = environ.get("HTTP_AUTHORIZATION") == "Bearer s3cret"
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body if ok else {"status": "ok"}).encode()]

    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/health"
        assert (42 * MIB, 1) == HealthTarget(url, token="s3cret").sample()
        with pytest.raises(HealthFormatError, match="only its status") as info:
            HealthTarget(url, token="guess").sample()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert ["Bearer s3cret", "Bearer guess"] == seen
    assert "guess" not in str(info.value)


def test_url_reads_the_dyno_view_when_present() -> None:
    """Where /health has ``memory.dyno``, the dyno's used and limit figures are sampled."""

    class Canned(HealthTarget):
        def _fetch(self) -> dict[str, Any]:
            return {"memory": {"rss_mb": 10.0, "limit_mb": 512.0,
                               "dyno": {"used_mb": 300.0, "limit_mb": 1024.0,
                                        "processes": [{}, {}, {}]}}}  # fmt: skip

    target = Canned("http://example.invalid/health")
    assert ((300 * MIB, 3), 1024 * MIB) == (target.sample(), target.limit())


def test_url_errors_are_typed(health_server: str) -> None:
    """A non-JSON body, JSON without memory, and an unreachable port each raise a clear error."""
    with pytest.raises(HealthFormatError, match="did not answer JSON"):
        HealthTarget(f"{health_server}/text").sample()
    with pytest.raises(ConfigError, match="http"):
        HealthTarget("ftp://example.invalid")

    class NoMemory(HealthTarget):
        def _fetch(self) -> dict[str, Any]:
            return {"status": "ok", "app": "not boundkit"}

    with pytest.raises(HealthFormatError, match=r"memory\.rss_mb"):
        NoMemory("http://x/health").sample()
    server = make_server("127.0.0.1", 0, lambda e, s: [])
    port = server.server_port
    server.server_close()
    with pytest.raises(WatchTargetError, match="cannot reach"):
        HealthTarget(f"http://127.0.0.1:{port}/health", timeout=2).sample()


def test_cli_non_json_url_exits_1(health_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The command reports a non-JSON body on stderr and exits 1."""
    assert 1 == main(["watch", "--url", f"{health_server}/text", "--duration", "1"])
    assert "did not answer JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--interval", "0"), ("--interval", "nan"), ("--duration", "-1"), ("--warmup", "inf")],
)
def test_cli_refuses_bad_seconds_before_starting_the_command(
    option: str, value: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --interval, --duration or --warmup exits 1 naming it; the command never runs."""
    ran = tmp_path / "ran"
    assert 1 == main(["watch", option, value, "--", "touch", str(ran)])
    assert f"{option} must be a number of seconds" in capsys.readouterr().err
    assert not ran.exists()


def test_cli_needs_exactly_one_target(capsys: pytest.CaptureFixture[str]) -> None:
    """No target, or two, is refused with exit 1 and the usage hint."""
    assert 1 == main(["watch"])
    assert 1 == main(["watch", "--pid", "1", "--", "true"])
    assert capsys.readouterr().err.count("exactly one of") == 2


def test_cli_piped_output_csv_and_quiet(tmp_path: Any) -> None:
    """Piped, each sample is one line; --csv writes every sample; --quiet prints one line."""
    csv_path = tmp_path / "s.csv"
    done = run_watch("--interval", "0.1", "--duration", "1", "--csv", str(csv_path), "--",
                     sys.executable, "-c", "import time; time.sleep(30)")  # fmt: skip
    sample_lines = [line for line in done.stdout.splitlines() if line.startswith("t=")]
    rows = csv_path.read_text().splitlines()
    assert ["t_s", "rss_mb", "processes"] == rows[0].split(",")
    assert len(sample_lines) == len(rows) - 1 >= 8
    assert "verdict    " in done.stdout
    quiet = run_watch("--interval", "0.1", "--duration", "1", "--quiet", "--",
                      sys.executable, "-c", "import time; time.sleep(30)")  # fmt: skip
    assert 1 == len(quiet.stdout.splitlines())
    assert quiet.stdout.split()[0] in EXIT_CODES


def test_terminal_gets_one_rewritten_line() -> None:
    """On a terminal the live display rewrites one line (carriage returns, a sparkline)."""
    leader, follower = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "boundkit", "watch", "--interval", "0.1", "--duration", "1",
             "--", sys.executable, "-c", "import time; time.sleep(30)"],
            stdout=follower, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(timeout=30) in EXIT_CODES.values()
    finally:
        os.close(leader)
    text = output.decode()
    live = text.split("target ")[0]
    assert live.count("\r") >= 8
    assert "t=" not in live  # no per-sample lines on a terminal
    assert any(mark in live for mark in "▁▂▃▄▅▆▇█")
    assert "verdict    " in text


def test_health_error_path_holds_no_memory(health_server: str) -> None:
    """Polling a route that answers non-JSON, again and again, leaves nothing behind."""
    target = HealthTarget(f"{health_server}/text")

    def poll() -> None:
        with pytest.raises(HealthFormatError):
            target.sample()

    assert_no_growth(poll, calls=50, rounds=5)
