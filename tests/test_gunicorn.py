"""Tests of boundkit.gunicorn: memory-based worker recycling, unit and against a real gunicorn."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from boundkit import ConfigError
from boundkit.gunicorn import WorkerRecycler
from fakes import FakeMemory
from fix_servers import free_port, stop_server, wait_for_port

MB = 1024**2
SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_post_request_retires_worker_over_threshold() -> None:
    """A worker whose RSS reaches its threshold is marked not alive; one below is left alone."""
    memory = FakeMemory(50 * MB)
    recycler = WorkerRecycler(max_worker_memory="100M", jitter=0, reader=memory)
    worker = SimpleNamespace(alive=True, pid=123)
    recycler.post_fork(None, worker)
    recycler.post_request(worker, None, {}, None)
    assert worker.alive
    memory.used = 100 * MB
    recycler.post_request(worker, None, {}, None)
    assert not worker.alive


def test_check_every_skips_requests() -> None:
    """With check_every=3 only every third request reads memory."""
    reads: list[int] = []

    def reader() -> int:
        reads.append(1)
        return 0

    recycler = WorkerRecycler(max_worker_memory="1G", check_every=3, reader=reader)
    worker = SimpleNamespace(alive=True, pid=1)
    for _ in range(9):
        recycler.post_request(worker, None, {}, None)
    assert 3 == len(reads)


def test_jitter_spreads_thresholds_below_the_maximum() -> None:
    """Thresholds fall within [max * (1 - jitter), max] and differ between workers."""
    recycler = WorkerRecycler(max_worker_memory="100M", jitter=0.2, rng=random.Random(7))
    drawn = [recycler.draw_threshold() for _ in range(200)]
    assert all(80 * MB <= t <= 100 * MB for t in drawn)
    assert len(set(drawn)) > 150
    assert max(drawn) - min(drawn) > 15 * MB


def test_post_fork_draws_a_fresh_threshold_per_worker() -> None:
    """Each post_fork re-draws the threshold, so two workers forked alike differ."""
    recycler = WorkerRecycler(max_worker_memory="100M", jitter=0.5)
    seen = set()
    for pid in range(20):
        recycler.post_fork(None, SimpleNamespace(alive=True, pid=pid))
        seen.add(recycler.threshold)
    assert len(seen) > 15


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_worker_memory": 0},
        {"max_worker_memory": "big"},
        {"max_worker_memory": "1G", "jitter": 1.0},
        {"max_worker_memory": "1G", "jitter": -0.1},
        {"max_worker_memory": "1G", "check_every": 0},
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object]) -> None:
    """Invalid recycler settings raise ConfigError naming the setting."""
    with pytest.raises(ConfigError) as info:
        WorkerRecycler(**kwargs)  # type: ignore[arg-type]
    assert list(kwargs)[-1] in str(info.value)


APP = """
import os
from boundkit.memory import process_memory

HELD = []


def app(environ, start_response):
    HELD.append(b"\\x01" * (8 * 1024 * 1024))  # a leak: 8 MiB kept per request
    body = f"{os.getpid()} {process_memory().rss}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

CONF = """
from boundkit.gunicorn import WorkerRecycler

bind = "127.0.0.1:{port}"
workers = 1
worker_class = "sync"
loglevel = "info"
graceful_timeout = 10
control_socket_disable = True
recycler = WorkerRecycler(max_worker_memory="{limit}", jitter=0.1)
post_fork = recycler.post_fork
post_request = recycler.post_request
"""


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[tuple[int, Path, int]]:
    """A real gunicorn on a free local port whose app leaks 8 MiB per request."""
    pytest.importorskip("gunicorn")
    port = free_port()
    limit = 96 * MB
    (tmp_path / "leaky.py").write_text(textwrap.dedent(APP))
    (tmp_path / "gunicorn.conf.py").write_text(CONF.format(port=port, limit=limit))
    log = tmp_path / "gunicorn.log"
    conf = str(tmp_path / "gunicorn.conf.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path)])}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", conf, "leaky:app"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, timeout=30)
        yield port, log, limit
    finally:
        stop_server(proc, timeout=15)


@pytest.mark.slow
def test_gunicorn_worker_is_recycled_by_memory(gunicorn_server: tuple[int, Path, int]) -> None:
    """A leaking worker is retired past max_worker_memory and replaced: no request fails."""
    port, log, limit = gunicorn_server
    pids: list[int] = []
    rss: list[int] = []
    for _ in range(40):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert 200 == response.status
            pid, used = map(int, response.read().split())
        pids.append(pid)
        rss.append(used)
    runs = [pid for i, pid in enumerate(pids) if i == 0 or pid != pids[i - 1]]
    # each worker serves one unbroken run of requests, then is gone for good
    assert len(runs) == len(set(runs))
    assert len(runs) >= 3
    # a worker is retired on the request that reaches its threshold, so none grows far past it
    assert max(rss) < limit + 8 * MB + 8 * MB
    assert len(runs) - 1 <= log.read_text().count("retiring it after this request")
