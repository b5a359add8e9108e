"""Celery workers inside the memory budget: one line, ``install(app)``.

::

    from boundkit.celery import install
    install(app)

For Celery 5.3+ and its prefork, threads and solo pools. Per task: RSS before
and after, the peak inside the task and what the task left held, logged
(``boundkit.celery``) and kept per task name. After a task that left more than
``cleanup_above``, the guards' cleanup hooks and :func:`~boundkit.trim_memory`
run, also when it raised. In ``open_pdf``/``render_pages`` inside a task,
``reserve`` defaults to True (the dyno-wide budget of :mod:`boundkit.admission`).

Prefork children are retired on what they hold *now*: the child resets the
kernel's peak (``VmHWM``, through ``/proc/self/clear_refs``) as a task starts
and again after its cleanup, so billiard's own ``worker_max_memory_per_child``
check, made after the result is sent and comparing ``getrusage().ru_maxrss``,
compares the child's current RSS. The threshold comes from the dyno's limit and
the measured footprint (:func:`~boundkit.share.plan_shares`), or ``share=``.

Health: ``celery -A proj inspect boundkit_snapshot`` (or
``app.control.broadcast("boundkit_snapshot", reply=True)``) answers the JSON of
``boundkit snapshot --json`` with each child's task stats under ``"celery"``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import resource
import threading
import time
from typing import Any

try:
    from celery import signals  # type: ignore[import-untyped]
    from celery.worker.control import inspect_command  # type: ignore[import-untyped]
except ImportError as _exc:  # the 'celery' extra is not installed
    from ._extras import raise_if_extra_missing

    raise_if_extra_missing("boundkit.celery", _exc)
    raise

from . import guard
from ._celery_files import PUBLISH_EVERY, PUBLISHER, ChildFiles
from ._celery_plan import worker_start
from ._redact import redact_values
from ._sizes import format_bytes, parse_bytes
from ._task_memory import TaskMemory, TaskMemoryStats
from .admission import pdf_reserve_default
from .errors import ConfigError
from .memory import _high_water, _reset_high_water, process_memory, trim_memory
from .share import SharePlan

__all__ = ["PUBLISHER", "PUBLISH_EVERY", "CeleryMemory", "install"]

logger = logging.getLogger("boundkit.celery")

#: The remote-control command that answers the health snapshot.
COMMAND = "boundkit_snapshot"

# the figures taken as each task in hand started, innermost last (a task may apply() another):
# rss, perf_counter, start index, alone, pdf token
_Started = tuple[int, float, int, bool, contextvars.Token[Any]]
_started: contextvars.ContextVar[tuple[_Started, ...]] = contextvars.ContextVar(
    "boundkit_celery_tasks", default=()
)
_installed: dict[int, CeleryMemory] = {}


class CeleryMemory:
    """What :func:`install` connected to one Celery app: settings, figures and stats.

    ``recycle_at`` is the RSS (bytes) above which a prefork child is retired
    after its task, set when the worker starts (None before, and in threads
    and solo pools, whose one process Celery cannot replace); ``plan`` the
    share plan it came from (None with ``share=`` or an explicit
    ``--max-memory-per-child``). ``stats`` holds this process's
    :class:`~boundkit._task_memory.TaskMemoryStats`; ``last`` the latest
    :class:`~boundkit._task_memory.TaskMemory`.
    """

    def __init__(
        self,
        app: Any,
        *,
        share: int | None,
        cleanup_above: int,
        reserve_pdfs: bool | int | str,
        max_tasks: int,
    ) -> None:
        self.app = app
        self.share = share
        self.cleanup_above = cleanup_above
        self.reserve_pdfs = reserve_pdfs
        self.max_tasks = max_tasks
        self.stats = TaskMemoryStats(max_tasks)
        self.last: TaskMemory | None = None
        self.recycle_at: int | None = None
        self.plan: SharePlan | None = None
        self.pool = ""
        self.concurrency = 0
        self.peak_resets = _high_water() is not None and os.access("/proc/self/clear_refs", os.W_OK)
        self.files: ChildFiles | None = None
        self.in_child = False
        self.retiring = False
        self.startup: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._running = 0
        self._starts = 0

    def __repr__(self) -> str:
        at = "unset" if self.recycle_at is None else format_bytes(self.recycle_at)
        return f"<CeleryMemory {self.app.main!r} pool={self.pool or '?'} recycle_at={at}>"

    # the worker's main process ------------------------------------------------

    def on_worker_start(self, conf: Any, options: dict[str, Any]) -> None:
        """``celeryd_init``: size the children's share before the pool is made.

        What was decided is kept in ``startup`` (level, message) and logged once
        the worker is ready: its logging is not set up yet at this point.
        """
        start = worker_start(conf, options, share=self.share, peak_resets=self.peak_resets)
        self.pool, self.concurrency = start.pool, start.concurrency
        self.recycle_at, self.plan = start.recycle_at, start.plan
        self.startup = [(level, f"boundkit: {message}") for level, message in start.notes]
        self.files = ChildFiles.create()
        if start.recycle_at is not None:  # billiard's check, in KiB
            conf.worker_max_memory_per_child = max(start.recycle_at // 1024, 1)

    def on_worker_ready(self) -> None:
        """``worker_ready``: log what :meth:`on_worker_start` decided."""
        for level, message in self.startup:
            logger.log(level, "%s", message)

    def snapshot(self) -> dict[str, Any]:
        """The health JSON: ``boundkit snapshot --json``'s, plus ``celery``; secrets redacted."""
        from .cli import collect_snapshot

        snap = collect_snapshot()
        snap["celery"] = {
            "broker": str(self.app.conf.broker_url),
            "pool": self.pool,
            "concurrency": self.concurrency,
            "recycle_at_mb": None if self.recycle_at is None else round(self.recycle_at / 2**20, 1),
            "peak_resets": self.peak_resets,
            "plan": None if self.plan is None else self.plan.as_dict(),
            "processes": self._published(),
        }
        return redact_values(snap)  # type: ignore[no-any-return]

    def _published(self) -> list[dict[str, Any]]:
        """Each child's (or this process's) latest published figures, live processes only."""
        if self.files is None or self.pool != "prefork":
            return [self._figures()]
        return self.files.live()

    def on_worker_stop(self) -> None:
        """``worker_shutdown``: remove the children's published files."""
        if self.files is not None:
            self.files.remove_all()

    # a prefork child ----------------------------------------------------------

    def on_child_start(self) -> None:
        """``worker_process_init``: this process is a prefork child with its own stats."""
        self.in_child = True
        self.retiring = False
        self.stats = TaskMemoryStats(self.max_tasks)
        self.last = None
        self._running = self._starts = 0
        self._lock = threading.Lock()  # the parent's, had a thread of it held one at the fork
        if self.plan is not None:
            for one in list(guard._GUARDS):
                if one.follows_plan:
                    one.take_share(self.plan)
        if self.files is not None:
            self.files.after_fork()
            self.files.live()  # so that files of children killed before they could remove theirs go
        self.publish()

    def on_child_exit(self) -> None:
        """``worker_process_shutdown``: remove this child's file."""
        if self.files is not None and self.in_child:
            self.files.remove_own()

    def _figures(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "rss_mb": round(process_memory().rss / 2**20, 1),
            "retiring": self.retiring,
            "last": None if self.last is None else self.last.as_dict(),
            "tasks": self.stats.summary(),
        }

    def publish(self) -> None:
        """Write this child's figures where the main process's health command reads them."""
        if self.files is not None and self.in_child:
            self.files.publish(self._figures())

    # every task ---------------------------------------------------------------

    def before_task(self) -> None:
        """``task_prerun``: note RSS and reset the kernel's peak if the task runs alone."""
        with self._lock:
            self._running += 1
            self._starts += 1
            start, alone = self._starts, self._running == 1
        if alone and self.peak_resets and _reset_high_water() is None:
            self.peak_resets = False
            logger.warning(
                "boundkit: the kernel's peak could not be reset: task peaks are not measured, "
                "and billiard compares each child's lifetime peak"
            )
        token = pdf_reserve_default.set(self.reserve_pdfs)
        entry = (process_memory().rss, time.perf_counter(), start, alone, token)
        _started.set((*_started.get(), entry))

    def after_task(self, name: str, task_id: str, state: str | None) -> None:
        """``task_postrun``: measure, log, clean up, and leave billiard the current RSS."""
        stack = _started.get()
        if not stack:
            return
        _started.set(stack[:-1])
        rss_before, began, start, alone, token = stack[-1]
        pdf_reserve_default.reset(token)
        seconds = time.perf_counter() - began
        with self._lock:
            self._running -= 1
            alone = alone and self._starts == start
        peak = _high_water() if alone and self.peak_resets else None
        rss = process_memory().rss
        given_back = 0
        if rss - rss_before > self.cleanup_above:
            errors = guard.run_cleanup_hooks()
            trim_memory()
            rss, held = process_memory().rss, rss
            given_back = max(held - rss, 0)
            if errors:
                logger.warning("boundkit: %s cleanup hooks failed after task %s", errors, name)
        run = TaskMemory(
            name,
            task_id,
            state or "?",
            seconds,
            rss_before,
            rss,
            peak,
            given_back,
            shared=not alone,
        )
        self.last = run
        leak = self.stats.observe(run)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "task %s[%s] %s in %.3f s: RSS %s -> %s, peak %s, left %s, cleanup gave back %s",
                name,
                task_id,
                run.state,
                seconds,
                format_bytes(rss_before),
                format_bytes(rss),
                "unknown" if peak is None else format_bytes(peak),
                format_bytes(run.left) if run.left >= 0 else f"-{format_bytes(-run.left)}",
                format_bytes(given_back),
            )
        if leak is not None:
            logger.warning("boundkit: %s: is it keeping references?", leak)
        if self.in_child:
            self._leave_current_rss(rss, peak if given_back == 0 else None, name, task_id)
            if self.files is not None:
                self.files.publish_soon(self._figures, now=self.retiring)

    def _leave_current_rss(self, rss: int, peak: int | None, name: str, task_id: str) -> None:
        """Reset the peak so billiard's check, next, compares what this child holds now.

        ``peak`` is the peak just read, when nothing ran since that could raise it.
        """
        if self.peak_resets:
            _reset_high_water(peak)
        limit = self.recycle_at
        if limit is None:
            return
        kernel_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if rss > limit:
            self.retiring = True
            logger.info(
                "boundkit: child %s holds %s after task %s[%s], over its %s: "
                "it is retired once the result is sent",
                os.getpid(),
                format_bytes(rss),
                name,
                task_id,
                format_bytes(limit),
            )
        elif kernel_peak > limit:
            self.retiring = True
            logger.warning(
                "boundkit: child %s holds %s, under its %s, but the kernel's peak reads %s%s: "
                "billiard retires it",
                os.getpid(),
                format_bytes(rss),
                format_bytes(limit),
                format_bytes(kernel_peak),
                "" if self.peak_resets else " (the peak cannot be reset here)",
            )


