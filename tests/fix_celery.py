"""A real ``celery worker`` for the tests: a subprocess in its own process group.

``CeleryWorker`` starts ``celery -A celery_app worker`` (tests/celery_app.py)
with a Redis broker and result backend, waits for ``ready.`` in its log file,
and is stopped by pid: warm shutdown (SIGTERM), then SIGKILL to its group.
Tests get one through ``celery_worker(...)`` in a fixture; without Celery or
Redis they skip, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fix_redis import HOST, PORT, _unavailable
from fix_servers import stop_process_group

#: This branch's Redis database on the shared server.
CELERY_DB = 14
TESTS = Path(__file__).resolve().parent
START_TIMEOUT = 60.0


class CeleryWorker:
    """A ``celery worker`` subprocess; ``log_text()`` reads its log file."""

    def __init__(
        self, *, log: Path, env: dict[str, str], queue: str = "celery", concurrency: int = 2
    ) -> None:
        self.log = log
        cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", "prefork"]
        cmd += ["-c", str(concurrency), "-l", "INFO", "-n", f"bk{os.getpid()}@%h"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        cmd += ["-Q", queue, "--logfile", str(log)]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=TESTS,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while "ready." not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"celery worker did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_process_group(self.proc, 20)


def broker_url() -> str:
    return f"redis://{HOST}:{PORT}/{CELERY_DB}"


@contextlib.contextmanager
def celery_worker(
    tmp: Path, *, queue: str = "celery", **env: str
) -> Iterator[tuple[CeleryWorker, Any]]:
    """A started worker and a client app (``send_task`` by name), on a flushed database.

    The worker consumes ``queue`` only, where the client sends by default.
    """
    pytest.importorskip("celery")
    redis = pytest.importorskip("redis")
    client = redis.Redis(host=HOST, port=PORT, db=CELERY_DB, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        _unavailable(f"no Redis at {HOST}:{PORT}: {exc}")
    from celery import Celery

    full = {**os.environ, **env, "BK_CELERY_BROKER": broker_url()}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), full.get("PYTHONPATH", "")]))
    worker = CeleryWorker(log=tmp / "worker.log", env=full, queue=queue)
    client_app = Celery("bk-client", broker=broker_url(), backend=broker_url())
    client_app.conf.task_default_queue = queue
    try:
        yield worker, client_app
    finally:
        worker.stop()
        client_app.close()
        client.flushdb()
        client.close()
