"""The Celery app tests/test_celery.py runs in a real worker (``-A celery_app``).

Configured by the environment the fixture sets: ``BK_CELERY_BROKER`` (Redis
URL), ``BK_CELERY_SHARE`` (install()'s share), ``DATABASE_URL`` and
``BK_CELERY_PARENT_FILE`` (when set, the worker's main process opens a pooled
connection before forking its children and writes its backend pid there).
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from celery import Celery, signals

import boundkit
from boundkit._sizes import estimate_size
from boundkit.celery import PUBLISH_EVERY as memory_publish_every
from boundkit.celery import PUBLISHER, install
from boundkit.guard import default_guard

MIB = 1024 * 1024

app = Celery("bk", broker=os.environ["BK_CELERY_BROKER"], backend=os.environ["BK_CELERY_BROKER"])
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=True,
)
memory = install(app, share=os.environ.get("BK_CELERY_SHARE") or None)

_kept: list[bytes] = []
_cache: list[bytes] = []  # what the guard's cleanup hook empties
default_guard().register_cleanup(_cache.clear)

if os.environ.get("BK_CELERY_PARENT_FILE"):
    from boundkit.pg import pooled_connection

    with pooled_connection() as conn:  # the default pool, made in the parent before the fork
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    Path(os.environ["BK_CELERY_PARENT_FILE"]).write_text(str(backend[0] if backend else ""))


@app.task(name="bk.tiny")
def tiny() -> int:
    """Nothing: the per-task overhead alone."""
    return os.getpid()


@app.task(name="bk.spike")
def spike(mib: int, hold: bool) -> int:
    """Allocate ``mib`` MiB (touched), keep it for the life of the child if ``hold``."""
    buf = b"\x01" * (mib * MIB)
    if hold:
        _kept.append(buf)
    del buf
    return os.getpid()


@app.task(name="bk.fail")
def fail(mib: int) -> None:
    """Put ``mib`` MiB where the guard's cleanup hook finds it, then raise."""
    _cache.append(b"\x01" * (mib * MIB))
    raise ValueError("this task fails on purpose")


@app.task(name="bk.last")
def last() -> dict[str, Any]:
    """This child's pid, the guard cache's length and the previous task's figures."""
    previous = memory.last
    return {
        "pid": os.getpid(),
        "cache": len(_cache),
        "previous": None if previous is None else previous.as_dict(),
    }


@app.task(name="bk.admission")
def admission(seconds: float) -> dict[str, Any]:
    """This child's pid and the path of the admission table its PDFs reserve from.

    It stays ``seconds`` first, so that tasks sent together reach both children.
    """
    from boundkit.admission import default_admission

    time.sleep(seconds)
    return {"pid": os.getpid(), "path": str(default_admission().path)}


@app.task(name="bk.pg_backend")
def pg_backend() -> dict[str, int]:
    """The backend pid of a connection from the default pool, and this child's pid."""
    from boundkit.pg import pooled_connection

    with pooled_connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    return {"pid": os.getpid(), "backend": row[0] if row else 0}


def _boundkit_state() -> dict[str, int]:
    """The sizes of boundkit's state in this child, and the bytes traced to boundkit's files."""
    gc.collect()
    traced = 0
    if tracemalloc.is_tracing():
        root = os.path.dirname(boundkit.__file__)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, os.path.join(root, "*"))]
        )
        traced = sum(stat.size for stat in snapshot.statistics("filename"))
    return {
        "traced": traced,
        "tasks": memory.stats.tasks,
        "stats_bytes": estimate_size(memory.stats),
        "names": len(memory.stats.summary()["names"]),
        "published": len(list(memory.files.directory.iterdir())) if memory.files else 0,
        "threads": sum(t.name != PUBLISHER for t in threading.enumerate()),
        "publishers": sum(t.name == PUBLISHER for t in threading.enumerate()),
    }


_burst: dict[str, Any] = {}
_burst_sent = threading.Event()


@app.task(name="bk.burst")
def burst(tasks: int, traced: int) -> int:
    """Run ``tasks`` bk.tiny through Celery's tracer in this child, tracing the last ``traced``.

    A thread of this child applies them (``apply()``: the tracer and its signals,
    without the broker) after this task has ended, so each runs alone in the
    process as a delivered task does; ``bk.burst_result`` returns the figures:
    boundkit's state sizes after 500 tasks and at the end, and the bytes
    tracemalloc traces to boundkit's files before and after the last ``traced``
    (tracing all of them would take minutes).
    """

    def settled() -> dict[str, int]:
        time.sleep(memory_publish_every + 0.2)  # the pending publish is done, its thread gone
        return _boundkit_state()

    def run() -> None:
        _burst_sent.wait()
        for _ in range(500):
            tiny.apply()
        first = settled()
        for _ in range(tasks - 500 - traced):
            tiny.apply()
        tracemalloc.start()
        for _ in range(100):  # what tracing itself allocates once
            tiny.apply()
        traced_before = settled()
        for _ in range(traced - 100):
            tiny.apply()
        last = settled()
        tracemalloc.stop()
        _burst.update(first=first, traced_before=traced_before, last=last, pid=os.getpid())

    threading.Thread(target=run, daemon=True).start()
    return os.getpid()


@signals.task_postrun.connect(weak=False)
def _burst_ended(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", "") == "bk.burst":
        _burst_sent.set()


@app.task(name="bk.burst_result")
def burst_result(seconds: float) -> dict[str, Any]:
    """The figures of this child's burst, if it ran one and it has ended, after ``seconds``."""
    time.sleep(seconds)
    return dict(_burst)
