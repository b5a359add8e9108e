"""PyMuPDF documents and pixmaps with a flat memory peak, zero growth and typed errors.

:func:`open_pdf` opens a document and, at exit, closes it exactly once, frees
the PyMuPDF objects made inside the block (reference cycles too), empties
MuPDF's store and trims the heap. :func:`pixmap` renders a page after checking
its size against a pixel bound, and frees the pixmap at exit (views of its
samples stay valid). :func:`render_pages` and :func:`iter_text` stream a
document page by page with one pixmap alive, and can skip pages MuPDF cannot
read. Each page pass ends with a budget guard: when resident memory has
grown, or would grow after one more page like the last, more than ``budget``
bytes since the document was opened, the store's decoded images are evicted,
its fonts and colour links kept (and the heap trimmed if that is not enough).

Every error MuPDF raises through these functions becomes a
:class:`~boundkit.PdfError` naming the source (and the page: a
:class:`~boundkit.PdfPageError`). MuPDF's warning and error lines go to the
context's ``warnings`` and the ``boundkit.pdf.mupdf`` log, never to stdout.

MuPDF's store (decoded images, fonts, colour links) is process-wide and
PyMuPDF is not thread-safe: use these from one thread; for parallel work use
processes. PyMuPDF is imported on first use, never by ``import boundkit``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from ._pdf_context import (
    DEFAULT_BUDGET,
    PdfContext,
    PdfSource,
    TextMode,
    check_max_pixels,
    contexts,
    messages,
    mupdf_errors,
    page_error,
    release_pdf_memory,
)
from ._pdf_memory import _check_guards, _Guard
from ._pdf_mupdf import drop_samples, installed_distributions, load, missing_error, own_samples
from ._window import check_count
from .errors import ConfigError, PdfLimitError, PdfPageError

if TYPE_CHECKING:
    import pymupdf

with contextlib.suppress(ValueError):  # ValueError: a pymupdf module without a spec is loaded
    if importlib.util.find_spec("pymupdf") is None:
        raise missing_error(installed_distributions())

__all__ = [
    "DEFAULT_BUDGET",
    "PageStream",
    "PdfContext",
    "batched",
    "iter_text",
    "open_pdf",
    "pixmap",
    "release_pdf_memory",
    "render_pages",
]

logger = logging.getLogger(__name__)

_pymupdf = load  # PyMuPDF, imported on first use (demo.py calls it too)

_T = TypeVar("_T")


def open_pdf(
    source: PdfSource,
    *,
    password: str | None = None,
    filetype: str | None = "pdf",
    budget: int | str = DEFAULT_BUDGET,
    strict: bool = False,
    max_pixels: int | None = None,
    reserve: bool | int | str | None = None,
) -> PdfContext:
    """Open a PDF from a path, bytes or binary file object, for one ``with`` block.

    ``with open_pdf("in.pdf") as doc:`` yields the ``pymupdf.Document``. At
    exit (also on error, and when opening fails) the document is closed once,
    PyMuPDF objects made in the block are collected unless still referenced,
    MuPDF's store is emptied, the heap trimmed and MuPDF's lines moved to the
    context's ``warnings``. A repaired file logs a warning, or raises
    :class:`~boundkit.PdfError` with ``strict=True`` (also when the repair
    happens while pages are read). ``budget`` (bytes, or a size such as
    ``"64M"``) is the guard's; ``max_pixels`` bounds :func:`pixmap` in the block.

    Raises :class:`TypeError` for a source of another type,
    :class:`FileNotFoundError` for a missing path,
    :class:`~boundkit.PdfPasswordError` when a password is needed,
    :class:`~boundkit.PdfWrongPasswordError` when it is wrong, and
    :class:`~boundkit.PdfError` for anything that is not a readable document
    (an unreadable page count included).

    ``reserve=True`` first waits for the block's ``budget`` in the dyno's
    admission budget (:func:`~boundkit.reserve`), and holds it until exit;
    a size reserves that amount instead (docs/admission.md). Without
    ``reserve=`` it is :data:`boundkit.admission.pdf_reserve_default`: False,
    except in a Celery task under :func:`boundkit.celery.install` (True).
    """
    return PdfContext(
        source,
        password=password,
        filetype=filetype,
        budget=budget,
        strict=strict,
        max_pixels=max_pixels,
        reserve=reserve,
    )


def _pixmap_size(fitz: Any, page: Any, dpi: int, clip: Any) -> tuple[int, int]:
    """The width and height ``get_pixmap(dpi=dpi, clip=clip)`` will have, without rendering."""
    rect = page.rect if clip is None else page.rect & fitz.Rect(clip)
    area = (rect * fitz.Matrix(dpi / 72, dpi / 72)).irect
    return area.width, area.height


def _fit_dpi(
    fitz: Any, page: Any, dpi: int, clip: Any, limit: int, downscale: bool, name: str
) -> int:
    """``dpi`` if its pixmap has at most ``limit`` pixels, or with ``downscale`` the largest
    dpi whose pixmap has; otherwise PdfLimitError."""
    width, height = _pixmap_size(fitz, page, dpi, clip)
    if width * height <= limit:
        return dpi
    if downscale:
        fitted = int(dpi * (limit / (width * height)) ** 0.5)
        while fitted >= 1:
            small_width, small_height = _pixmap_size(fitz, page, fitted, clip)
            if small_width * small_height <= limit:
                return fitted
            fitted -= 1
    raise PdfLimitError(
        f"page {page.number} of {name} would render to {width} x {height} pixels at {dpi} dpi, "
        f"more than the {limit:,} allowed: lower dpi, raise max_pixels or the budget, or pass "
        "downscale=True",
        page=page.number,
    )


_CHANNELS = {"gray": 1, "rgb": 3, "cmyk": 4}


@contextlib.contextmanager
def pixmap(
    page: pymupdf.Page,
    *,
    dpi: int = 150,
    alpha: bool = False,
    colorspace: str = "rgb",
    clip: Any = None,
    max_pixels: int | None = None,
    downscale: bool = False,
) -> Iterator[pymupdf.Pixmap]:
    """Render ``page`` and yield the Pixmap; free it at exit, then apply the budget guard.

    The size is checked before rendering: more than ``max_pixels`` pixels
    (default: the :func:`open_pdf` block's, else as many as fit in its
    ``budget``) raises :class:`~boundkit.PdfLimitError`, or, with
    ``downscale=True``, renders at the highest dpi that fits (``pix.xres``
    says which). MuPDF's errors raise :class:`~boundkit.PdfPageError`.

    The pixmap is unusable after the block. Views of its samples made inside
    (``pix.samples_mv``, its slices, ``numpy.frombuffer(pix.samples_mv)``)
    stay valid after it and keep the samples alive until the last one goes.
    """
    check_count("dpi", dpi)
    limit = check_max_pixels(max_pixels)
    fitz = _pymupdf()
    doc: Any = page.parent
    context = contexts.get(id(doc))
    lines = None
    if context is None:  # a document PyMuPDF opened directly: a guard and lines of its own
        name, budget, guard = repr(doc.name or "<document>"), DEFAULT_BUDGET, _Guard(DEFAULT_BUDGET)
        lines = messages.open(fitz)
    else:
        name, budget, guard = context.name, context.budget, None
        limit = limit or context.max_pixels
    channels = _CHANNELS.get(str(colorspace).lower(), 3) + bool(alpha)
    try:
        limit = limit or max(budget // channels, 1)
        fitted = _fit_dpi(fitz, page, dpi, clip, limit, downscale, name)
        try:
            pix = cast(Any, page).get_pixmap(
                dpi=fitted, alpha=alpha, colorspace=colorspace, clip=clip
            )
        except mupdf_errors(fitz) as exc:
            raise page_error(name, exc, page.number) from exc
        own_samples(fitz, pix)
        _check_guards()  # the page's peak: memory guards see it before the next page
        try:
            yield pix
        finally:
            drop_samples(pix)
            del pix
            if guard is not None:
                guard.check()
            elif context is not None:
                context._after_page(doc, page.number)
    finally:
        if lines is not None:
            messages.close(fitz, lines)


class PageStream(Iterator[tuple[int, _T]]):
    """What :func:`render_pages` and :func:`iter_text` return: an iterator of ``(page, result)``.

    ``skipped`` lists the :class:`~boundkit.PdfPageError` of each page left out
    with ``skip_bad_pages=True`` (``error.page`` is its number); ``warnings``
    and ``repaired`` are the document's, complete once the stream is finished
    or closed. ``close()`` (or a ``with`` block) closes the document early.
    """

    def __init__(
        self,
        context: PdfContext,
        pages: Iterable[int] | None,
        read: Callable[[PdfContext, Any, int], _T],
        skip_bad_pages: bool,
    ) -> None:
        self.context = context
        self._skip = skip_bad_pages
        self._skipped: list[PdfPageError] = []
        self._iterator: Generator[tuple[int, _T], None, None]
        self._iterator = self._run(_check_pages(pages), read)

    @property
    def skipped(self) -> tuple[PdfPageError, ...]:
        """The errors of the pages left out so far, in page order."""
        return tuple(self._skipped)

    @property
    def warnings(self) -> tuple[str, ...]:
        """MuPDF's lines for the document, once the stream is finished or closed."""
        return self.context.warnings

    @property
    def repaired(self) -> bool:
        """Whether MuPDF repaired the document (at open or while reading a page)."""
        return self.context.repaired

    def __next__(self) -> tuple[int, _T]:
        return next(self._iterator)

    def close(self) -> None:
        """Stop early: the document is closed and cleaned up now."""
        self._iterator.close()

    def __enter__(self) -> PageStream[_T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(
        self, pages: tuple[int, ...] | None, read: Callable[[PdfContext, Any, int], _T]
    ) -> Generator[tuple[int, _T], None, None]:
        context = self.context
        with context as doc:
            for number in context._page_numbers(doc, pages):
                try:
                    result = read(context, doc, number)
                except PdfPageError as error:
                    if not self._skip:
                        raise
                    logger.warning("skipped: %s", error)
                    self._skipped.append(error)
                    continue
                yield number, result


def _check_pages(pages: Iterable[int] | None) -> tuple[int, ...] | None:
    if pages is None:
        return None
    try:
        numbers = tuple(pages)
    except TypeError:
        raise ConfigError(f"pages must be an iterable of page numbers, got {pages!r}") from None
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int):
            raise ConfigError(f"pages must hold integer page numbers, got {number!r}")
    return numbers


