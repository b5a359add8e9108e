"""Render and read untrusted PDFs in a worker process with a hard memory limit and timeouts.

:func:`isolated_render_pages` and :func:`isolated_iter_text` take the
arguments of :func:`boundkit.pdf.render_pages` and :func:`boundkit.pdf.iter_text`
and yield the same pages (with the stream's ``warnings`` and ``repaired``),
but the work runs in a worker process held to
``memory_limit`` (a memory cgroup where this process may create one, else
``RLIMIT_AS``), with a deadline per page and for the whole file. Pages come
back one at a time, so the parent holds one page. A PDF bomb, a hang or a
crash of the worker (SIGSEGV, SIGKILL) raises a boundkit error and costs a new
worker, never the calling process:

- :class:`~boundkit.PdfLimitError`: the memory limit or a timeout was hit
  (``page`` is ``None`` when that happened while opening the file);
- :class:`~boundkit.PdfPageError`: one page failed, or the worker crashed on it;
- :class:`~boundkit.PdfError` (and its password subclasses): the file cannot be opened.

With ``skip_bad_pages=True`` a failing page is skipped (also one that killed
the worker) and recorded in ``skipped``; only the whole-file timeout and
errors at open still end the stream. PyMuPDF is imported by the worker only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from . import _pdf_pool
from ._pdf_context import DEFAULT_BUDGET, PdfSource, TextMode, check_max_pixels
from ._pdf_pool import WorkerDied, WorkerTimedOut, close_isolated_workers
from ._pdf_worker import (
    DONE,
    ERROR,
    NEXT,
    NOTES,
    NUMBER,
    OPENED,
    PAGE,
    SKIPPED,
    USAGE,
    decode_error,
    load_plain,
    resolve_pages,
)
from ._sizes import format_bytes, parse_bytes
from ._window import check_count, check_seconds
from .errors import ConfigError, PdfError, PdfLimitError, PdfPageError

__all__ = [
    "IsolatedPages",
    "close_isolated_workers",
    "isolated_iter_text",
    "isolated_render_pages",
]

_T = TypeVar("_T")
#: The worker's memory limit unless told otherwise.
DEFAULT_MEMORY_LIMIT = "256M"
#: Seconds an idle worker waits for the next file before it stops and gives back its
#: ~55 MiB. A start costs 0.6-0.8 s (docs/pdf.md), so a file after a longer pause pays at
#: most about 1% of that pause, and files less than a minute apart never pay it.
DEFAULT_IDLE_TIMEOUT = 60.0


class IsolatedPages(Generic[_T]):
    """The iterator the isolated functions return: ``(page_number, result)`` pairs.

    ``skipped`` lists the :class:`~boundkit.PdfPageError` of each page skipped
    so far (``skip_bad_pages=True``); ``warnings`` and ``repaired`` are the
    document's, as :class:`~boundkit.pdf.PageStream`'s, once the file was read
    to the end or failed. ``close()``, leaving a ``with`` block or dropping the
    iterator stops the worker's work on the file.
    """

    def __init__(
        self,
        request: dict[str, Any],
        pages: list[int] | None,
        *,
        memory_limit: int,
        page_timeout: float | None,
        file_timeout: float | None,
        idle_timeout: float | None,
    ) -> None:
        self._session = _Session(request, memory_limit, (page_timeout, file_timeout, idle_timeout))
        # the generator refers to the session, never to self: dropping self closes it at once
        self._pages: Generator[tuple[int, _T], None, None] = self._session.run(pages)

    @property
    def skipped(self) -> tuple[PdfPageError, ...]:
        """The errors of the pages skipped so far, in page order."""
        return tuple(self._session.skipped)

    @property
    def warnings(self) -> tuple[str, ...]:
        """MuPDF's warning and error lines for the document, once it was read to the end or
        failed (empty after an early close; a worker that died takes its lines with it)."""
        return tuple(self._session.warnings)

    @property
    def repaired(self) -> bool:
        """Whether MuPDF repaired the document (at open or while reading a page)."""
        return self._session.repaired

    @property
    def peak_memory(self) -> int | None:
        """The worker's peak resident bytes over this file, once it was read to the end.

        Compare it with ``memory_limit`` to size the limit from real files;
        ``None`` until the file is finished, or when it ended in an error.
        """
        return self._session.peak_memory

    def __iter__(self) -> IsolatedPages[_T]:
        return self

    def __next__(self) -> tuple[int, _T]:
        return next(self._pages)

    def close(self) -> None:
        """Stop reading: the worker abandons the file (it is reused, or killed if it must be)."""
        self._pages.close()

    def __enter__(self) -> IsolatedPages[_T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Session:
    """One file's work, across the workers it takes (a new one after a death on a skipped page)."""

    def __init__(
        self,
        request: dict[str, Any],
        limit: int,
        timeouts: tuple[float | None, float | None, float | None],
    ) -> None:
        self._request = request
        self._limit = limit
        self._page_timeout, self._file_timeout, self._idle_timeout = timeouts
        self._waited = 0.0
        self.skipped: list[PdfPageError] = []
        self.warnings: list[str] = []
        self.repaired = False
        self.peak_memory: int | None = None

    def run(self, pages: list[int] | None) -> Generator[tuple[int, Any], None, None]:
        """One worker session per pass; a new session after a worker died on a skipped page."""
        while True:
            worker: _pdf_pool.Worker | None = _pdf_pool.checkout(self._limit)
            assert worker is not None
            reusable = False  # the worker is between requests again, in good shape
            page: int | None = None
            numbers: list[int] = []
            resume = 0  # where a new worker starts if this one dies
            try:
                worker.send({**self._request, "pages": pages})
                kind, payload = self._receive(worker, None, (OPENED, ERROR))
                if kind == ERROR:
                    reusable, error = _reported(payload)
                    raise error
                numbers = resolve_pages(pages, NUMBER.unpack(payload)[0])
                for index, page in enumerate(numbers):
                    resume = index + 1
                    worker.send(NEXT)
                    kind, payload = self._receive(worker, page, (PAGE, SKIPPED, ERROR))
                    if kind == ERROR:
                        reusable, error = _reported(payload)
                        raise error
                    if kind == SKIPPED:
                        self.skipped.append(_page_error(payload))
                    else:
                        yield self._page(payload)
                page = None
                worker.send(NEXT)
                kind, payload = self._receive(worker, None, (DONE, ERROR))
                if kind == ERROR:  # strict: MuPDF repaired the file while it was read
                    reusable, error = _reported(payload)
                    raise error
                worker.resident, self.peak_memory = USAGE.unpack(payload)
                reusable = True
                return
            except GeneratorExit:
                _pdf_pool.stop_gracefully(worker, self._idle_timeout)
                worker = None
                raise
            except (WorkerDied, WorkerTimedOut) as exc:
                error = self._failure(worker, exc, page)
                stop = page is None or not self._request["skip"] or self._out_of_time()
                if stop or not isinstance(error, PdfPageError):
                    raise error from None
                self.skipped.append(error)
                pages = numbers[resume:]
                if not pages:  # it died on the last page: nothing left to resume
                    return
            finally:
                if worker is not None:
                    if reusable:
                        _pdf_pool.checkin(worker, self._idle_timeout)
                    else:
                        worker.kill()

    def _page(self, payload: bytes) -> tuple[int, Any]:
        number = NUMBER.unpack_from(payload)[0]
        data = payload[NUMBER.size :]
        if self._request["op"] == "render":
            return number, data
        return number, load_plain(data)

    def _receive(
        self, worker: _pdf_pool.Worker, page: int | None, expected: tuple[bytes, ...]
    ) -> tuple[bytes, bytes]:
        """The worker's next frame, within the page's and the file's remaining time; the
        document's lines (NOTES) on the way are kept."""
        limits = [t for t in (self._page_timeout, self._time_left()) if t is not None]
        started = time.monotonic()
        try:
            deadline = started + min(limits) if limits else float("inf")
            kind, payload = worker.receive(deadline)
            if kind == NOTES:
                lines, repaired = load_plain(payload)
                self.warnings += (str(line) for line in lines)
                self.repaired = self.repaired or bool(repaired)
                kind, payload = worker.receive(deadline)
        finally:
            self._waited += time.monotonic() - started
        if kind not in expected:
            raise WorkerDied(f"the worker sent {kind!r} where {expected!r} was due")
        return kind, payload

    def _time_left(self) -> float | None:
        if self._file_timeout is None:
            return None
        return max(0.0, self._file_timeout - self._waited)

    def _out_of_time(self) -> bool:
        return self._file_timeout is not None and self._waited >= self._file_timeout

    def _failure(self, worker: _pdf_pool.Worker, exc: Exception, page: int | None) -> PdfError:
        """The error for a worker that timed out or died while working on ``page``."""
        name = self._request["name"]
        where = "opening it" if page is None else f"page {page}"
        if isinstance(exc, WorkerTimedOut):
            if self._out_of_time():
                return PdfLimitError(
                    f"{name}: took more than file_timeout={self._file_timeout} s ({where})",
                    page=page,
                )
            return PdfLimitError(
                f"{name}: {where} took more than page_timeout={self._page_timeout} s", page=page
            )
        cause = f"{worker.death_cause()} ({exc})"
        if worker.ran_out_of_memory():
            return PdfLimitError(
                f"{name}: {where} needed more than memory_limit={format_bytes(self._limit)}"
                f" ({worker.bound}); the worker was killed",
                page=page,
            )
        if page is None:
            return PdfError(f"cannot open {name}: the worker died while opening it: {cause}")
        return PdfPageError(f"{name}: the worker died on {where}: {cause}", page=page)


