"""Cache budgets that give way under memory pressure and come back once it has passed.

``BoundedCache.shrink()`` drops entries but keeps ``max_bytes``, so the cache
refills into the same wall within one cooldown. :class:`CacheBudgets`
instead lowers each registered cache's ``max_bytes`` (``resize`` evicts down
to it at once), keeps it low while memory is above ``ok``, and raises it
back in steps once memory has stayed ``ok`` for ``hold`` seconds: a step of
``step`` of the original budget every ``every`` seconds. Any return to
``warning`` stops the climb and restarts the wait (hysteresis in time on top
of the guard's hysteresis in bytes). Each new lowering starts from the
current budget, never below ``floor`` of the original. The clock is
injected, so tests move it by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._sizes import format_bytes
from ._window import check_seconds
from .errors import ConfigError

__all__ = ["CacheBudgets"]

logger = logging.getLogger("boundkit.guard")


class _Resizable(Protocol):
    @property
    def max_bytes(self) -> int | None: ...

    def resize(self, *, max_bytes: int | None) -> None: ...


def _held_bytes(cache: Any) -> int:
    stats = getattr(cache, "stats", None)
    held = getattr(stats(), "bytes", None) if stats is not None else None
    return int(held or 0)


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ConfigError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


class CacheBudgets:
    """The ``max_bytes`` of registered caches, lowered under pressure and restored gradually.

    ``lower_to`` is the fraction of its current budget a cache keeps at
    each lowering, ``floor`` the least fraction of its original budget it
    ever keeps. ``hold`` (seconds at ``ok``) and ``every``/``step`` pace
    the recovery. ``timer`` returns seconds.
    """

    def __init__(
        self,
        *,
        lower_to: float = 0.5,
        floor: float = 0.125,
        hold: float = 30.0,
        step: float = 0.25,
        every: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lower_to = _fraction("lower_to", lower_to)
        self.floor = _fraction("floor", floor)
        self.step = _fraction("step", step)
        self.hold = check_seconds("hold", hold, allow_zero=True)
        self.every = check_seconds("every", every, allow_zero=True)
        self._timer = timer
        self._lock = threading.Lock()
        self._caches: dict[str, _Resizable] = {}
        self._original: dict[str, int] = {}  # the budget before the first lowering
        self._calm_since: float | None = None
        self._last_step = float("-inf")
        self.lowerings = 0
        self.restored_steps = 0

    def add(self, name: str, cache: _Resizable) -> None:
        """Manage ``cache`` (it needs ``max_bytes`` and ``resize(max_bytes=...)``)."""
        with self._lock:
            self._caches[name] = cache

    @property
    def lowered(self) -> bool:
        """Whether any cache is below its original budget."""
        return bool(self._original)

    def lower(self) -> int:
        """Lower every cache's budget; return the estimated bytes its entries held less."""
        freed = 0
        with self._lock:
            for name, cache in self._caches.items():
                budget = cache.max_bytes
                if budget is None:
                    continue
                original = self._original.setdefault(name, budget)
                target = max(int(budget * self.lower_to), int(original * self.floor), 1)
                if target >= budget:
                    continue
                before = _held_bytes(cache)
                cache.resize(max_bytes=target)
                freed += max(before - _held_bytes(cache), 0)
                logger.warning(
                    "cache %s: max_bytes lowered to %s under memory pressure (from %s)",
                    name,
                    format_bytes(target),
                    format_bytes(budget),
                )
            self.lowerings += 1
            self._calm_since = None
        return freed

    def relax(self, level: str) -> None:
        """Note the guard's ``level``; after ``hold`` s at ``ok``, raise budgets one step."""
        if not self._original:
            return
        now = self._timer()
        with self._lock:
            if level != "ok":
                self._calm_since = None
                return
            if self._calm_since is None:
                self._calm_since = now
            if now - self._calm_since < self.hold or now - self._last_step < self.every:
                return
            self._last_step = now
            self.restored_steps += 1
            for name, original in list(self._original.items()):
                cache = self._caches[name]
                current = cache.max_bytes or original
                target = min(current + int(original * self.step), original)
                cache.resize(max_bytes=target)
                if target >= original:
                    del self._original[name]
                logger.info(
                    "cache %s: max_bytes back to %s of %s",
                    name,
                    format_bytes(target),
                    format_bytes(original),
                )

    def status(self) -> dict[str, Any]:
        """Each cache's budget now and before pressure (bytes), and the counts."""
        with self._lock:
            return {
                "lowerings": self.lowerings,
                "restored_steps": self.restored_steps,
                "caches": {
                    name: {
                        "max_bytes": cache.max_bytes,
                        "original": self._original.get(name, cache.max_bytes),
                    }
                    for name, cache in self._caches.items()
                },
            }
