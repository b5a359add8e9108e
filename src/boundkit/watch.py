"""Memory over time: sample a process, a command or a health URL, then judge the trend.

:func:`watch` samples a target every ``interval`` seconds; :func:`summarise`
turns the samples into a :class:`WatchReport` (min, max, mean, the growth rate
after warm-up with its confidence interval, a verdict and the time to the
limit at that rate). ``boundkit watch`` is the command-line front end.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from ._trend import judge
from ._window import check_seconds
from .errors import ConfigError, HealthFormatError, WatchTargetError

__all__ = [
    "EXIT_CODES",
    "SCHEMA",
    "CommandTarget",
    "HealthTarget",
    "ProcessTarget",
    "Sample",
    "WatchReport",
    "summarise",
    "watch",
]

#: The ``schema`` field of ``boundkit watch --json``; bumped on an incompatible change.
SCHEMA = "boundkit.watch/1"
#: Exit status of ``boundkit watch`` per verdict (errors exit 1, usage errors 2).
EXIT_CODES = {"stable": 0, "plateau": 3, "growing": 4, "unknown": 5}
#: Growth slower than this (bytes per second, 0.1 MiB/min) is never called a leak.
DEFAULT_MIN_RATE = 0.1 * 1024 * 1024 / 60

_MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One reading: ``t`` seconds since the first, resident bytes and processes counted."""

    t: float
    rss: int
    processes: int


class Target(Protocol):
    """Something :func:`watch` can sample."""

    description: str

    def sample(self) -> tuple[int, int]:
        """Return (resident bytes, processes counted); raise WatchTargetError when gone."""

    def limit(self) -> int | None:
        """Return the target's own memory limit in bytes, when it reports one."""

    def close(self) -> None:
        """Release what the target holds."""


class ProcessTarget:
    """A running process, with its children (recursively) when ``children`` is true."""

    def __init__(self, pid: int, *, children: bool = True) -> None:
        try:
            self._process = psutil.Process(pid)
        except (psutil.NoSuchProcess, ValueError):
            raise WatchTargetError(f"no process with pid {pid}") from None
        self.pid = pid
        self.children = children
        self.description = f"pid {pid}"

    def sample(self) -> tuple[int, int]:
        try:
            if self._process.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(self.pid)
            total = self._process.memory_info().rss
            found = 1
            kids = self._process.children(recursive=True) if self.children else []
        except psutil.NoSuchProcess:
            raise WatchTargetError(f"process {self.pid} has exited") from None
        except psutil.AccessDenied:
            raise WatchTargetError(f"not allowed to read the memory of pid {self.pid}") from None
        for kid in kids:
            try:
                total += kid.memory_info().rss
                found += 1
            except psutil.Error:  # a child that exited between listing and reading
                continue
        return total, found

    def limit(self) -> int | None:
        return None

    def close(self) -> None:
        """Nothing to release: the process is not ours."""


class CommandTarget(ProcessTarget):
    """A command this target starts, followed with its children; ended by :meth:`close`.

    ``stdout`` (a file descriptor) takes the command's output, e.g. ``2`` to
    keep this process's stdout free for a JSON report.
    """

    def __init__(self, argv: Sequence[str], *, stdout: int | None = None) -> None:
        if not argv:
            raise ConfigError("watch needs a command after --")
        try:
            self._child = subprocess.Popen(list(argv), stdout=stdout)
        except OSError as exc:
            raise WatchTargetError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        super().__init__(self._child.pid)
        described = shlex.join(argv).replace("\n", " ")
        self.description = described if len(described) <= 80 else described[:77] + "..."

    @property
    def returncode(self) -> int | None:
        """The command's exit status once it has ended."""
        return self._child.poll()

    def close(self) -> None:
        if self._child.poll() is None:
            self._child.terminate()
            try:
                self._child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()