def _reported(payload: bytes) -> tuple[bool, Exception]:
    """The error a worker reported, and whether the worker may serve another file.

    A worker that ran out of memory without dying is not reused: its heap may stay large.
    """
    error = decode_error(payload)
    return not isinstance(error, PdfLimitError), error


def _page_error(payload: bytes) -> PdfPageError:
    error = decode_error(payload)
    assert isinstance(error, PdfPageError)
    return error


def _isolated(
    op: str,
    source: PdfSource,
    pages: Iterable[int] | None,
    options: dict[str, Any],
    limits: tuple[str | int, float | None, float | None, float | None],
    skip: bool,
) -> IsolatedPages[Any]:
    """Check the arguments here, in the caller, and return the iterator (no worker yet)."""
    memory_limit, page_timeout, file_timeout, idle_timeout = limits
    limit = parse_bytes(memory_limit, name="memory_limit")
    for name, timeout in (("page_timeout", page_timeout), ("file_timeout", file_timeout)):
        if timeout is not None:
            check_seconds(name, timeout)
    if idle_timeout is not None:
        check_seconds("idle_timeout", idle_timeout, allow_zero=True)
    sent: str | bytes
    if isinstance(source, (str, os.PathLike)):
        name = repr(os.fspath(source))  # as open_pdf names it
        sent = os.path.abspath(source)  # the worker may not share our working directory
        if not os.path.exists(sent):
            raise FileNotFoundError(2, "no such PDF file", sent)
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            sent = bytes(source)
        else:
            sent = source.read()
        name = f"<{len(sent)} bytes>"
    if not sent:
        raise PdfError(f"cannot open {name}: the data is empty")
    request = {"op": op, "source": sent, "name": name, "options": options, "skip": skip}
    return IsolatedPages(
        request,
        None if pages is None else list(pages),
        memory_limit=limit,
        page_timeout=page_timeout,
        file_timeout=file_timeout,
        idle_timeout=idle_timeout,
    )