def install(
    app: Any,
    *,
    share: int | str | None = None,
    cleanup_above: int | str = "16M",
    reserve_pdfs: bool | int | str = True,
    max_tasks: int = 100,
) -> CeleryMemory:
    """Govern ``app``'s workers by memory; call it where the app is made. Returns the settings.

    ``share`` (bytes or a size such as ``"300M"``) is the RSS a prefork child
    may hold after a task before it is retired; by default it is computed
    when the worker starts from the dyno's limit (:func:`~boundkit.memory_limit`),
    the concurrency and the worker's measured footprint
    (:func:`~boundkit.share.plan_shares`: the plan's ``recycle``). After a task
    that left more than ``cleanup_above`` held, every guard's cleanup hooks
    and :func:`~boundkit.trim_memory` run. ``reserve_pdfs`` is what
    ``open_pdf``/``render_pages`` reserve in tasks when not told (False: nothing).
    Stats keep ``max_tasks`` task names, then ``"other"``. Calling it again
    for the same app returns the first result unchanged.
    """
    found = _installed.get(id(app))
    if found is not None:
        return found
    share_bytes = None if share is None else parse_bytes(share, name="share")
    if share_bytes is not None and share_bytes <= 0:
        raise ConfigError(f"share must be more than zero bytes, got {share!r}")
    cleanup = parse_bytes(cleanup_above, name="cleanup_above")
    if isinstance(reserve_pdfs, (int, str)) and not isinstance(reserve_pdfs, bool):
        parse_bytes(reserve_pdfs, name="reserve_pdfs")
    memory = CeleryMemory(
        app,
        share=share_bytes,
        cleanup_above=cleanup,
        reserve_pdfs=reserve_pdfs,
        max_tasks=max_tasks,
    )
    _installed[id(app)] = memory
    _connect(memory)
    return memory


