"""Log the memory a block or a function call took: ``memory_scope`` and ``monitor_memory``."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ._sizes import format_bytes
from .memory import process_memory

__all__ = ["MemoryDelta", "memory_scope", "monitor_memory"]

logger = logging.getLogger("boundkit.scope")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class MemoryDelta:
    """Resident memory around a block, in bytes; ``after`` is set when the block ends."""

    name: str
    before: int
    after: int | None = None

    @property
    def delta(self) -> int | None:
        """``after - before``, or None while the block runs."""
        return None if self.after is None else self.after - self.before


@contextlib.contextmanager
def memory_scope(
    name: str, *, log: logging.Logger | None = None, level: int = logging.INFO
) -> Iterator[MemoryDelta]:
    """Log resident memory before and after the block, and the difference.

    Yields a :class:`MemoryDelta` whose ``after`` is filled on exit, also when
    the block raises. Costs two reads of ``/proc/self/statm`` (microseconds);
    no garbage collection, so the delta includes garbage not yet collected.
    """
    scope = MemoryDelta(name=name, before=process_memory().rss)
    try:
        yield scope
    finally:
        scope.after = process_memory().rss
        out = log or logger
        if out.isEnabledFor(level):
            out.log(
                level,
                "%s: rss %s -> %s (%s%s)",
                name,
                format_bytes(scope.before),
                format_bytes(scope.after),
                "+" if scope.after >= scope.before else "",
                format_bytes(scope.after - scope.before),
            )


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