def isolated_render_pages(
    source: PdfSource,
    *,
    dpi: int = 150,
    fmt: Literal["png", "raw"] = "png",
    pages: Iterable[int] | None = None,
    password: str | None = None,
    budget: int | str = DEFAULT_BUDGET,
    max_pixels: int | None = None,
    downscale: bool = False,
    skip_bad_pages: bool = False,
    strict: bool = False,
    memory_limit: str | int = DEFAULT_MEMORY_LIMIT,
    page_timeout: float | None = 30.0,
    file_timeout: float | None = 300.0,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> IsolatedPages[bytes]:
    """Yield ``(page_number, image bytes)`` as :func:`boundkit.pdf.render_pages`, in a worker.

    The arguments up to ``strict`` are :func:`~boundkit.pdf.render_pages`'s. The
    worker holds at most ``memory_limit`` bytes (``"256M"``, ``"1G"`` or an
    int), takes at most ``page_timeout`` seconds per page (opening counts as
    a page) and ``file_timeout`` seconds in all (time the caller spends between
    pages is not counted). ``None`` lifts a timeout. After the file the worker
    waits ``idle_timeout`` seconds for the next call (one idle worker per
    ``memory_limit``), then stops; ``0`` stops it at once, ``None`` keeps it
    until :func:`close_isolated_workers` or exit.
    """
    if fmt not in ("png", "raw"):
        raise ConfigError(f"fmt must be 'png' or 'raw', got {fmt!r}")
    options = {
        "dpi": check_count("dpi", dpi),
        "fmt": fmt,
        "password": password,
        "budget": parse_bytes(budget, name="budget"),
        "max_pixels": check_max_pixels(max_pixels),
        "downscale": bool(downscale),
        "strict": bool(strict),
    }
    limits = (memory_limit, page_timeout, file_timeout, idle_timeout)
    return _isolated("render", source, pages, options, limits, skip_bad_pages)


def isolated_iter_text(
    source: PdfSource,
    *,
    mode: TextMode = "text",
    pages: Iterable[int] | None = None,
    password: str | None = None,
    budget: int | str = DEFAULT_BUDGET,
    skip_bad_pages: bool = False,
    strict: bool = False,
    memory_limit: str | int = DEFAULT_MEMORY_LIMIT,
    page_timeout: float | None = 30.0,
    file_timeout: float | None = 300.0,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> IsolatedPages[Any]:
    """Yield ``(page_number, text)`` as :func:`boundkit.pdf.iter_text`, in a worker.

    The arguments up to ``strict`` are :func:`~boundkit.pdf.iter_text`'s; limits
    and timeouts as :func:`isolated_render_pages`.
    """
    if mode not in ("text", "dict", "words", "blocks"):
        raise ConfigError(f"mode must be one of text, dict, words, blocks, got {mode!r}")
    options = {
        "mode": mode,
        "password": password,
        "budget": parse_bytes(budget, name="budget"),
        "strict": bool(strict),
    }
    limits = (memory_limit, page_timeout, file_timeout, idle_timeout)
    return _isolated("text", source, pages, options, limits, skip_bad_pages)