class HealthTarget:
    """A boundkit health route: the dyno's total where the payload has it, else the worker's.

    ``token`` is sent as ``Authorization: Bearer <token>``: a route that shows
    details only to authorised callers (``BOUNDKIT_HEALTH_TOKEN``) needs it
    from anywhere but loopback.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must be an http:// or https:// URL, got {url!r}")
        self.url = url
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.description = url
        self._limit: int | None = None

    def _fetch(self) -> dict[str, Any]:
        import urllib.error  # urllib.request pulls in ssl and http: only for --url
        import urllib.request

        try:
            request = urllib.request.Request(self.url, headers=self._headers)
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # the middleware answers critical health with 503 and a body
                body = exc.read()
            else:
                raise WatchTargetError(f"{self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WatchTargetError(f"cannot reach {self.url}: {reason}") from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise HealthFormatError(
                f"{self.url} did not answer JSON (body starts {body[:40]!r})"
            ) from None
        if not isinstance(payload, dict):
            raise HealthFormatError(f"{self.url} answered JSON that is not an object")
        return payload

    def sample(self) -> tuple[int, int]:
        payload = self._fetch()
        memory = payload.get("memory")
        view = memory.get("dyno") if isinstance(memory, dict) else None
        try:
            if isinstance(view, dict) and "used_mb" in view:
                used, limit = float(view["used_mb"]), view.get("limit_mb")
                processes = len(view.get("processes") or ()) or 1
            else:
                assert isinstance(memory, dict)
                used, limit, processes = float(memory["rss_mb"]), memory.get("limit_mb"), 1
        except (AssertionError, KeyError, TypeError, ValueError):
            if set(payload) == {"status"}:
                raise HealthFormatError(
                    f"{self.url} answered only its status: its details need a token "
                    "(set BOUNDKIT_HEALTH_TOKEN) or a call from the same host"
                ) from None
            raise HealthFormatError(
                f"{self.url} answered JSON without memory.rss_mb: not a boundkit health route"
            ) from None
        if isinstance(limit, (int, float)) and limit > 0:
            self._limit = int(limit * _MB)
        return int(used * _MB), processes

    def limit(self) -> int | None:
        return self._limit

    def close(self) -> None:
        """Nothing to release: each request closes its connection."""


def watch(
    target: Target,
    *,
    interval: float,
    duration: float | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    timer: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Sample], str]:
    """Sample ``target`` every ``interval`` seconds for ``duration`` (None: until it ends).

    Returns the samples and why sampling stopped: ``"duration"``, ``"target ended"``
    or ``"interrupted"`` (Ctrl-C). A target that cannot be read at the first
    sample raises :class:`~boundkit.errors.WatchTargetError`.
    """
    check_seconds("interval", interval)
    if duration is not None:
        check_seconds("duration", duration)
    samples: list[Sample] = []
    start = timer()
    reason = "duration"
    try:
        while True:
            now = timer()
            try:
                rss, processes = target.sample()
            except WatchTargetError:
                if not samples:
                    raise
                reason = "target ended"
                break
            sample = Sample(round(now - start, 3), rss, processes)
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
            next_at = start + len(samples) * interval
            if duration is not None and next_at - start > duration:
                break
            sleep(max(next_at - timer(), 0.0))
    except KeyboardInterrupt:
        reason = "interrupted"
    return samples, reason


@dataclass(frozen=True)
class WatchReport:
    """What ``boundkit watch`` found; :meth:`as_dict` is the documented JSON form."""

    target: str
    interval: float
    ended: str
    samples: list[Sample] = field(repr=False)
    limit: int
    limit_source: str
    min_rate: float
    verdict: str
    warmup_seconds: float
    rate: float | None
    rate_low: float | None
    rate_high: float | None
    tail_rate: float | None
    time_to_limit: float | None
    trend_intercept: float | None

    @property
    def exit_code(self) -> int:
        """The command's exit status for this verdict (see :data:`EXIT_CODES`)."""
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (MiB and MiB per minute, seconds)."""
        values = [s.rss for s in self.samples]

        def per_minute(rate: float | None) -> float | None:
            return None if rate is None else round(rate * 60 / _MB, 4)

        return {
            "schema": SCHEMA,
            "target": self.target,
            "interval_s": self.interval,
            "ended": self.ended,
            "count": len(values),
            "duration_s": self.samples[-1].t if self.samples else 0.0,
            "min_mb": round(min(values) / _MB, 2) if values else None,
            "max_mb": round(max(values) / _MB, 2) if values else None,
            "mean_mb": round(sum(values) / len(values) / _MB, 2) if values else None,
            "last_mb": round(values[-1] / _MB, 2) if values else None,
            "limit_mb": round(self.limit / _MB, 1),
            "limit_source": self.limit_source,
            "warmup_s": round(self.warmup_seconds, 3),
            "min_rate_mb_per_min": per_minute(self.min_rate),
            "rate_mb_per_min": per_minute(self.rate),
            "rate_ci95_mb_per_min": (
                None
                if self.rate_low is None
                else [per_minute(self.rate_low), per_minute(self.rate_high)]
            ),
            "tail_rate_mb_per_min": per_minute(self.tail_rate),
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "time_to_limit_s": None if self.time_to_limit is None else round(self.time_to_limit),
            "samples": [[s.t, round(s.rss / _MB, 3), s.processes] for s in self.samples],
        }


def summarise(
    target: str,
    samples: list[Sample],
    *,
    interval: float,
    ended: str,
    limit: int,
    limit_source: str,
    min_rate: float = DEFAULT_MIN_RATE,
    warmup: float | None = None,
) -> WatchReport:
    """Judge ``samples`` and compute the time to ``limit`` bytes at the growth rate found.

    ``warmup`` seconds (default: the first tenth of the run) are left out of
    the fit. The time to the limit is given only for ``growing``.
    """
    ts = [s.t for s in samples]
    ys = [float(s.rss) for s in samples]
    found = judge(ts, ys, min_rate=min_rate, warmup=warmup)
    trend, tail = found.trend, found.tail
    to_limit = None
    if found.verdict == "growing" and trend is not None and trend.slope > 0:
        to_limit = max(limit - trend.at(ts[-1]), 0.0) / trend.slope
    return WatchReport(
        target=target,
        interval=interval,
        ended=ended,
        samples=samples,
        limit=limit,
        limit_source=limit_source,
        min_rate=min_rate,
        verdict=found.verdict,
        warmup_seconds=ts[found.warmup_points] - ts[0] if found.warmup_points < len(ts) else 0.0,
        rate=trend.slope if trend else None,
        rate_low=trend.low if trend else None,
        rate_high=trend.high if trend else None,
        tail_rate=tail.slope if tail else None,
        time_to_limit=to_limit,
        trend_intercept=trend.intercept if trend else None,
    )
