"""Memory housekeeping behind :mod:`boundkit.pdf`: the page budget guard and exit collection.

Stdlib and :mod:`boundkit.memory` only; PyMuPDF is reached through ``sys.modules``
so importing this never imports it.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from .memory import _malloc_trim, process_memory


def _shrink_store(percent: int = 99) -> None:
    """Shrink MuPDF's process-wide store by ``percent`` of its maximum, if PyMuPDF is loaded.

    The default, 99, brings the store down to 1% of its maximum (2.56 MiB of
    256 MiB), evicting the largest of the least recently used items first: the
    decoded images go, the fonts and colour links stay. Emptying it (100)
    instead costs the next page ~5 ms rebuilding a colour link and reloading
    fonts. Microseconds when there is nothing to evict.
    """
    if "pymupdf" in sys.modules:
        sys.modules["pymupdf"].TOOLS.store_shrink(percent)


def _trim_heap() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


def _check_guards() -> None:
    """Let the process's memory guards check now (:func:`boundkit.guard.check_guards`)."""
    guard = sys.modules.get("boundkit.guard")
    if guard is not None:
        guard.check_guards()


def _rss() -> int:
    return process_memory().rss


class _Guard:
    """Shrinks the store before RSS passes ``start + budget`` (one statm read, ~3 µs).

    The growth since the last check (one page) is taken as the next page's,
    so the store is shrunk when RSS plus that step would pass the limit, not
    after. Shrinking frees the decoded images (fonts and colour links stay):
    glibc unmaps the big ones at once and keeps the rest to serve the next
    pages, cheaper than handing it back to be faulted in again, so the heap
    is trimmed only when RSS plus a step is still over the limit. What even
    the trim cannot give back (the open document's parsed objects, the
    caller's data) is not the store's: when it leaves less than half the
    budget free, the limit moves to half a budget above it, so the store is
    not shrunk on every page. In a worker governed by a share plan the
    budget is at most the plan's ``pdf_budget``. ``rss`` is injectable for tests.
    """

    def __init__(self, budget: int, *, rss: Callable[[], int] = _rss) -> None:
        plan = (
            sys.modules["boundkit.dyno"].current_plan() if "boundkit.dyno" in sys.modules else None
        )
        self.budget = budget if plan is None else min(budget, plan.pdf_budget)
        self._rss = rss
        self.last = rss()
        self.base_limit = self.last + self.budget
        self.limit = self.base_limit

    def check(self) -> None:
        now = self._rss()
        step = max(now - self.last, 0)
        self.last = now
        if now + step <= self.limit:
            return
        _shrink_store()
        self.last = self._rss()
        if self.last + step > self.limit:
            _trim_heap()
            self.last = self._rss()
            self.limit = max(self.base_limit, self.last + self.budget // 2)


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