def render_pages(
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
    reserve: bool | int | str | None = None,
) -> PageStream[bytes]:
    """Yield ``(page_number, image bytes)`` for each page, one pixmap alive at a time.

    ``page_number`` counts from 0, as ``pages`` does (default: all pages;
    ``-1`` is the last, and is yielded as its real number). ``fmt="png"``
    yields PNG files; ``"raw"`` the RGB samples, row by row. ``max_pixels``
    and ``downscale`` are :func:`pixmap`'s. A page MuPDF cannot read raises
    :class:`~boundkit.PdfPageError`; with ``skip_bad_pages=True`` it is left
    out and listed in the stream's ``skipped``. ``strict=True`` ends the stream
    with :class:`~boundkit.PdfError` when MuPDF has to repair the file (at open
    or at a page). The document is closed and cleaned up as by
    :func:`open_pdf` when the stream finishes or is closed. ``reserve`` is as
    for :func:`open_pdf`.
    """
    if fmt not in ("png", "raw"):
        raise ConfigError(f"fmt must be 'png' or 'raw', got {fmt!r}")
    check_count("dpi", dpi)
    context = open_pdf(
        source,
        password=password,
        budget=budget,
        strict=strict,
        max_pixels=max_pixels,
        reserve=reserve,
    )

    def read(context: PdfContext, doc: Any, number: int) -> bytes:
        try:
            page = doc[number]
        except mupdf_errors(_pymupdf()) as exc:
            raise context._page_error(exc, number) from exc
        pix: Any
        with pixmap(page, dpi=dpi, downscale=downscale) as pix:
            try:
                return cast(bytes, pix.tobytes("png")) if fmt == "png" else bytes(pix.samples_mv)
            except mupdf_errors(_pymupdf()) as exc:
                raise context._page_error(exc, number) from exc

    return PageStream(context, pages, read, skip_bad_pages)


