"""MemoryGuard: act on memory pressure before the platform kills the process.

A guard compares this process's resident memory with its limit. Crossing the
``warning`` fraction upwards logs and runs the warning hooks; crossing
``critical`` runs the cleanup hooks, then :func:`~boundkit.trim_memory`, and
logs what was given back. Hysteresis and a cooldown keep cleanups rare: never
per request, never in a storm. Registered caches with a byte bound have their
``max_bytes`` lowered at critical and restored gradually afterwards
(:class:`~boundkit.pressure.CacheBudgets`). Above ``ok`` the watcher checks
every ``fast_interval``; a process still critical ``escalate_after`` seconds
after a cleanup is cleaned up again, then retired (``retire``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from ._sizes import format_bytes, parse_bytes
from ._window import check_seconds
from .errors import ConfigError, ResourceClosedError
from .memory import MemoryLimit, _check_fraction, memory_limit, process_memory, trim_memory
from .pressure import CacheBudgets

if TYPE_CHECKING:
    from .share import SharePlan

__all__ = ["MemoryGuard", "check_guards", "default_guard", "run_cleanup_hooks"]

logger = logging.getLogger("boundkit.guard")

Level = Literal["ok", "warning", "critical"]
_RANK: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}


class _Shrinkable(Protocol):
    def shrink(self, fraction: float) -> object: ...


def _rss() -> int:
    return process_memory().rss


# how long the guard's cleanup waits for an event loop to close its async pools' connections
ASYNC_RELEASE_TIMEOUT = 2.0


def _release_idle_connections() -> None:
    released = 0
    pg = sys.modules.get("boundkit.pg")
    if pg is not None:
        released += pg.release_idle()
    pg_async = sys.modules.get("boundkit.pg_async")
    if pg_async is not None:  # on each pool's own loop, never blocking it
        released += pg_async.release_idle_threadsafe(timeout=ASYNC_RELEASE_TIMEOUT)
    if pg is not None or pg_async is not None:
        logger.info("memory cleanup closed %s idle database connections", released)


_retire_request = threading.Event()


def retire_requested() -> bool:
    """Whether a guard asked to retire this worker (the gunicorn hooks act after the request)."""
    return _retire_request.is_set()


def _retire_worker() -> None:
    """Ask the governed gunicorn worker's hooks to retire it after the request in hand."""
    from . import dyno

    if dyno.current_worker() is None:
        logger.error("memory still critical after cleanups: nothing to retire (pass retire=)")
        return
    _retire_request.set()


