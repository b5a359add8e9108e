"""One dyno's shared state: the share plan, the health snapshot and every worker's requests.

Under :func:`boundkit.gunicorn.govern_dyno` the arbiter's supervisor
(:mod:`boundkit.supervisor`) writes the plan and a health snapshot into a
directory in shared memory (``/dev/shm/boundkit-<arbiter pid>``); each worker
follows the plan (:func:`current_plan`), publishes its request stats there at
most once a second, and answers ``/health`` from the snapshot without
measuring anything on the request path. Files are replaced atomically
(written, then renamed), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._sketch import QuantileSketch
from .memory import _peak_rss, process_memory
from .share import SharePlan

__all__ = [
    "ENV_STATE_DIR",
    "DynoState",
    "RequestLedger",
    "WorkerAgent",
    "current_plan",
    "current_worker",
    "merge_ledgers",
]

ENV_STATE_DIR = "BOUNDKIT_DYNO_DIR"
_MB = 1024 * 1024
_MAX_ROUTES = 100
_OTHER = "other"
_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
#: A worker's footprint is measured over these requests (imports done, nothing cached yet).
_FOOTPRINT_REQUESTS = range(2, 21)


def _shared_memory_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class DynoState:
    """The shared directory of one dyno: paths and atomic JSON reads and writes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @classmethod
    def create(cls, arbiter_pid: int | None = None) -> DynoState:
        """Make (or reuse) the directory of the arbiter ``arbiter_pid`` (default: this process)."""
        pid = os.getpid() if arbiter_pid is None else arbiter_pid
        directory = _shared_memory_dir() / f"boundkit-{pid}"
        directory.mkdir(mode=0o700, exist_ok=True)
        return cls(directory)

    @classmethod
    def from_environ(cls) -> DynoState | None:
        """The state named by ``BOUNDKIT_DYNO_DIR``, if set and present."""
        directory = os.environ.get(ENV_STATE_DIR, "")
        return cls(directory) if directory and Path(directory).is_dir() else None

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    @property
    def health_path(self) -> Path:
        return self.directory / "health.json"

    def worker_path(self, pid: int) -> Path:
        return self.directory / f"worker-{pid}.json"

    def retiring_path(self, pid: int) -> Path:
        return self.directory / f"retiring-{pid}"

    def write(self, path: Path, data: Any) -> None:
        """Write ``data`` as JSON to ``path`` atomically."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, default=str, separators=(",", ":")))
        os.replace(tmp, path)

    def read(self, path: Path) -> Any:
        """Read JSON from ``path``; None if it is missing or unreadable."""
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def read_plan(self) -> SharePlan | None:
        """The plan the supervisor last published, or None."""
        data = self.read(self.plan_path)
        return SharePlan.from_dict(data) if isinstance(data, dict) else None

    def remove(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


class RequestLedger:
    """Request counts, statuses and a latency sketch per route, mergeable across processes.

    Bounded: ``max_routes`` routes, then ``"other"``; each sketch at most
    2048 bins. :meth:`as_dict` carries it between processes and
    :func:`merge_ledgers` adds ledgers together, so stats survive recycling.
    """

    def __init__(self, max_routes: int = _MAX_ROUTES) -> None:
        self.max_routes = max_routes
        self.routes: dict[str, dict[str, Any]] = {}

    def observe(self, route: str, seconds: float, status: int) -> None:
        """Record one request."""
        entry = self.routes.get(route)
        if entry is None:
            if len(self.routes) >= self.max_routes:
                route = _OTHER
            entry = self.routes.setdefault(
                route, {"requests": 0, "statuses": {}, "sketch": QuantileSketch()}
            )
        entry["requests"] += 1
        code = str(status)
        entry["statuses"][code] = entry["statuses"].get(code, 0) + 1
        entry["sketch"].add(max(seconds, 0.0))

    @property
    def requests(self) -> int:
        return sum(entry["requests"] for entry in self.routes.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form :meth:`from_dict` and :func:`merge_ledgers` read."""
        return {
            route: {
                "requests": entry["requests"],
                "statuses": dict(entry["statuses"]),
                "sketch": entry["sketch"].as_dict(),
            }
            for route, entry in self.routes.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestLedger:
        ledger = cls()
        ledger.merge(data)
        return ledger

    def merge(self, data: dict[str, Any]) -> None:
        """Add a ledger's :meth:`as_dict` form to this one."""
        for route, theirs in data.items():
            name = route if route in self.routes or len(self.routes) < self.max_routes else _OTHER
            entry = self.routes.setdefault(
                name, {"requests": 0, "statuses": {}, "sketch": QuantileSketch()}
            )
            entry["requests"] += theirs["requests"]
            for code, n in theirs["statuses"].items():
                entry["statuses"][code] = entry["statuses"].get(code, 0) + n
            entry["sketch"].merge(QuantileSketch.from_dict(theirs["sketch"]))

    def summary(self) -> dict[str, Any]:
        """Totals and, per route, requests, statuses and latency quantiles in seconds."""
        routes = {}
        statuses: dict[str, int] = {}
        for route, entry in sorted(self.routes.items()):
            sketch: QuantileSketch = entry["sketch"]
            routes[route] = {
                "requests": entry["requests"],
                "statuses": dict(sorted(entry["statuses"].items())),
                "seconds": {name: sketch.quantile(q) for name, q in _QUANTILES},
            }
            for code, n in entry["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        return {
            "requests": self.requests,
            "statuses": dict(sorted(statuses.items())),
            "routes": routes,
        }


def merge_ledgers(ledgers: Iterable[dict[str, Any]]) -> RequestLedger:
    """Merge :meth:`RequestLedger.as_dict` forms (of live and retired workers) into one."""
    total = RequestLedger()
    for ledger in ledgers:
        total.merge(ledger)
    return total


class WorkerAgent:
    """Inside one worker: follows the plan, measures each request and publishes its stats.

    Per request (gunicorn's ``pre_request``/``post_request``): two reads of
    ``/proc/self/statm`` and two of ``getrusage``; at most once a second a
    look at the plan's mtime and a write of this worker's file.
    ``health_path`` requests are not counted.
    """

    def __init__(
        self, state: DynoState, *, health_path: str | None = "/health", publish_every: float = 1.0
    ) -> None:
        self.state = state
        self.pid = os.getpid()
        self.health_path = health_path
        self.publish_every = publish_every
        self.started = time.time()
        self.ledger = RequestLedger()
        self.plan: SharePlan | None = None
        self.largest_request = 0
        self.footprint = 0
        self.requests = 0
        self._plan_mtime = 0.0
        self._next_publish = 0.0
        self._before = (0, 0, 0.0)
        self.refresh_plan()

    def refresh_plan(self) -> bool:
        """Adopt a newer plan if the supervisor published one; return True if it did."""
        try:
            mtime = self.state.plan_path.stat().st_mtime
        except OSError:
            return False
        if mtime == self._plan_mtime:
            return False
        plan = self.state.read_plan()
        if plan is None:
            return False
        self._plan_mtime = mtime
        self.plan = plan
        from .guard import _GUARDS

        for guard in list(_GUARDS):
            if guard.follows_plan:
                guard.take_share(plan)
        return True

    def pre_request(self) -> None:
        """Note memory and time before a request."""
        self._before = (process_memory().rss, _peak_rss(), time.perf_counter())

    def post_request(self, path: str, status: int) -> None:
        """Measure what the request grew, record it, and publish when it is time."""
        rss_before, peak_before, started = self._before
        if not started:
            return
        seconds = time.perf_counter() - started
        rss, peak = process_memory().rss, _peak_rss()
        top = peak if peak > peak_before else rss
        self.largest_request = max(self.largest_request, top - rss_before)
        self.requests += 1
        if self.requests in _FOOTPRINT_REQUESTS:
            self.footprint = max(self.footprint, rss_before - _cache_bytes())
        if path != self.health_path:
            self.ledger.observe(path, seconds, status)
        self._before = (0, 0, 0.0)
        now = time.monotonic()
        if now >= self._next_publish:
            self._next_publish = now + self.publish_every
            self.refresh_plan()
            self.publish()

    def publish(self) -> None:
        """Write this worker's figures and request ledger to its file."""
        self.state.write(
            self.state.worker_path(self.pid),
            {
                "pid": self.pid,
                "started": self.started,
                "requests": self.requests,
                "largest_request": self.largest_request,
                "footprint": self.footprint,
                "ledger": self.ledger.as_dict(),
            },
        )

    def mark_retiring(self) -> None:
        """Tell the supervisor this worker is already retiring (its recycler decided)."""
        self.state.retiring_path(self.pid).touch()


def _cache_bytes() -> int:
    from .guard import _GUARDS

    total = 0
    for guard in list(_GUARDS):
        for cache in guard.caches().values():
            stats = getattr(cache, "stats", None)
            used = getattr(stats(), "bytes", None) if stats is not None else None
            total += used or 0
    return total


_worker: WorkerAgent | None = None


def current_worker() -> WorkerAgent | None:
    """This process's :class:`WorkerAgent` when it is a governed gunicorn worker, else None."""
    return _worker if _worker is not None and _worker.pid == os.getpid() else None


def set_current_worker(agent: WorkerAgent | None) -> None:
    """Make ``agent`` this process's worker agent (done by the gunicorn hooks)."""
    global _worker
    _worker = agent


def current_plan() -> SharePlan | None:
    """The share plan this worker follows, or None outside a governed gunicorn worker."""
    agent = current_worker()
    return agent.plan if agent is not None else None


def health_snapshot() -> dict[str, Any] | None:
    """The supervisor's latest health snapshot for this dyno, or None outside one."""
    agent = current_worker()
    state = agent.state if agent is not None else DynoState.from_environ()
    if state is None:
        return None
    data = state.read(state.health_path)
    return data if isinstance(data, dict) else None


def with_dyno(payload: dict[str, Any], level: str) -> dict[str, Any]:
    """Add the dyno's snapshot to one worker's health ``payload`` (unchanged outside a dyno).

    ``status`` becomes the worse of the dyno's and this worker's ``level``;
    ``requests`` covers every worker, retired ones included (this worker's
    own stay under ``worker_requests``); ``dyno``, ``plan``, ``workers``,
    ``recycles``, ``supervisor`` and ``snapshot_age_seconds`` are added.
    """
    snapshot = health_snapshot()
    if snapshot is None:
        return payload
    return {
        **payload,
        **snapshot,
        "status": _worse(snapshot["status"], level),
        "worker_requests": payload.get("requests"),
        "snapshot_age_seconds": round(time.time() - snapshot["timestamp"], 3),
    }


def dyno_status(level: str) -> str:
    """The worse of the dyno's snapshot status and this worker's ``level``."""
    snapshot = health_snapshot()
    return level if snapshot is None else _worse(snapshot["status"], level)


def _worse(first: str, second: str) -> str:
    ranks = {"ok": 0, "warning": 1, "critical": 2}
    return first if ranks.get(first, 0) >= ranks.get(second, 0) else second


def find_states(*, fresh_within: float = 10.0) -> list[DynoState]:
    """Shared directories of governed dynos on this machine whose plan is current.

    Current: the arbiter's process exists and its health snapshot was written
    within ``fresh_within`` seconds (a directory left by a killed arbiter, or
    whose pid was reused, is not).
    """
    found = []
    now = time.time()
    for directory in sorted(_shared_memory_dir().glob("boundkit-*")):
        pid = directory.name.removeprefix("boundkit-")
        try:
            written = (directory / "health.json").stat().st_mtime
        except OSError:
            continue
        if pid.isdigit() and Path(f"/proc/{pid}").exists() and now - written < fresh_within:
            found.append(DynoState(directory))
    return found
