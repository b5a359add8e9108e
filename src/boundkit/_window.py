"""RollingWindow: the last N float samples in a preallocated ring buffer.

Public through :mod:`boundkit.metrics`; also home of the argument checks the
metrics classes share.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["RollingWindow"]


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int from ``minimum`` to ``sys.maxsize``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    if value > sys.maxsize:
        raise ConfigError(f"{name} must be at most {sys.maxsize}, got {value!r}")
    return value


def check_finite(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number (not a bool), else raise."""
    try:
        if not isinstance(value, bool) and math.isfinite(value):  # type: ignore[arg-type]
            return float(value)  # type: ignore[arg-type]
    except (TypeError, OverflowError):
        pass
    raise ConfigError(f"{name} must be a finite number, got {value!r}")


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float seconds: finite, more than zero (or zero when allowed) and
    no longer than a thread can wait (``threading.TIMEOUT_MAX``); else raise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero) or value > threading.TIMEOUT_MAX:  # type: ignore[operator]
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(f"{name} must be a number of seconds {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_max_age(max_age: object) -> float | None:
    """Return ``max_age`` as float seconds if it is ``None`` or positive, else raise."""
    if max_age is None:
        return None
    if check_finite("max_age", max_age) <= 0:
        raise ConfigError(f"max_age must be positive seconds, got {max_age!r}")
    return float(max_age)  # type: ignore[arg-type]


def check_fraction(name: str, value: object, *, top: float) -> float:
    """Return ``value`` as a float if it lies in ``[0, top]``, else raise ConfigError."""
    number = check_finite(name, value)
    if not 0.0 <= number <= top:
        raise ConfigError(f"{name} must be between 0 and {top:g}, got {value!r}")
    return number


class RollingWindow:
    """The last ``maxlen`` samples, optionally only those at most ``max_age`` seconds old.

    Samples live in an ``array('d')`` allocated once, 8 bytes a slot (16 with
    ``max_age``, which also stores each sample's time), so memory never grows
    however many samples are added. NaN and infinities are refused with
    :class:`~boundkit.ConfigError`: one of them would poison every statistic.
    Every statistic is ``None`` while the window is empty. Thread-safe.

    >>> window = RollingWindow(3)
    >>> for seconds in (0.5, 0.1, 0.2, 0.4):
    ...     window.add(seconds)
    >>> len(window), window.count_total, window.max()
    (3, 4, 0.4)
    >>> window.percentile(50)
    0.2
    """

    def __init__(
        self,
        maxlen: int = 1000,
        *,
        max_age: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._maxlen = check_count("maxlen", maxlen)
        self._max_age = check_max_age(max_age)
        self._timer = timer
        self._values = array("d", [0.0]) * maxlen
        self._times = array("d", [0.0]) * maxlen if max_age is not None else None
        self._next = 0  # slot the next sample goes to
        self._len = 0  # samples held, ending just before ``_next``
        self._count_total = 0
        self._lock = threading.Lock()

    @property
    def maxlen(self) -> int:
        """The number of slots."""
        return self._maxlen

    @property
    def max_age(self) -> float | None:
        """Seconds after which a sample is forgotten, or ``None``."""
        return self._max_age

    @property
    def count_total(self) -> int:
        """How many samples were ever added, including those since forgotten."""
        return self._count_total

    def add(self, x: float) -> None:
        """Add one sample, forgetting the oldest when the window is full."""
        if not isinstance(x, float) or x - x != 0.0:  # fast path for finite floats
            x = check_finite("sample", x)
        lock = self._lock
        lock.acquire()  # not ``with``: twice as fast on the hot path
        try:
            i = self._next
            if self._times is not None:
                now = self._timer()
                self._expire(now)
                self._times[i] = now
            self._values[i] = x
            self._next = i + 1 if i + 1 < self._maxlen else 0
            if self._len < self._maxlen:
                self._len += 1
            self._count_total += 1
        finally:
            lock.release()

    def _expire(self, now: float) -> None:
        # Samples are added in time order, so the oldest sit at the start of the run.
        times, max_age, maxlen = self._times, self._max_age, self._maxlen
        if times is None or max_age is None:
            return
        oldest_allowed = now - max_age
        while self._len and times[(self._next - self._len) % maxlen] < oldest_allowed:
            self._len -= 1

    def _snapshot(self) -> array[float]:
        """Return a copy of the samples now in the window, oldest first."""
        with self._lock:
            if self._times is not None:
                self._expire(self._timer())
            start = self._next - self._len
            if start >= 0:
                return self._values[start : self._next]
            return self._values[start:] + self._values[: self._next]

    def values(self) -> list[float]:
        """Return the samples now in the window, oldest first."""
        return self._snapshot().tolist()

    def __len__(self) -> int:
        """The number of samples now in the window."""
        with self._lock:
            if self._times is not None:
                self._expire(self._timer())
            return self._len

    def clear(self) -> None:
        """Forget every sample; :attr:`count_total` keeps counting."""
        with self._lock:
            self._next = 0
            self._len = 0

    def mean(self) -> float | None:
        """The mean of the window (``math.fsum``, so exact to the last bit)."""
        return _mean(self._snapshot())

    def min(self) -> float | None:
        """The smallest sample in the window."""
        samples = self._snapshot()
        return min(samples) if samples else None

    def max(self) -> float | None:
        """The largest sample in the window."""
        samples = self._snapshot()
        return max(samples) if samples else None

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (``0 <= q <= 100``) of the window, exact.

        With the samples sorted as ``s[0] .. s[n-1]``, ``r = q / 100 * (n - 1)``
        and the result is ``s[floor(r)]`` moved linearly towards ``s[ceil(r)]``
        by the fraction of ``r`` (linear interpolation between closest ranks,
        numpy's default "linear" method).
        """
        return self.percentiles([q])[0]

    def percentiles(self, qs: Iterable[float]) -> list[float | None]:
        """The percentiles ``qs`` of one view of the window, sorting once."""
        wanted = [check_fraction("percentile", q, top=100.0) for q in qs]
        samples = sorted(self._snapshot())
        return [_interpolate(samples, q / 100.0) for q in wanted]

    def summary(self) -> dict[str, Any]:
        """Count, mean, min, max, p50, p90 and p99 of one view of the window, JSON-ready."""
        samples = sorted(self._snapshot())
        n = len(samples)
        return {
            "count": n,
            "mean": _mean(samples),
            "min": samples[0] if n else None,
            "max": samples[-1] if n else None,
            "p50": _interpolate(samples, 0.50),
            "p90": _interpolate(samples, 0.90),
            "p99": _interpolate(samples, 0.99),
        }

    def __repr__(self) -> str:
        age = "" if self._max_age is None else f", max_age={self._max_age!r}"
        return f"RollingWindow(maxlen={self._maxlen}{age}, len={self._len})"


def _mean(samples: Sequence[float]) -> float | None:
    """The mean of ``samples``, without overflow near the largest floats."""
    if not samples:
        return None
    n = len(samples)
    try:
        return math.fsum(samples) / n
    except OverflowError:  # samples near the largest float: halve, then clamp the rounding
        mean = math.fsum(x / n * 0.5 for x in samples) * 2.0
        return min(max(mean, min(samples)), max(samples))


def _interpolate(ordered: list[float], fraction: float) -> float | None:
    """The linear-interpolation quantile of sorted ``ordered`` at ``fraction`` in [0, 1]."""
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    below = ordered[low]
    step = rank - low
    if step == 0.0:
        return below
    above = ordered[low + 1]
    gap = above - below
    if math.isfinite(gap):
        return below + gap * step
    return below * (1.0 - step) + above * step  # the gap overflowed: huge samples