class MemoryGuard:
    """Watch resident memory against a limit and clean up under pressure.

    ``limit`` is in bytes, a size such as ``"512M"`` or a
    :class:`~boundkit.MemoryLimit`; by default
    :func:`~boundkit.memory_limit` (the container's limit, else the host's
    memory). ``hysteresis`` is how far (as a fraction of the limit) memory
    must fall below a threshold before its level is left. While memory stays
    critical, cleanup repeats at most once per ``cooldown`` seconds.
    ``interval`` is the watcher thread's period at ``ok``, ``fast_interval``
    above it. While memory stays critical, ``escalate_after`` seconds after
    a cleanup it is done again (caches lowered further, trim), and as much
    later ``retire()`` is called once (default: a governed gunicorn worker
    is retired after the request in hand, as its recycler would). ``reader`` returns the bytes
    in use (default: this process's RSS), ``timer`` the time in seconds and
    ``trim`` gives memory back after the cleanup hooks (default
    :func:`~boundkit.trim_memory`); tests inject all three.

    In a gunicorn worker under :func:`boundkit.gunicorn.govern_dyno`, a
    guard given none of ``limit``, ``warning`` and ``critical`` takes the
    worker's share of the plan (:meth:`take_share`) and follows it as the
    plan changes; elsewhere they default to the limit, 0.80 and 0.90.
    """

    def __init__(
        self,
        *,
        warning: float | None = None,
        critical: float | None = None,
        limit: int | str | MemoryLimit | None = None,
        interval: float = 5.0,
        fast_interval: float = 0.25,
        cooldown: float = 30.0,
        escalate_after: float = 2.0,
        hysteresis: float = 0.05,
        reader: Callable[[], int] = _rss,
        timer: Callable[[], float] = time.monotonic,
        trim: Callable[[], object] = trim_memory,
        retire: Callable[[], object] = _retire_worker,
    ) -> None:
        self.follows_plan = limit is None and warning is None and critical is None
        self.warning = _check_fraction("warning", 0.80 if warning is None else warning)
        self.critical = _check_fraction("critical", 0.90 if critical is None else critical)
        if self.warning >= self.critical:
            raise ConfigError(f"warning ({warning!r}) must be below critical ({critical!r})")
        if isinstance(hysteresis, bool) or not (
            isinstance(hysteresis, (int, float)) and 0 <= hysteresis < self.warning
        ):
            raise ConfigError(f"hysteresis must be in [0, warning), got {hysteresis!r}")
        self.hysteresis = float(hysteresis)
        self.interval = check_seconds("interval", interval, allow_zero=False)
        self.cooldown = check_seconds("cooldown", cooldown, allow_zero=True)
        self.fast_interval = check_seconds("fast_interval", fast_interval, allow_zero=False)
        self.escalate_after = check_seconds("escalate_after", escalate_after, allow_zero=True)
        self._set_limit(self._resolve_limit(limit))
        self._reader = reader
        self._timer = timer
        self._trim = trim
        self._retire = retire
        self.budgets = CacheBudgets(timer=timer)
        self._stage = 0  # 1 cleaned up, 2 cleaned up again, 3 retire asked, while critical
        self._given_back = {"caches": 0, "trim": 0, "own": 0}
        self._retirements = 0
        self._hooks: dict[str, list[Callable[[], object]]] = {"warning": [], "critical": []}
        self._caches: dict[str, Any] = {}
        self._configured_bytes: dict[str, int | None] = {}
        self.plan: SharePlan | None = None
        self._lock = threading.Lock()
        self._level: Level = "ok"
        self._used = 0
        self._checks = 0
        self._last_check: float | None = None
        self._last_cleanup: dict[str, Any] | None = None
        self._last_cleanup_at: float | None = None
        self._cleanups = 0
        self._reclaimed = 0
        self._hook_errors = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        _GUARDS.add(self)
        if self.follows_plan:
            from .dyno import current_plan

            plan = current_plan()
            if plan is not None:
                self.take_share(plan)

    def _set_limit(self, limit: MemoryLimit) -> None:
        self.limit = limit
        self._limit_bytes = limit.bytes
        self._bounds = tuple(
            self._limit_bytes * fraction
            for fraction in (
                self.critical,
                self.critical - self.hysteresis,
                self.warning,
                self.warning - self.hysteresis,
            )
        )

    def take_share(self, plan: SharePlan) -> None:
        """Guard this worker's share of ``plan`` and fit the registered caches into it.

        The limit becomes ``plan.share``, warning and critical the plan's
        ``guard_warning`` and ``guard_critical``; each registered cache with
        ``resize(max_bytes=...)`` gets an equal part of ``plan.cache_budget``,
        never more than it was configured with. A plan with no room (a
        share below one request) is logged and not taken.
        """
        if not 0 < plan.guard_warning < plan.guard_critical <= plan.share:
            logger.error("share plan leaves no room for a guard: %s", plan.as_dict()["table"])
            return
        with self._lock:
            self.plan = plan
            self.warning = plan.guard_warning / plan.share
            self.critical = plan.guard_critical / plan.share
            self.hysteresis = min(self.hysteresis, self.warning / 2)
            self._set_limit(MemoryLimit(plan.share, "share plan", limited=True))
        self._fit_caches()

    def _fit_caches(self) -> None:
        plan = self.plan
        with self._lock:
            resizable = {
                name: cache for name, cache in self._caches.items() if hasattr(cache, "resize")
            }
        if plan is None or not resizable:
            return
        part = max(plan.cache_budget // len(resizable), 1)
        for name, cache in resizable.items():
            configured = self._configured_bytes.get(name)
            budget = part if configured is None else min(configured, part)
            if getattr(cache, "max_bytes", None) != budget:
                cache.resize(max_bytes=budget)
                logger.info(
                    "cache %s: max_bytes %s (its share of the plan)", name, format_bytes(budget)
                )

    @staticmethod
    def _resolve_limit(limit: int | str | MemoryLimit | None) -> MemoryLimit:
        if limit is None:
            return memory_limit()
        if isinstance(limit, MemoryLimit):
            value, found = limit.bytes, limit
        else:
            value = parse_bytes(limit, name="limit")
            found = MemoryLimit(bytes=value, source="MemoryGuard(limit=...)", limited=True)
        if value <= 0:
            raise ConfigError(f"limit must be more than zero bytes, got {limit!r}")
        return found

    def __repr__(self) -> str:
        return (
            f"<MemoryGuard {self._level} limit={format_bytes(self._limit_bytes)} "
            f"warning={self.warning:g} critical={self.critical:g}>"
        )

    # registration -------------------------------------------------------------

    def register_cleanup(
        self, fn: Callable[[], object], *, level: Literal["warning", "critical"] = "critical"
    ) -> Callable[[], object]:
        """Run ``fn()`` when memory crosses ``level`` upwards; return ``fn``.

        Critical hooks run before :func:`~boundkit.trim_memory`. An exception
        in a hook is logged and counted, never raised. Usable as a decorator.
        """
        if level not in self._hooks:
            raise ConfigError(f"level must be 'warning' or 'critical', got {level!r}")
        with self._lock:
            self._hooks[level].append(fn)
        return fn

    def register_cache(
        self, cache: _Shrinkable, *, name: str | None = None, fraction: float = 0.5
    ) -> None:
        """Give back ``cache``'s memory at critical.

        A cache with a byte bound and ``resize()`` (a
        :class:`~boundkit.BoundedCache` with ``max_bytes``) has its budget
        lowered, then restored gradually (:attr:`budgets`); any other object
        with ``shrink(fraction)`` loses ``fraction`` of its entries. Its
        ``stats()``, when it has one,
        appear in the health output under ``name``. Under a share plan a cache
        with ``resize()`` is also held to its part of the plan's cache budget.
        """
        fraction = _check_fraction("fraction", fraction)
        key = name or f"{type(cache).__name__}-{len(self._caches) + 1}"
        with self._lock:
            self._caches[key] = cache
            self._configured_bytes[key] = getattr(cache, "max_bytes", None)
        if hasattr(cache, "resize") and self._configured_bytes[key] is not None:
            self.budgets.add(key, cast(Any, cache))
        else:
            self.register_cleanup(lambda: cache.shrink(fraction))
        self._fit_caches()

    def register_pools(self) -> None:
        """Close idle pooled connections (down to ``min_size``) at critical, sync and async.

        Uses ``boundkit.pg.release_idle()`` and
        ``boundkit.pg_async.release_idle_threadsafe()`` for the modules the app
        has imported; never imports psycopg itself. Async pools are shrunk on
        their own event loop (waiting up to ``ASYNC_RELEASE_TIMEOUT`` seconds
        from the watcher thread; scheduled, not awaited, from the loop's thread).
        """
        self.register_cleanup(_release_idle_connections)

    def caches(self) -> dict[str, Any]:
        """Return the registered caches by name."""
        with self._lock:
            return dict(self._caches)

    # checking -----------------------------------------------------------------

    @property
    def level(self) -> Level:
        """The level seen by the last check: ``ok``, ``warning`` or ``critical``."""
        return self._level

    def _level_for(self, used: int) -> Level:
        # hysteresis: a level is left only once memory is clearly below its threshold
        enter_critical, stay_critical, enter_warning, stay_warning = self._bounds
        current = self._level
        if used >= enter_critical or (current == "critical" and used >= stay_critical):
            return "critical"
        if used >= enter_warning or (current != "ok" and used >= stay_warning):
            return "warning"
        return "ok"

    def check(self) -> Level:
        """Read memory, act on any upward crossing and return the current level.

        Cheap when nothing is crossed (one read of ``/proc/self/statm``). If
        another thread is checking, returns the last level without waiting.
        """
        if not self._lock.acquire(blocking=False):
            return self._level
        try:
            used = self._reader()
            now = self._timer()
            previous = self._level
            level = self._level_for(used)
            if previous != "ok" and used < self._used:
                self._given_back["own"] += self._used - used
            self._level, self._used = level, used
            self._checks += 1
            self._last_check = now
            if level != previous and _RANK[level] > _RANK[previous]:
                logger.warning(
                    "memory %s: %s of %s (%.0f%%)",
                    level,
                    format_bytes(used),
                    format_bytes(self._limit_bytes),
                    100 * used / self._limit_bytes,
                )
                if previous == "ok":
                    self._run_hooks("warning")
            self.budgets.relax(level)
            if level != "critical":
                self._stage = 0
                return level
            self._escalate(used, now)
            return self._level
        finally:
            self._lock.release()

    def _escalate(self, used: int, now: float) -> None:
        """Clean up on entering critical (or after the cooldown); escalate if it does not help."""
        last = self._last_cleanup_at
        if last is None or now - last >= self.cooldown:
            self._cleanup(used, now)
            self._stage = 1
        elif self._stage == 0:  # back within the cooldown: escalation counts from that cleanup
            self._stage = 1
        elif now - last >= self.escalate_after and self._stage == 1:
            logger.warning("memory still critical %.1f s after cleanup: again", now - last)
            self._cleanup(used, now)
            self._stage = 2
        elif now - last >= self.escalate_after and self._stage == 2:
            self._stage = 3
            self._retirements += 1
            logger.error(
                "memory still critical after two cleanups (%s of %s): asking to retire pid %s",
                format_bytes(used),
                format_bytes(self._limit_bytes),
                os.getpid(),
            )
            try:
                self._retire()
            except Exception:
                self._hook_errors += 1
                logger.exception("memory guard retire failed")

    def _run_hooks(self, level: str) -> int:
        errors = 0
        for hook in list(self._hooks[level]):
            try:
                hook()
            except Exception:
                errors += 1
                logger.exception("memory guard %s hook %r failed", level, hook)
        self._hook_errors += errors
        return errors

    def _cleanup(self, before: int, now: float) -> None:
        started = self._timer()
        estimated = self.budgets.lower()
        errors = self._run_hooks("critical")
        after_caches = self._reader()
        try:
            self._trim()
        except Exception:
            errors += 1
            self._hook_errors += 1
            logger.exception("memory guard trim failed")
        after = self._reader()
        reclaimed = max(before - after, 0)
        steps = {
            "caches": max(before - after_caches, 0),
            "caches_estimated": estimated,
            "trim": max(after_caches - after, 0),
        }
        self._given_back["caches"] += steps["caches"]
        self._given_back["trim"] += steps["trim"]
        finished = self._timer()
        self._last_cleanup_at = finished
        self._cleanups += 1
        self._reclaimed += reclaimed
        self._last_cleanup = {
            "before": before,
            "after": after,
            "reclaimed": reclaimed,
            "seconds": finished - started,
            "errors": errors,
            "steps": steps,
        }
        self._used = after
        self._level = self._level_for(after)
        logger.warning(
            "memory cleanup gave back %s (%s -> %s) in %.3f s: caches %s "
            "(entries of about %s evicted), trim %s",
            format_bytes(reclaimed),
            format_bytes(before),
            format_bytes(after),
            finished - started,
            format_bytes(steps["caches"]),
            format_bytes(estimated),
            format_bytes(steps["trim"]),
        )

    def status(self) -> dict[str, Any]:
        """Return a JSON-ready summary for a health endpoint.

        ``level``, ``used`` and ``limit`` bytes, ``checks``, ``cleanups``,
        ``reclaimed`` bytes in total, ``last_cleanup`` (its ``before``,
        ``after``, ``reclaimed``, ``seconds``, ``errors``, ``steps`` (what
        the caches and the trim each gave back) and ``seconds_ago``, or None),
        ``given_back`` (bytes in total by the caches, the trim, and the
        process's ``own`` release while above ``ok``), ``budgets`` (cache
        budgets now and before pressure), ``retirements`` asked,
        ``hook_errors`` and whether the watcher thread is running.
        """
        with self._lock:
            now = self._timer()
            last = dict(self._last_cleanup) if self._last_cleanup is not None else None
            if last is not None and self._last_cleanup_at is not None:
                last["seconds_ago"] = now - self._last_cleanup_at
            return {
                "level": self._level,
                "used": self._used,
                "limit": self._limit_bytes,
                "warning": self.warning,
                "critical": self.critical,
                "checks": self._checks,
                "last_check_seconds_ago": (
                    None if self._last_check is None else now - self._last_check
                ),
                "cleanups": self._cleanups,
                "reclaimed": self._reclaimed,
                "last_cleanup": last,
                "given_back": dict(self._given_back),
                "budgets": self.budgets.status(),
                "retirements": self._retirements,
                "hook_errors": self._hook_errors,
                "watching": self.watching,
            }

    # the watcher thread -------------------------------------------------------

    @property
    def watching(self) -> bool:
        """Whether this process's watcher thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start a daemon thread that calls :meth:`check` every ``interval`` seconds.

        Every ``fast_interval`` seconds instead while the level is above ``ok``.

        Idempotent. After ``fork()`` the child starts its own watcher if the
        parent's was running, and never inherits a dead one.
        """
        if self._closed:
            raise ResourceClosedError("memory guard was stopped for good with close()")
        if self.watching:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(self._stop,), name="boundkit-memory-guard", daemon=True
        )
        self._thread.start()

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval if self._level == "ok" else self.fast_interval):
            try:
                self.check()
            except Exception:
                logger.exception("memory guard check failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the watcher thread and wait up to ``timeout`` seconds for it (None: no limit)."""
        if timeout is not None:
            timeout = check_seconds("timeout", timeout, allow_zero=True)
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        """Stop the watcher; :meth:`start` then raises ResourceClosedError."""
        self._closed = True
        self.stop()

    def _after_fork_in_child(self) -> None:
        was_watching = self._thread is not None
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        if was_watching and not self._closed:
            self.start()


_GUARDS: weakref.WeakSet[MemoryGuard] = weakref.WeakSet()


def _reset_guards_in_child() -> None:
    global _retire_request
    _retire_request = threading.Event()
    for guard in list(_GUARDS):
        guard._after_fork_in_child()


def check_guards() -> None:
    """Check the default guard and every started guard now: the per-page hook of PDF rendering.

    One read of ``/proc/self/statm`` per guard (microseconds); nothing when there is none.
    """
    for guard in list(_GUARDS):
        if guard is _default or guard.watching:
            guard.check()


def run_cleanup_hooks() -> int:
    """Run every guard's cleanup (critical) hooks now; return how many raised.

    For work that ends at a known point, such as a Celery task: what a hook
    frees is given back before the next task. Each exception is logged and
    counted in its guard's ``hook_errors``, never raised.
    """
    errors = 0
    for guard in list(_GUARDS):
        with guard._lock:
            errors += guard._run_hooks("critical")
    return errors


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_guards_in_child)

_default: MemoryGuard | None = None
_default_lock = threading.Lock()


def default_guard() -> MemoryGuard:
    """Return the process-wide guard the web middleware and hooks share.

    Created on first use with the default thresholds; it does not start its
    watcher thread until :meth:`MemoryGuard.start` is called.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = MemoryGuard()
        return _default
