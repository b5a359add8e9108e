"""The share plan: one dyno's limit divided between its workers, computed, not hand-set.

From the limit, the worker count, the arbiter's memory, a warm worker's
footprint and the largest request seen, :func:`plan_shares` derives each
worker's share and from it every threshold boundkit acts on: the guard's
warning and critical, the recycler's threshold, the budget of the registered
caches and of PDF rendering, and where the arbiter's supervisor steps in.
The worst case (every worker at its recycler threshold, then growing by the
largest request seen) fits under the limit less a headroom::

    arbiter + workers * (recycle + largest_request) <= limit - headroom

Order inside a worker, lowest first: footprint + caches + PDF budget <=
guard warning < guard critical < the recycler's lowest jittered threshold
<= recycle; so cleanup comes before retirement, never by chance.
I/O-free: the gunicorn integration feeds it measured figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._sizes import parse_bytes
from .errors import ConfigError

__all__ = ["SharePlan", "plan_shares"]

MIB = 1024 * 1024
#: The recycler's jitter under a plan: thresholds fall in [recycle * (1 - jitter), recycle].
RECYCLE_JITTER = 0.05
#: The guard's critical and warning thresholds, as fractions of the recycler's lowest threshold.
CRITICAL_OF_RECYCLE = 0.97
WARNING_OF_CRITICAL = 0.85
#: The smallest allowance for one request's growth, before any is measured.
MIN_REQUEST = 16 * MIB
#: PDF rendering's budget: this fraction of what a worker holds above its footprint, within bounds.
PDF_SHARE = 0.35
MIN_PDF_BUDGET = 8 * MIB
MAX_PDF_BUDGET = 64 * MIB
#: Headroom kept under the limit: this fraction of it, and at least MIN_HEADROOM.
HEADROOM = 0.08
MIN_HEADROOM = 24 * MIB
#: The supervisor retires the largest worker past limit - RETIRE_OF_HEADROOM * headroom,
#: and stops it past limit - STOP_OF_HEADROOM * headroom.
RETIRE_OF_HEADROOM = 0.6
STOP_OF_HEADROOM = 0.2


@dataclass(frozen=True)
class SharePlan:
    """A dyno's limit divided between its workers; every size in bytes.

    Inputs: ``limit``, ``workers``, ``arbiter`` (the arbiter's RSS),
    ``footprint`` (a warm worker's RSS without its caches) and
    ``largest_request`` (the most one request grew a worker, at least
    ``MIN_REQUEST``). Derived: ``headroom``, ``share`` per worker,
    ``recycle`` (the recycler's threshold, jittered downwards by
    ``RECYCLE_JITTER``), ``guard_warning`` and ``guard_critical``,
    ``cache_budget`` (all registered caches of one worker together),
    ``pdf_budget`` (the ``budget`` of :func:`~boundkit.open_pdf`),
    ``retire_at`` and ``stop_at`` (the dyno totals where the supervisor
    retires the largest worker, then stops it). ``fits`` is false when a
    warm worker plus one request does not fit in a share; ``max_workers``
    is then how many would.
    """

    limit: int
    workers: int
    arbiter: int
    footprint: int
    largest_request: int
    headroom: int
    share: int
    recycle: int
    guard_warning: int
    guard_critical: int
    cache_budget: int
    pdf_budget: int
    retire_at: int
    stop_at: int
    fits: bool
    max_workers: int

    @property
    def recycle_low(self) -> int:
        """The lowest threshold the recycler draws."""
        return int(self.recycle * (1 - RECYCLE_JITTER))

    @property
    def worst_case(self) -> int:
        """The dyno's total with every worker at ``recycle`` plus the largest request."""
        return self.arbiter + self.workers * (self.recycle + self.largest_request)

    def as_dict(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dict: bytes as given, plus ``table`` in MiB."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {**fields, "worst_case": self.worst_case, "table": self.table()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharePlan:
        """Rebuild a plan from :meth:`as_dict` (extra keys are ignored)."""
        try:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a SharePlan.as_dict() form: {exc!r}") from None

    def table(self) -> list[tuple[str, float, str]]:
        """Rows of (part, MiB, what it is) for ``boundkit snapshot`` and ``/health``."""

        def mib(n: int) -> float:
            return round(n / MIB, 1)

        return [
            ("limit", mib(self.limit), "the dyno's memory limit"),
            ("arbiter", mib(self.arbiter), "the gunicorn arbiter's RSS"),
            ("headroom", mib(self.headroom), "kept free under the limit"),
            ("share", mib(self.share), f"per worker, {self.workers} workers"),
            ("footprint", mib(self.footprint), "a warm worker without its caches"),
            ("cache budget", mib(self.cache_budget), "registered caches of one worker"),
            ("pdf budget", mib(self.pdf_budget), "growth allowed while rendering a PDF"),
            ("guard warning", mib(self.guard_warning), "worker RSS: warning hooks"),
            ("guard critical", mib(self.guard_critical), "worker RSS: cleanup and trim"),
            ("recycle", mib(self.recycle), "worker RSS: retired after its request"),
            ("largest request", mib(self.largest_request), "most one request grew a worker"),
            ("worst case", mib(self.worst_case), "all workers at recycle + largest request"),
            ("retire at", mib(self.retire_at), "dyno total: supervisor retires the largest"),
            ("stop at", mib(self.stop_at), "dyno total: supervisor stops the largest"),
        ]


def plan_shares(
    limit: int | str,
    *,
    workers: int,
    footprint: int | str,
    arbiter: int | str = 0,
    largest_request: int | str = 0,
) -> SharePlan:
    """Divide ``limit`` between ``workers`` so the worst case fits; see :class:`SharePlan`.

    Sizes are bytes or strings such as ``"512M"`` (MiB).

    >>> plan = plan_shares("512M", workers=2, footprint="60M", arbiter="30M")
    >>> plan.fits, plan.worst_case <= plan.limit - plan.headroom
    (True, True)
    >>> plan.guard_warning < plan.guard_critical < plan.recycle_low < plan.recycle < plan.share
    True
    """
    limit_b = parse_bytes(limit, name="limit")
    if limit_b <= 0:
        raise ConfigError(f"limit must be more than zero bytes, got {limit!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an int >= 1, got {workers!r}")
    footprint_b = parse_bytes(footprint, name="footprint")
    arbiter_b = parse_bytes(arbiter, name="arbiter")
    request = max(parse_bytes(largest_request, name="largest_request"), MIN_REQUEST)
    headroom = max(int(limit_b * HEADROOM), MIN_HEADROOM)
    available = max(limit_b - headroom - arbiter_b, 0)
    share = available // workers
    needed = _share_needed(footprint_b, request)
    fits = share >= needed
    recycle = max(share - request, 0)
    if not fits:  # never recycle below a fresh worker (that would recycle on every request);
        # the worst case may then pass limit - headroom, and the supervisor guards the total
        recycle = max(recycle, min(footprint_b + MIN_REQUEST, share))
    critical = int(recycle * (1 - RECYCLE_JITTER) * CRITICAL_OF_RECYCLE)
    warning = int(critical * WARNING_OF_CRITICAL)
    spare = max(warning - footprint_b, 0)
    pdf = min(max(int(spare * PDF_SHARE), MIN_PDF_BUDGET), MAX_PDF_BUDGET, spare)
    return SharePlan(
        limit=limit_b,
        workers=workers,
        arbiter=arbiter_b,
        footprint=footprint_b,
        largest_request=request,
        headroom=headroom,
        share=share,
        recycle=recycle,
        guard_warning=warning,
        guard_critical=critical,
        cache_budget=spare - pdf,
        pdf_budget=pdf,
        retire_at=limit_b - int(headroom * RETIRE_OF_HEADROOM),
        stop_at=limit_b - int(headroom * STOP_OF_HEADROOM),
        fits=fits,
        max_workers=int(available // needed),
    )


def _share_needed(footprint: int, request: int) -> float:
    """The smallest share in which a warm worker's guard warning sits above its footprint."""
    floor = footprint + MIN_PDF_BUDGET
    return floor / (WARNING_OF_CRITICAL * CRITICAL_OF_RECYCLE * (1 - RECYCLE_JITTER)) + request
