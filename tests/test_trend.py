"""Tests of the robust trend fit and the verdict on synthetic series with known answers."""

from __future__ import annotations

import math
import random

import pytest

from boundkit._trend import MAX_FIT_POINTS, fit_trend, judge

MIB = 1024 * 1024
PER_MIN = MIB / 60
MIN_RATE = 0.1 * PER_MIN
TS = [5.0 * i for i in range(240)]  # 20 minutes at a 5 s interval
BASE = 150 * MIB


def noise(seed: int, sigma: float) -> list[float]:
    rnd = random.Random(seed)
    return [rnd.gauss(0, sigma) for _ in TS]


SERIES = {
    "flat": ([BASE + n for n in noise(1, 0.3 * MIB)], "stable"),
    "plateau": (
        [
            BASE + 60 * MIB * min(t / 400, 1.0) + n
            for t, n in zip(TS, noise(2, 0.3 * MIB), strict=True)
        ],
        "plateau",
    ),
    "exponential plateau": (
        [
            BASE + 60 * MIB * (1 - math.exp(-t / 100)) + n
            for t, n in zip(TS, noise(3, 0.3 * MIB), strict=True)
        ],
        "plateau",
    ),
    "linear growth": ([BASE + PER_MIN * t for t in TS], "growing"),
    "noisy growth": (
        [BASE + PER_MIN * t + n for t, n in zip(TS, noise(4, 3 * MIB), strict=True)],
        "growing",
    ),
    "sawtooth": ([BASE + 12 * MIB * ((t % 115) / 115) for t in TS], "stable"),
    "noisy sawtooth": (
        [
            BASE + 12 * MIB * ((t % 115) / 115) + n
            for t, n in zip(TS, noise(5, 0.5 * MIB), strict=True)
        ],
        "stable",
    ),
    "sawtooth over a leak": (
        [BASE + 12 * MIB * ((t % 115) / 115) + PER_MIN * t for t in TS],
        "growing",
    ),
    "step": (
        [
            BASE + (40 * MIB if t >= 600 else 0) + n
            for t, n in zip(TS, noise(6, 0.3 * MIB), strict=True)
        ],
        "plateau",
    ),
    "one spike": (
        [BASE + (400 * MIB if i == 150 else 0) + n for i, n in enumerate(noise(7, 0.3 * MIB))],
        "stable",
    ),
}


@pytest.mark.parametrize("name", list(SERIES))
def test_verdict_on_synthetic_series(name: str) -> None:
    """Each synthetic shape gets the verdict it was built to have."""
    ys, expected = SERIES[name]
    assert expected == judge(TS, ys, min_rate=MIN_RATE).verdict


def test_linear_growth_rate_and_interval() -> None:
    """A noisy 1 MiB/min leak is measured within 5%, and its interval holds the true rate."""
    ys, _ = SERIES["noisy growth"]
    trend = judge(TS, ys, min_rate=MIN_RATE).trend
    assert trend is not None
    assert trend.slope == pytest.approx(PER_MIN, rel=0.05)
    assert trend.low < PER_MIN < trend.high


def test_spike_does_not_move_the_slope() -> None:
    """One 400 MiB spike leaves the Theil-Sen slope at the noise's scale."""
    ys, _ = SERIES["one spike"]
    trend = fit_trend(TS, ys)
    assert abs(trend.slope) < 0.05 * PER_MIN


def test_sawtooth_interval_is_widened_for_serial_correlation() -> None:
    """The sawtooth's interval covers zero: the correlated residuals widen it."""
    ys, _ = SERIES["sawtooth"]
    trend = fit_trend(TS, ys)
    assert trend.low < 0 < trend.high


def test_too_few_samples_after_warmup_is_unknown() -> None:
    """Fewer than min_points samples after the warm-up give ``unknown`` and no fit."""
    verdict = judge([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], min_rate=0.0)
    assert ("unknown", None) == (verdict.verdict, verdict.trend)


def test_warmup_leaves_early_samples_out() -> None:
    """Growth confined to the warm-up does not count: the rest is flat."""
    ys = [BASE + (30 * MIB * t / 100 if t < 100 else 30 * MIB) for t in TS]
    verdict = judge(TS, ys, min_rate=MIN_RATE, warmup=120)
    assert "stable" == verdict.verdict
    assert 24 == verdict.warmup_points


def test_long_series_are_thinned_to_bin_medians() -> None:
    """A series longer than MAX_FIT_POINTS is fitted on that many bin medians."""
    ts = [float(i) for i in range(3 * MAX_FIT_POINTS)]
    trend = fit_trend(ts, [2.0 * t + 7 for t in ts])
    assert (MAX_FIT_POINTS, 2.0) == (trend.points, trend.slope)


def test_mismatched_or_short_input_is_refused() -> None:
    """Fewer than three points, or lists of different lengths, raise ValueError."""
    with pytest.raises(ValueError, match="at least 3"):
        fit_trend([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 3"):
        fit_trend([0.0, 1.0, 2.0], [0.0, 1.0])
