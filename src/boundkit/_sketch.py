"""QuantileSketch: all-time quantiles within a relative error, in fixed memory (DDSketch).

Public through :mod:`boundkit.metrics`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import sys
import threading
from array import array
from typing import Any

from ._window import check_count, check_finite, check_fraction
from .errors import ConfigError

__all__ = ["QuantileSketch"]


class _Bins:
    """Counts per bin key in ``max_bins`` slots allocated once.

    Slot ``i`` holds key ``offset + i``. When the keys seen span more than
    ``max_bins``, the lowest keys are folded into the lowest slot, so the
    highest quantiles keep their accuracy. The slots are allocated on the
    first add, so a sign that never occurs costs nothing.
    """

    __slots__ = ("count", "counts", "max_bins", "max_key", "min_key", "offset")

    def __init__(self, max_bins: int) -> None:
        self.max_bins = max_bins
        self.counts = array("q")
        self.offset = 0
        self.min_key = 0  # lowest and highest non-empty keys, valid when count > 0
        self.max_key = 0
        self.count = 0

    def add(self, key: int, n: int = 1) -> None:
        if self.min_key <= key <= self.max_key and self.count:  # the common case
            self.counts[key - self.offset] += n
            self.count += n
            return
        size = self.max_bins
        if not self.count:
            if not self.counts:
                self.counts = array("q", [0]) * size
            self.offset = key - size // 2
            self.min_key = self.max_key = key
        elif key > self.max_key:
            self.max_key = key
            if key >= self.offset + size:
                self._move(key - size + 1)
        elif key < self.min_key:
            self.min_key = key
            if key < self.offset:
                self._move(self.max_key - size + 1)
        slot = key - self.offset
        if slot < 0:  # beyond the range that fits: collapsed into the lowest slot
            slot = 0
            self.min_key = self.offset
        self.counts[slot] += n
        self.count += n

    def _move(self, offset: int) -> None:
        """Make slot 0 hold key ``offset``, folding the counts of keys below it into it."""
        counts, size = self.counts, len(self.counts)
        shift = offset - self.offset
        if shift > 0:
            folded = sum(counts[:shift])
            if shift < size:
                counts[: size - shift] = counts[shift:]
                counts[size - shift :] = array("q", [0]) * shift
            else:
                counts[:] = array("q", [0]) * size
            counts[0] += folded
            self.min_key = max(self.min_key, offset)
        elif shift < 0:
            counts[-shift:] = counts[: size + shift]
            counts[:-shift] = array("q", [0]) * -shift
        self.offset = offset

    def used(self) -> array[int]:
        """The counts of keys ``min_key`` to ``max_key``."""
        if not self.count:
            return array("q")
        return self.counts[self.min_key - self.offset : self.max_key - self.offset + 1]

    def key_at_rank(self, rank: float, *, lower: bool = True) -> int:
        """The key of the item at ``rank`` (0-based) in key order."""
        running = list(itertools.accumulate(self.used()))
        if lower:
            index = bisect.bisect_right(running, rank)
        else:
            index = bisect.bisect_left(running, rank + 1)
        return self.min_key + min(index, len(running) - 1)


class QuantileSketch:
    """All-time quantiles of a stream, each within ``relative_accuracy`` of the exact one.

    The DDSketch approach: a value ``x > 0`` is counted in bin
    ``ceil(log(x) / log(gamma))`` with ``gamma = (1 + a) / (1 - a)``, and a
    quantile is answered with the bin's centre, within ``a`` of every value in
    the bin (negative values mirror this; zero has its own count; values
    closer to zero than ``2.2e-308 * gamma`` count as zero).

    Each sign keeps at most ``max_bins`` bins of 8 bytes, allocated on its
    first value. 2048 bins at 1% cover values spanning a factor of 10**17 (a
    nanosecond to a decade, in seconds); were the values to span more, the
    lowest bins are merged and only the lowest quantiles lose accuracy.
    Sketches with the same ``relative_accuracy`` merge exactly, and
    :meth:`as_dict` / :meth:`from_dict` carry one between processes.
    Thread-safe.

    >>> sketch = QuantileSketch(relative_accuracy=0.01)
    >>> for ms in range(1, 1001):
    ...     sketch.add(ms / 1000)
    >>> sketch.count
    1000
    >>> abs(sketch.quantile(0.99) - 0.990) <= 0.01 * 0.990
    True
    """

    def __init__(self, relative_accuracy: float = 0.01, *, max_bins: int = 2048) -> None:
        accuracy = check_finite("relative_accuracy", relative_accuracy)
        if not 0.0 < accuracy < 1.0:
            raise ConfigError(
                f"relative_accuracy must be between 0 and 1 (exclusive), got {relative_accuracy!r}"
            )
        self._accuracy = accuracy
        self._max_bins = check_count("max_bins", max_bins)
        gamma = (1.0 + accuracy) / (1.0 - accuracy)
        self._multiplier = 1.0 / math.log(gamma)
        self._log_centre = math.log(2.0 * gamma / (1.0 + gamma))
        self._min_indexable = sys.float_info.min * gamma
        self._positive = _Bins(self._max_bins)
        self._negative = _Bins(self._max_bins)
        self._zero_count = 0
        self._lock = threading.Lock()

    @property
    def relative_accuracy(self) -> float:
        """The relative error each quantile stays within."""
        return self._accuracy

    @property
    def max_bins(self) -> int:
        """The most bins kept for positive values, and again for negative ones."""
        return self._max_bins

    @property
    def count(self) -> int:
        """How many values were added."""
        return self._positive.count + self._negative.count + self._zero_count

    def add(self, x: float) -> None:
        """Count one value; NaN and infinities raise :class:`~boundkit.ConfigError`."""
        if not isinstance(x, float) or x - x != 0.0:  # fast path for finite floats
            x = check_finite("value", x)
        lock = self._lock
        lock.acquire()  # not ``with``: twice as fast on the hot path
        try:
            if x > self._min_indexable:
                self._positive.add(math.ceil(math.log(x) * self._multiplier))
            elif x < -self._min_indexable:
                self._negative.add(math.ceil(math.log(-x) * self._multiplier))
            else:
                self._zero_count += 1
        finally:
            lock.release()

    def _value(self, key: int) -> float:
        try:
            return math.exp((key - 1) / self._multiplier + self._log_centre)
        except OverflowError:
            return sys.float_info.max

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (``0 <= q <= 1``) of every value added, ``None`` when empty.

        Within ``relative_accuracy`` of ``s[floor(q * (n - 1))]``, the exact
        value of that rank among the ``n`` values sorted.
        """
        q = check_fraction("quantile", q, top=1.0)
        with self._lock:
            if not self.count:
                return None
            rank = q * (self.count - 1)
            negatives = self._negative.count
            if rank < negatives:
                key = self._negative.key_at_rank(negatives - 1 - rank, lower=False)
                return -self._value(key)
            if rank < negatives + self._zero_count:
                return 0.0
            return self._value(self._positive.key_at_rank(rank - negatives - self._zero_count))

    def merge(self, other: QuantileSketch) -> None:
        """Add every value counted by ``other`` (same ``relative_accuracy``) to this sketch."""
        if not isinstance(other, QuantileSketch):
            raise ConfigError(f"can only merge a QuantileSketch, got {other!r}")
        self._merge_dict(other.as_dict())

    def _merge_dict(self, data: dict[str, Any]) -> None:
        if data["relative_accuracy"] != self._accuracy:
            raise ConfigError(
                f"cannot merge a sketch of relative_accuracy {data['relative_accuracy']!r} "
                f"into one of {self._accuracy!r}"
            )
        with self._lock:
            self._zero_count += data["zero_count"]
            for sign, bins in (("positive", self._positive), ("negative", self._negative)):
                first = data[sign]["min_key"]
                # highest first, so the range is settled before the lowest keys arrive
                for key, n in reversed(list(enumerate(data[sign]["counts"], first))):
                    if n:
                        bins.add(key, n)

    def as_dict(self) -> dict[str, Any]:
        """A compact JSON-ready form: the settings, the zero count and the used bins."""
        with self._lock:
            return {
                "relative_accuracy": self._accuracy,
                "max_bins": self._max_bins,
                "zero_count": self._zero_count,
                "positive": {
                    "min_key": self._positive.min_key,
                    "counts": self._positive.used().tolist(),
                },
                "negative": {
                    "min_key": self._negative.min_key,
                    "counts": self._negative.used().tolist(),
                },
            }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        """Rebuild a sketch from :meth:`as_dict`; malformed data raises ConfigError."""
        try:
            sketch = cls(data["relative_accuracy"], max_bins=data["max_bins"])
            check_count("zero_count", data["zero_count"], minimum=0)
            for sign in ("positive", "negative"):
                check_count(f"{sign} min_key", data[sign]["min_key"], minimum=-sys.maxsize)
                counts = data[sign]["counts"]
                if not isinstance(counts, list) or len(counts) > sketch.max_bins:
                    raise ConfigError(f"{sign} counts must be a list of at most max_bins counts")
                for n in counts:
                    check_count(f"{sign} count", n, minimum=0)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a QuantileSketch.as_dict() form: {exc!r}") from None
        sketch._merge_dict(data)
        return sketch

    def __repr__(self) -> str:
        return f"QuantileSketch(relative_accuracy={self._accuracy!r}, count={self.count})"
