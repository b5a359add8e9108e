"""A robust growth fit and the leak verdict, on plain lists of numbers (no I/O).

The slope is Theil-Sen's (the median of pairwise slopes), so one spike or a
few outliers move it by at most a rank; its confidence interval is Sen's
rank-based one, its variance multiplied by 1 + 2 * (the sum of the residuals'
autocorrelations up to the first non-positive lag): a GC sawtooth leaves long
runs of residuals on one side of the line, and an interval that assumed
independent samples would call its saw teeth growth.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist, median
from typing import Any

__all__ = ["MAX_FIT_POINTS", "Trend", "Verdict", "fit_trend", "judge"]

#: Longer series are reduced to this many bin medians before the O(n²) fit.
MAX_FIT_POINTS = 600


@dataclass(frozen=True)
class Trend:
    """A line ``value = intercept + slope * t`` with the slope's confidence interval."""

    slope: float
    low: float
    high: float
    intercept: float
    points: int

    def at(self, t: float) -> float:
        """Return the fitted value at time ``t``."""
        return self.intercept + self.slope * t


def _thin(ts: list[float], ys: list[float], limit: int) -> tuple[list[float], list[float]]:
    if len(ts) <= limit:
        return ts, ys
    step = len(ts) / limit
    bins = [(int(i * step), int((i + 1) * step)) for i in range(limit)]
    return [median(ts[a:b]) for a, b in bins], [median(ys[a:b]) for a, b in bins]


def _correlation_factor(values: list[float]) -> float:
    """How much serial correlation inflates a variance: 1 + 2 * the sum of autocorrelations.

    The sum runs over lags up to the first non-positive one (Geyer's initial
    positive sequence): 1 for independent values, large for a slow sawtooth.
    """
    mean = sum(values) / len(values)
    dev = [v - mean for v in values]
    denominator = sum(d * d for d in dev)
    if denominator == 0:
        return 1.0
    total = 0.0
    for lag in range(1, len(dev) // 2):
        rho = sum(a * b for a, b in zip(dev, dev[lag:], strict=False)) / denominator
        if rho <= 0:
            break
        total += rho
    return 1 + 2 * total


def fit_trend(ts: list[float], ys: list[float], *, confidence: float = 0.95) -> Trend:
    """Fit a Theil-Sen line to ``(ts, ys)`` with a ``confidence`` interval on the slope.

    >>> trend = fit_trend([0, 1, 2, 3, 4, 5], [10, 12, 14, 100, 18, 20])
    >>> trend.slope, trend.intercept
    (2.0, 10.0)
    """
    if len(ts) != len(ys) or len(ts) < 3:
        raise ValueError(f"need at least 3 paired points, got {len(ts)} and {len(ys)}")
    ts, ys = _thin(list(ts), list(ys), MAX_FIT_POINTS)
    n = len(ts)
    slopes = sorted(
        (ys[j] - ys[i]) / (ts[j] - ts[i])
        for i in range(n)
        for j in range(i + 1, n)
        if ts[j] != ts[i]
    )
    pairs = len(slopes)
    slope = median(slopes)
    intercept = median(y - slope * t for t, y in zip(ts, ys, strict=True))
    residuals = [y - intercept - slope * t for t, y in zip(ts, ys, strict=True)]
    # Sen's interval from Kendall's S variance, widened for serially correlated residuals
    variance = n * (n - 1) * (2 * n + 5) / 18 * _correlation_factor(residuals)
    spread = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(variance)
    lower = max(math.floor((pairs - spread) / 2), 0)
    upper = min(math.ceil((pairs + spread) / 2), pairs - 1)
    return Trend(slope, slopes[lower], slopes[upper], intercept, n)


@dataclass(frozen=True)
class Verdict:
    """The verdict on a series, with the figures it rests on (rates per second).

    ``verdict`` is ``"stable"``, ``"plateau"``, ``"growing"``, or ``"unknown"``
    when fewer than ``min_points`` samples follow the warm-up. ``trend`` is the
    fit after the warm-up, ``tail`` the fit on its second half.
    """

    verdict: str
    trend: Trend | None
    tail: Trend | None
    warmup_points: int

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


def _spread(values: list[float]) -> float:
    centre = median(values)
    return 1.4826 * median(abs(v - centre) for v in values)


def _stepped_up(ts: list[float], ys: list[float], min_rate: float) -> bool:
    """Whether the last quarter sits clearly above the first (a rise the slope's CI misses)."""
    quarter = max(len(ys) // 4, 2)
    first, last = ys[:quarter], ys[-quarter:]
    shift = median(last) - median(first)
    noise = min(_spread(first), _spread(last))
    return shift > 4 * noise and shift > min_rate * (ts[-1] - ts[0]) / 2


def judge(
    ts: list[float],
    ys: list[float],
    *,
    min_rate: float,
    warmup: float | None = None,
    min_points: int = 8,
    confidence: float = 0.95,
) -> Verdict:
    """Judge whether ``ys`` (sampled at ``ts`` seconds) grows.

    Samples before ``warmup`` seconds from the first (default: the first tenth
    of the run) are left out. ``growing``: the slope's lower bound exceeds
    ``min_rate`` (units per second) and the second half still climbs (its own
    bound exceeds ``min_rate``, or its slope is at least half the whole one);
    ``plateau``: the whole slope is significant but the second half has
    levelled off, or the last quarter sits well above the first (a step:
    their medians differ by more than four times the quieter one's spread);
    ``stable`` otherwise.

    >>> judge(list(range(20)), [5.0] * 20, min_rate=0.01).verdict
    'stable'
    >>> judge(list(range(20)), [float(t) for t in range(20)], min_rate=0.01).verdict
    'growing'
    """
    if warmup is None:
        warmup = (ts[-1] - ts[0]) / 10 if ts else 0.0
    start = next((i for i, t in enumerate(ts) if t - ts[0] >= warmup), len(ts))
    t_kept, y_kept = ts[start:], ys[start:]
    if len(t_kept) < min_points:
        return Verdict("unknown", None, None, start)
    trend = fit_trend(t_kept, y_kept, confidence=confidence)
    half = len(t_kept) // 2
    tail = fit_trend(t_kept[half:], y_kept[half:], confidence=confidence)
    if trend.low <= min_rate:
        verdict = "plateau" if _stepped_up(t_kept, y_kept, min_rate) else "stable"
    elif tail.low > min_rate or tail.slope >= trend.slope / 2:
        verdict = "growing"
    else:
        verdict = "plateau"
    return Verdict(verdict, trend, tail, start)