def _connect(memory: CeleryMemory) -> None:
    app = memory.app
    uid = f"boundkit-{id(app)}"

    def on_init(sender: Any = None, conf: Any = None, options: Any = None, **_: Any) -> None:
        if conf is app.conf:
            memory.on_worker_start(conf, dict(options or {}))

    def on_prerun(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            memory.before_task()

    def on_postrun(
        sender: Any = None, task_id: str = "", state: str | None = None, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is app:
            memory.after_task(getattr(sender, "name", "?"), task_id, state)

    signals.celeryd_init.connect(on_init, weak=False, dispatch_uid=uid)
    signals.worker_process_init.connect(
        lambda **_: memory.on_child_start(), weak=False, dispatch_uid=uid
    )
    signals.worker_process_shutdown.connect(
        lambda **_: memory.on_child_exit(), weak=False, dispatch_uid=uid
    )
    signals.worker_ready.connect(lambda **_: memory.on_worker_ready(), weak=False, dispatch_uid=uid)
    signals.worker_shutdown.connect(
        lambda **_: memory.on_worker_stop(), weak=False, dispatch_uid=uid
    )
    signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid=uid)
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid=uid)
    inspect_command(name=COMMAND)(_snapshot_command)


def _snapshot_command(state: Any, **_: Any) -> dict[str, Any]:
    """boundkit's health snapshot of this worker, its children and their task stats."""
    app = getattr(state, "app", None)
    memory = _installed.get(id(app)) or next(iter(_installed.values()))
    return memory.snapshot()
