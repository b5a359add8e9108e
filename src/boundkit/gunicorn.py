"""Govern gunicorn workers by memory: hooks for ``gunicorn.conf.py``.

One line governs the whole dyno (:func:`govern_dyno`): shares computed from
the limit and measured footprints, a supervisor in the arbiter, and health
for every worker::

    # gunicorn.conf.py
    from boundkit.gunicorn import govern_dyno; govern_dyno(globals())

The per-worker recycler below also works on its own.

gunicorn recycles workers only by request count (``max_requests``). These
hooks retire a worker once its resident memory passes ``max_worker_memory``:
the worker finishes the request in hand and exits, and the arbiter starts a
fresh one. Nothing here imports gunicorn::

    # gunicorn.conf.py
    from boundkit.gunicorn import WorkerRecycler

    recycler = WorkerRecycler(max_worker_memory="300M", jitter=0.1)
    post_fork = recycler.post_fork
    post_request = recycler.post_request
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._sizes import format_bytes, parse_bytes
from .errors import ConfigError
from .memory import process_memory

if TYPE_CHECKING:
    from .share import SharePlan
    from .supervisor import DynoSupervisor

__all__ = ["WorkerRecycler", "govern_dyno"]

logger = logging.getLogger("boundkit.gunicorn")


def _rss() -> int:
    return process_memory().rss


class WorkerRecycler:
    """gunicorn hooks that retire a worker whose RSS passes ``max_worker_memory``.

    Each worker draws its own threshold once, at fork, uniformly between
    ``max_worker_memory * (1 - jitter)`` and ``max_worker_memory``, so workers
    that grow alike do not all restart at once. ``check_every`` checks RSS
    after every n-th request (a check reads ``/proc/self/statm``: about a
    microsecond). ``reader`` and ``rng`` are injectable for tests. Messages
    go to the worker's gunicorn log (else the ``boundkit.gunicorn`` logger).
    """

    def __init__(
        self,
        *,
        max_worker_memory: int | str,
        jitter: float = 0.1,
        check_every: int = 1,
        reader: Callable[[], int] = _rss,
        rng: random.Random | None = None,
    ) -> None:
        self.max_worker_memory = parse_bytes(max_worker_memory, name="max_worker_memory")
        if self.max_worker_memory <= 0:
            raise ConfigError(f"max_worker_memory must be above zero, got {max_worker_memory!r}")
        if isinstance(jitter, bool) or not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ConfigError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ConfigError(f"check_every must be an int >= 1, got {check_every!r}")
        self.jitter = float(jitter)
        self.check_every = check_every
        self._reader = reader
        self._rng = rng or random.Random()
        self._reseed = rng is None
        self.threshold = self.draw_threshold()
        self._requests = 0
        self.retiring = False

    def draw_threshold(self) -> int:
        """Draw a jittered threshold in bytes (done per worker in :meth:`post_fork`)."""
        low = self.max_worker_memory * (1 - self.jitter)
        return int(self._rng.uniform(low, self.max_worker_memory))

    def take_share(self, plan: SharePlan) -> None:
        """Retire at the plan's ``recycle`` threshold, jittered by the plan's jitter."""
        from .share import RECYCLE_JITTER

        if plan.recycle <= 0 or plan.recycle == self.max_worker_memory:
            return
        self.max_worker_memory = plan.recycle
        self.jitter = RECYCLE_JITTER
        self.threshold = self.draw_threshold()

    def post_fork(self, server: Any, worker: Any) -> None:
        """gunicorn ``post_fork``: a fresh threshold and request count for the new worker.

        Pools need nothing here: :mod:`boundkit.pg` forgets the parent's pools in
        every forked child (``os.register_at_fork``), so each worker opens its own.
        """
        if self._reseed:
            self._rng.seed()  # otherwise every child would draw the parent's next number
        self.threshold = self.draw_threshold()
        self._requests = 0
        self.retiring = False
        getattr(worker, "log", logger).info(
            "worker %s retires above %s of RSS",
            getattr(worker, "pid", "?"),
            format_bytes(self.threshold),
        )

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        """gunicorn ``post_request``: retire the worker gracefully if over its threshold."""
        self._requests += 1
        if self._requests % self.check_every:
            return
        rss = self._reader()
        if rss >= self.threshold and getattr(worker, "alive", False):
            getattr(worker, "log", logger).warning(
                "worker %s: RSS %s is over %s; retiring it after this request",
                getattr(worker, "pid", "?"),
                format_bytes(rss),
                format_bytes(self.threshold),
            )
            worker.alive = False
            self.retiring = True


#: The arbiter's server and running supervisor, kept across configuration reloads.
_arbiter: dict[str, Any] = {}
_HOOKS = (
    "when_ready",
    "post_fork",
    "pre_request",
    "post_request",
    "worker_exit",
    "child_exit",
    "on_exit",
)


def govern_dyno(
    namespace: MutableMapping[str, Any],
    *,
    interval: float = 0.25,
    health_path: str | None = "/health",
) -> DynoSupervisor:
    """Govern the whole dyno from ``gunicorn.conf.py``: call it with ``globals()``.

    Installs gunicorn hooks (chained after any of the same name already in
    ``namespace``) that: in the arbiter, run a :class:`~boundkit.supervisor.DynoSupervisor`
    every ``interval`` seconds, which computes the :class:`~boundkit.share.SharePlan`
    from the dyno's limit, the worker count and the workers' measured footprints and
    largest requests, retires the largest worker near the limit, and keeps the health
    snapshot current; in each worker, follow the plan (a :class:`WorkerRecycler` at the
    plan's ``recycle``, every ``MemoryGuard()`` given no limit, registered caches, PDF
    budgets) and publish request stats. ``health_path`` requests are not counted.
    Returns the supervisor.
    """
    from .dyno import ENV_STATE_DIR, DynoState, WorkerAgent, current_worker, set_current_worker
    from .guard import retire_requested
    from .supervisor import DynoSupervisor

    state = DynoState.create()
    os.environ[ENV_STATE_DIR] = str(state.directory)
    recycler = WorkerRecycler(max_worker_memory=1 << 62, jitter=0)
    arbiter = _arbiter  # survives a reload: gunicorn runs this file again on SIGHUP
    previous = arbiter.get("supervisor")
    if previous is not None:
        previous.stop()

    def when_ready(server: Any) -> None:
        arbiter["server"] = server
        supervisor.log = getattr(server, "log", None) or supervisor.log
        _one_connection_per_thread(server)
        supervisor.tick()  # the first plan is published before any worker is forked
        supervisor.start()

    def post_fork(server: Any, worker: Any) -> None:
        agent = WorkerAgent(state, health_path=health_path)
        set_current_worker(agent)
        if agent.plan is not None:
            recycler.take_share(agent.plan)
        recycler.post_fork(server, worker)

    def pre_request(worker: Any, req: Any) -> None:
        agent = current_worker()
        if agent is not None:
            agent.pre_request()

    def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
        agent = current_worker()
        if agent is None:
            return
        agent.post_request(req.path, _status_code(resp))
        if agent.plan is not None:
            recycler.take_share(agent.plan)
        recycler.post_request(worker, req, environ, resp)
        if not recycler.retiring and retire_requested():  # the guard escalated
            worker.alive = False
            recycler.retiring = True
        if recycler.retiring:
            agent.mark_retiring()
            agent.publish()

    def worker_exit(server: Any, worker: Any) -> None:
        agent = current_worker()
        if agent is not None:
            agent.publish()

    def child_exit(server: Any, worker: Any) -> None:
        supervisor.worker_exited(worker.pid)

    def on_exit(server: Any) -> None:
        supervisor.stop()
        import shutil

        shutil.rmtree(state.directory, ignore_errors=True)

    def live_workers() -> list[int]:
        server = arbiter.get("server")
        return list(dict(server.WORKERS)) if server is not None else []

    def num_workers() -> int:
        server = arbiter.get("server")
        return int(server.num_workers) if server is not None else int(namespace.get("workers", 1))

    supervisor = DynoSupervisor(
        state, workers=live_workers, num_workers=num_workers, interval=interval
    )
    ours: dict[str, Callable[..., Any]] = {
        "when_ready": when_ready,
        "post_fork": post_fork,
        "pre_request": pre_request,
        "post_request": post_request,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }
    for name in _HOOKS:
        namespace[name] = _chain(namespace.get(name), ours[name])
    arbiter["supervisor"] = supervisor
    if previous is not None:
        supervisor.take_over(previous)
    if "server" in arbiter:  # a reload: when_ready does not run again
        supervisor.log = getattr(arbiter["server"], "log", None) or supervisor.log
        supervisor.start()
    return supervisor


def _one_connection_per_thread(server: Any) -> None:
    """Make a gthread worker with every thread busy leave new connections to the others.

    gunicorn's default lets a gthread worker accept up to ``worker_connections``
    (1000) connections and queue them behind busy threads: a ``/health`` poll can
    then wait seconds behind a slow request while another worker sits idle. With
    one connection per thread the kernel hands it to a worker with a free thread.
    Only settings left at gunicorn's defaults are changed (keep-alive goes, as
    gunicorn has no room for idle connections then).
    """
    cfg = getattr(server, "cfg", None)
    settings = getattr(cfg, "settings", {})
    if cfg is None or "worker_connections" not in settings or cfg.threads <= 1:
        return
    if settings["worker_connections"].value != settings["worker_connections"].default:
        return
    cfg.set("worker_connections", cfg.threads)
    if settings["keepalive"].value == settings["keepalive"].default:
        cfg.set("keepalive", 0)
    server.log.info("boundkit: worker_connections = threads (%s)", cfg.threads)


def _chain(theirs: Callable[..., Any] | None, ours: Callable[..., Any]) -> Callable[..., Any]:
    if theirs is None:
        return ours

    def both(*args: Any) -> None:
        theirs(*args)
        ours(*args)

    return both


def _status_code(resp: Any) -> int:
    code = getattr(resp, "status_code", None)
    if isinstance(code, int):
        return code
    try:
        return int(str(getattr(resp, "status", "500")).split()[0])
    except ValueError:
        return 500
