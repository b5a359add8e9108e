"""Capped rolling metrics: structures whose memory is bounded when they are created.

A ``response_times`` list appended on every request, or a dict of counts keyed
by path that gains a key for every scanner probing random URLs, grows for as
long as the process lives. These hold a fixed number of samples, keys and bins
instead, whatever is fed to them. Stdlib only.

- :class:`RollingWindow`: exact statistics over the last N samples;
- :class:`BoundedCounter`: counts per key, with a hard cap on distinct keys;
- :class:`QuantileSketch`: all-time quantiles within a relative error (DDSketch);
- :class:`RequestStats`: per-route latency windows and status counts for a web app.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from ._sketch import QuantileSketch
from ._window import RollingWindow, check_count, check_finite, check_max_age
from .errors import ConfigError

__all__ = ["BoundedCounter", "QuantileSketch", "RequestStats", "RollingWindow"]

for _cls in (QuantileSketch, RollingWindow):
    _cls.__module__ = __name__
del _cls

_OTHER = "other"


class BoundedCounter:
    """Counts per key, holding at most ``max_keys`` distinct keys.

    When a new key arrives and the counter is full, the least recently updated
    key is folded into the ``other_key`` bucket, so :meth:`total` stays exact
    while memory stays bounded. Counting ``other_key`` itself adds to that
    bucket. Thread-safe.

    >>> counter = BoundedCounter(2)
    >>> for path in ("/", "/login", "/", "/wp-admin.php"):
    ...     counter.incr(path)
    >>> counter.snapshot()
    {'/': 2, '/wp-admin.php': 1, 'other': 1}
    >>> counter.total()
    4
    """

    def __init__(self, max_keys: int = 1000, *, other_key: Hashable = _OTHER) -> None:
        self._max_keys = check_count("max_keys", max_keys)
        self._other_key = other_key
        self._counts: OrderedDict[Hashable, int] = OrderedDict()
        self._other = 0
        self._total = 0
        self._lock = threading.Lock()

    @property
    def max_keys(self) -> int:
        """The most distinct keys held, besides the ``other`` bucket."""
        return self._max_keys

    @property
    def other(self) -> int:
        """The count folded into the ``other`` bucket."""
        return self._other

    def incr(self, key: Hashable, n: int = 1) -> None:
        """Add ``n`` (a non-negative int) to the count of ``key``."""
        if n.__class__ is not int or n < 0:
            check_count("n", n, minimum=0)
        counts, lock = self._counts, self._lock
        lock.acquire()  # not ``with``: twice as fast on the hot path
        try:
            if key == self._other_key:
                self._other += n
            elif key in counts:
                counts[key] += n
                counts.move_to_end(key)
            else:
                if len(counts) >= self._max_keys:
                    self._other += counts.popitem(last=False)[1]
                counts[key] = n
            self._total += n
        except TypeError:
            raise ConfigError(f"key must be hashable, got {key!r}") from None
        finally:
            lock.release()

    def total(self) -> int:
        """The sum of every count ever added, folded ones included."""
        return self._total

    def __len__(self) -> int:
        """The number of distinct keys held (the ``other`` bucket not included)."""
        return len(self._counts)

    def most_common(self, k: int | None = None) -> list[tuple[Hashable, int]]:
        """The ``k`` largest counts (all when ``None``), largest first, ``other`` included."""
        items = list(self.snapshot().items())
        if k is None:
            return sorted(items, key=lambda item: item[1], reverse=True)
        return heapq.nlargest(check_count("k", k, minimum=0), items, key=lambda item: item[1])

    def snapshot(self) -> dict[Hashable, int]:
        """The counts, least recently updated first, then ``other`` if it is not zero."""
        with self._lock:
            counts = dict(self._counts)
            if self._other:
                counts[self._other_key] = self._other
        return counts

    def clear(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()
            self._other = 0
            self._total = 0

    def __repr__(self) -> str:
        return f"BoundedCounter(max_keys={self._max_keys}, keys={len(self._counts)})"


_MAX_STATUSES = 32  # distinct status codes kept per route; rarer ones go to "other"


class _Route:
    """The latency window and status counts of one route."""

    __slots__ = ("statuses", "window")

    def __init__(self, window: RollingWindow) -> None:
        self.window = window
        self.statuses = BoundedCounter(_MAX_STATUSES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.window.count_total,
            "seconds": self.window.summary(),
            "statuses": dict(
                sorted((str(code), n) for code, n in self.statuses.snapshot().items())
            ),
        }


class RequestStats:
    """Per-route response times and status counts for a web app, in bounded memory.

    The first ``max_routes`` routes seen get their own :class:`RollingWindow`
    of the last ``window`` response times (forgetting those older than
    ``max_age`` seconds if given) and their own status counts; every route
    after that, and the route ``"other"`` itself, share the ``"other"`` entry.
    Memory is bounded by ``(max_routes + 1) * window * 8`` bytes of samples
    plus at most 32 status codes per route. Thread-safe.

    >>> stats = RequestStats(max_routes=10)
    >>> stats.observe("/login", 0.120, 200)
    >>> stats.observe("/login", 0.480, 500)
    >>> login = stats.summary()["routes"]["/login"]
    >>> login["requests"], login["seconds"]["max"], login["statuses"]
    (2, 0.48, {'200': 1, '500': 1})
    """

    def __init__(
        self,
        max_routes: int = 100,
        *,
        window: int = 1000,
        max_age: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_routes = check_count("max_routes", max_routes)
        self._window = check_count("window", window)
        self._max_age = check_max_age(max_age)
        self._timer = timer
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()

    def _new_route(self) -> _Route:
        return _Route(RollingWindow(self._window, max_age=self._max_age, timer=self._timer))

    def observe(self, route: str, seconds: float, status: int) -> None:
        """Record one request to ``route`` that took ``seconds`` and answered ``status``."""
        if not isinstance(route, str):
            raise ConfigError(f"route must be a string, got {route!r}")
        if check_finite("seconds", seconds) < 0:
            raise ConfigError(f"seconds must not be negative, got {seconds!r}")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ConfigError(f"status must be an HTTP status code (100-599), got {status!r}")
        with self._lock:
            entry = self._routes.get(route)
            if entry is None:
                if len(self._routes) >= self._max_routes + (_OTHER in self._routes):
                    route = _OTHER
                entry = self._routes.get(route)
                if entry is None:
                    entry = self._routes[route] = self._new_route()
        entry.window.add(seconds)
        entry.statuses.incr(int(status))  # HTTPStatus.OK counts as 200

    def summary(self) -> dict[str, Any]:
        """Totals, then per route its requests, latency summary and statuses; JSON-ready.

        ``{"requests": int, "statuses": {"200": int, ...}, "routes": {route:
        {"requests": int, "seconds": RollingWindow.summary(), "statuses": {...}}}}``;
        ``requests`` counts every request ever observed, ``seconds`` only the window.
        """
        with self._lock:
            routes = dict(self._routes)
        per_route = {name: entry.as_dict() for name, entry in sorted(routes.items())}
        statuses: dict[str, int] = {}
        for entry in per_route.values():
            for code, n in entry["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        return {
            "requests": sum(entry["requests"] for entry in per_route.values()),
            "statuses": dict(sorted(statuses.items())),
            "routes": per_route,
        }

    def clear(self) -> None:
        """Forget every route and its samples."""
        with self._lock:
            self._routes.clear()

    def __repr__(self) -> str:
        return f"RequestStats(max_routes={self._max_routes}, window={self._window})"