def _blocks(fitz: Any, page: Any) -> list[tuple[Any, ...]]:
    """``get_text("blocks")`` built from the "dict" output, avoiding its leak (PyMuPDF #5067).

    "dict" leaves out lines whose characters all have an empty box; a block
    left with no line has no box either, and is left out rather than given
    MuPDF's empty rectangle (corners at +-2**31). docs/pdf.md says what differs.
    """
    layout = page.get_text("dict", flags=fitz.TEXTFLAGS_BLOCKS)
    blocks = []
    for block in layout["blocks"]:
        x0, y0, x1, y1 = block["bbox"]
        if x0 > x1 or y0 > y1:
            continue
        lines = ("".join(span["text"] for span in line["spans"]) for line in block["lines"])
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        blocks.append((x0, y0, x1, y1, text, block["number"], block["type"]))
    return blocks


def iter_text(
    source: PdfSource,
    *,
    mode: TextMode = "text",
    pages: Iterable[int] | None = None,
    password: str | None = None,
    budget: int | str = DEFAULT_BUDGET,
    skip_bad_pages: bool = False,
    strict: bool = False,
) -> PageStream[Any]:
    """Yield ``(page_number, page.get_text(mode))`` per page, streaming as :func:`render_pages`.

    ``mode="blocks"`` returns PyMuPDF's tuples, derived from the "dict" output
    because ``get_text("blocks")`` leaks ~1.6 KB per page; characters whose box
    is empty (zero-size glyphs) are missing from them (docs/pdf.md).
    ``pages``, ``skip_bad_pages`` and ``strict`` are as in :func:`render_pages`.
    """
    if mode not in ("text", "dict", "words", "blocks"):
        raise ConfigError(f"mode must be one of text, dict, words, blocks, got {mode!r}")
    context = open_pdf(source, password=password, budget=budget, strict=strict)

    def read(context: PdfContext, doc: Any, number: int) -> Any:
        fitz = _pymupdf()
        try:
            page: Any = doc[number]
            result = _blocks(fitz, page) if mode == "blocks" else page.get_text(mode)
        except mupdf_errors(fitz) as exc:
            raise context._page_error(exc, number) from exc
        del page
        context._after_page(doc, number)
        return result

    return PageStream(context, pages, read, skip_bad_pages)


def batched(
    items: Iterable[_T], size: int, *, cleanup: Callable[[], object] | None = None
) -> Iterator[list[_T]]:
    """Yield lists of ``size`` items (the last may be shorter), calling ``cleanup`` after each.

    >>> list(batched(range(5), 2))
    [[0, 1], [2, 3], [4]]

    ``cleanup`` runs once the caller is done with a batch, also when it stops
    early. Documents handled with :func:`open_pdf` already clean up after
    themselves, so for PDF batches :func:`release_pdf_memory` is the cleanup
    still worth having when raw PyMuPDF is used in the batch; a full
    ``gc.collect()`` per batch only pays when your own code builds cycles.
    """
    check_count("size", size)
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        try:
            yield batch
        finally:
            if cleanup is not None:
                cleanup()
