"""Memory housekeeping behind :mod:`boundkit.pdf`: the page budget guard and exit collection.

Stdlib and :mod:`boundkit.memory` only; PyMuPDF is reached through ``sys.modules``
so importing this never imports it.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from .memory import _malloc_trim, process_memory


def _empty_store() -> None:
    """Empty MuPDF's process-wide store, if PyMuPDF is loaded (microseconds when empty)."""
    if "pymupdf" in sys.modules:
        sys.modules["pymupdf"].TOOLS.store_shrink(100)


def _trim_heap() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


def _rss() -> int:
    return process_memory().rss


class _Guard:
    """Empties the store when RSS passes ``start + budget`` (one statm read, ~4 µs).

    Emptying the store frees its decoded images. glibc unmaps the big ones
    at once and keeps the rest to serve the next pages' allocations, which
    is cheaper than handing it back to be faulted in again, so the heap is
    trimmed only when RSS is still over the limit after the store is empty.
    What even the trim cannot give back (the open document's parsed objects,
    the caller's data) is not the store's: when it leaves less than half the
    budget free, the limit moves to half a budget above it, so the store is
    not emptied on every page. ``rss`` is injectable for tests.
    """

    def __init__(self, budget: int, *, rss: Callable[[], int] = _rss) -> None:
        self.budget = budget
        self._rss = rss
        self.base_limit = rss() + budget
        self.limit = self.base_limit

    def check(self) -> None:
        if self._rss() <= self.limit:
            return
        _empty_store()
        if self._rss() > self.limit:
            _trim_heap()
            self.limit = max(self.base_limit, self._rss() + self.budget // 2)


class _CollectionWatch:
    """Counts collections of generation 1 or 2, which move survivors to the oldest one.

    While none has run since a block began, every object made in the block is
    still young, so collecting generations 0 and 1 finds all of its cycles at a
    cost that does not grow with the rest of the heap.
    """

    def __init__(self) -> None:
        self.older = 0
        # CPython 3.14's incremental collector no longer has this guarantee.
        self.exact = sys.implementation.name == "cpython" and sys.version_info < (3, 14)
        if self.exact:
            gc.callbacks.append(self._seen)

    def _seen(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] >= 1:
            self.older += 1

    def collect_since(self, mark: int) -> None:
        """Collect every unreachable object made since ``mark`` (a value of ``older``)."""
        if self.exact and self.older == mark:
            gc.collect(1)
        else:
            gc.collect()


_watch = _CollectionWatch()
