"""Log the memory a block or a function call took: ``memory_scope`` and ``monitor_memory``.

The peak inside a block is the kernel's high-water mark (``VmHWM``), reset when the
block starts by writing 5 to ``/proc/self/clear_refs``; where that cannot be done
(not Linux, or /proc not writable) a thread samples RSS every 10 ms instead. The mark
is process-wide, so scopes open at once (nested, other threads, other tasks) take
the peak of each reset into every open scope.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ._sizes import format_bytes
from .errors import ConfigError
from .memory import _high_water, _reset_high_water, process_memory

__all__ = ["MemoryDelta", "memory_scope", "monitor_memory"]

logger = logging.getLogger("boundkit.scope")

F = TypeVar("F", bound=Callable[..., Any])

_SAMPLE_SECONDS = 0.01


@dataclass
class MemoryDelta:
    """Resident memory around a block, in bytes; ``after`` and ``peak`` are set when it ends.

    ``peak`` is the highest RSS of the process while the block ran.
    """

    name: str
    before: int
    after: int | None = None
    peak: int | None = None

    @property
    def delta(self) -> int | None:
        """``after - before``, or None while the block runs."""
        return None if self.after is None else self.after - self.before


class _Peak:
    """The highest RSS one open scope has seen so far."""

    def __init__(self, rss: int) -> None:
        self.rss = rss

    def see(self, rss: int | None) -> None:
        if rss is not None and rss > self.rss:
            self.rss = rss


_open: list[_Peak] = []
_open_lock = threading.Lock()


def _sample(peak: _Peak, stop: threading.Event) -> None:
    while not stop.wait(_SAMPLE_SECONDS):
        peak.see(process_memory().rss)


@contextlib.contextmanager
def _watching(peak: _Peak) -> Iterator[None]:
    """Follow the peak RSS inside the block: the kernel's high-water mark, else sampling."""
    with _open_lock:
        reset_from = _reset_high_water()
        for other in _open:
            other.see(reset_from)
        _open.append(peak)
    sampler: threading.Thread | None = None
    stop = threading.Event()
    if reset_from is None:
        sampler = threading.Thread(target=_sample, args=(peak, stop), daemon=True)
        sampler.start()
    try:
        yield
    finally:
        with _open_lock:
            _open.remove(peak)
            if sampler is None:
                peak.see(_high_water())
        if sampler is not None:
            stop.set()
            sampler.join()


@contextlib.contextmanager
def memory_scope(
    name: str, *, log: logging.Logger | None = None, level: int = logging.INFO
) -> Iterator[MemoryDelta]:
    """Log resident memory before and after the block, the difference and the peak.

    Logs one record on ``log`` (default: the ``boundkit.scope`` logger) at
    ``level`` (default INFO), so configure logging to see it. Yields a
    :class:`MemoryDelta` whose ``after`` and ``peak`` are filled on exit, also
    when the block raises. On Linux this costs a few reads and one write under
    ``/proc/self`` (microseconds); no garbage collection, so the delta includes
    garbage not yet collected.
    """
    _check_level(level)
    scope = MemoryDelta(name=name, before=process_memory().rss)
    peak = _Peak(scope.before)
    try:
        with _watching(peak):
            yield scope
    finally:
        scope.after = process_memory().rss
        peak.see(scope.after)
        scope.peak = peak.rss
        out = log or logger
        if out.isEnabledFor(level):
            out.log(
                level,
                "%s: rss %s -> %s (%s%s), peak %s (+%s)",
                name,
                format_bytes(scope.before),
                format_bytes(scope.after),
                "+" if scope.after >= scope.before else "",
                format_bytes(scope.after - scope.before),
                format_bytes(scope.peak),
                format_bytes(scope.peak - scope.before),
            )


def _check_level(level: int) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ConfigError(f"level must be a logging level (an int >= 0), got {level!r}")


@overload
def monitor_memory(fn: F, /) -> F: ...
@overload
def monitor_memory(
    *, name: str | None = None, log: logging.Logger | None = None, level: int = logging.INFO
) -> Callable[[F], F]: ...
def monitor_memory(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    log: logging.Logger | None = None,
    level: int = logging.INFO,
) -> Any:
    """Decorate a function (or ``async def``) to run each call in a :func:`memory_scope`.

    Use bare (``@monitor_memory``) or with options
    (``@monitor_memory(name="render", level=logging.DEBUG)``); the scope is
    named after the function's qualified name by default.
    """

    _check_level(level)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        label = name or func.__qualname__
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with memory_scope(label, log=log, level=level):
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with memory_scope(label, log=log, level=level):
                return func(*args, **kwargs)

        return wrapper

    return decorate if fn is None else decorate(fn)
