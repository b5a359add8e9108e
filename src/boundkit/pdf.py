"""PyMuPDF documents and pixmaps with a flat memory peak and zero growth.

:func:`open_pdf` opens a document and, at exit, closes it exactly once, frees
the PyMuPDF objects made inside the block (reference cycles too), empties
MuPDF's store and trims the heap. :func:`pixmap` renders a page and frees the
pixmap at exit. :func:`render_pages` and :func:`iter_text` stream a document
page by page with one pixmap alive. Each page pass ends with a budget guard:
when resident memory has grown, or would grow after one more page like the
last, more than ``budget`` bytes since the document was opened, the store's
decoded images are evicted, its fonts and colour links kept (and the heap
trimmed if that is not enough).

MuPDF's store (decoded images, fonts, colour links) is process-wide and
PyMuPDF is not thread-safe: use these from one thread; for parallel work use
processes. PyMuPDF is imported on first use, never by ``import boundkit``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, Union, cast

from ._pdf_memory import _check_guards, _Guard, _shrink_store, _trim_heap, _watch
from .errors import (
    ConfigError,
    PdfError,
    PdfPasswordError,
    PdfWrongPasswordError,
    ResourceClosedError,
)

if TYPE_CHECKING:
    import pymupdf

__all__ = [
    "DEFAULT_BUDGET",
    "PdfContext",
    "batched",
    "iter_text",
    "open_pdf",
    "pixmap",
    "release_pdf_memory",
    "render_pages",
]

logger = logging.getLogger(__name__)

#: Resident growth (bytes) over a document's opening that triggers the guard. The page
#: being rendered (decoded images, pixmap, output) comes on top (docs/pdf.md).
DEFAULT_BUDGET = 64 * 1024 * 1024

PdfSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
TextMode = Literal["text", "dict", "words", "blocks"]
_T = TypeVar("_T")


def _pymupdf() -> Any:
    try:
        import pymupdf
    except ImportError as exc:
        raise ImportError(
            "boundkit.pdf needs the 'pdf' extra: pip install 'boundkit[pdf]'", name=exc.name
        ) from exc
    return pymupdf


def release_pdf_memory() -> None:
    """Empty MuPDF's process-wide store and return free heap pages to the system.

    Costs microseconds when the store is already empty; the next document
    that needs an evicted image or font decodes it again.
    """
    _shrink_store(100)  # all of it
    _trim_heap()


# id(document) -> the guard of the open_pdf block that holds it open
_guards: dict[int, _Guard] = {}


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    return repr(name) if isinstance(name, str) else f"<{type(source).__name__}>"


class PdfContext:
    """The context manager :func:`open_pdf` returns; entering it yields the document.

    After the block, ``warnings`` holds the MuPDF warnings raised while it ran
    and ``repaired`` says whether MuPDF had to repair the file to open it.
    """

    def __init__(
        self,
        source: PdfSource,
        *,
        password: str | None,
        filetype: str | None,
        budget: int,
        strict: bool,
        reserve: bool | int | str = False,
    ) -> None:
        if budget < 0:
            raise ConfigError(f"budget must not be negative, got {budget!r}")
        self._source = source
        self._password = password
        self._filetype = filetype
        self._budget = budget
        self._strict = strict
        self._reserve = reserve
        self._reservation: Any = None
        self._document: pymupdf.Document | None = None
        self._entered = False
        self._mark = 0
        self._warnings_before = 0
        self.name = _describe(source)
        self.warnings: tuple[str, ...] = ()
        self.repaired = False

    def __repr__(self) -> str:
        state = "open" if self._document is not None else "closed"
        return f"<PdfContext {self.name} {state}>"

    def __enter__(self) -> pymupdf.Document:
        if self._entered:
            raise ResourceClosedError(f"open_pdf({self.name}) can be entered only once")
        self._entered = True
        fitz = _pymupdf()
        self._mark = _watch.older
        self._warnings_before = len(_warning_lines(fitz, reset=False))
        self._guard = _Guard(self._budget)
        if self._reserve is not False:
            from .admission import reserve_for_pdf

            self._reservation = reserve_for_pdf(self._reserve, self._guard.budget)
        try:
            self._document = self._open(fitz)
            self._check(self._document)
        except BaseException:
            self._finish(fitz)
            raise
        _guards[id(self._document)] = self._guard
        return self._document

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(_pymupdf())

    def _open(self, fitz: Any) -> Any:
        source = self._source
        try:
            if isinstance(source, (str, os.PathLike)):
                path = os.fspath(source)
                if not os.path.exists(path):
                    raise FileNotFoundError(errno.ENOENT, "no such PDF file", path)
                return fitz.open(path, filetype=self._filetype)
            if isinstance(source, memoryview):
                source = source.tobytes()
            elif not isinstance(source, (bytes, bytearray)):
                source = source.read()
            if not source:
                raise PdfError(f"cannot open {self.name}: the data is empty")
            return fitz.open(stream=source, filetype=self._filetype)
        except fitz.FileNotFoundError as exc:
            raise FileNotFoundError(errno.ENOENT, "no such PDF file", str(source)) from exc
        except RuntimeError as exc:
            lines = _warning_lines(fitz, reset=False)[self._warnings_before :]
            cause = "; ".join(lines[:2]) or str(exc)
            kind = self._filetype or "a document"
            raise PdfError(f"cannot open {self.name} as {kind}: {cause}") from exc

    def _check(self, doc: Any) -> None:
        if doc.needs_pass:
            if self._password is None:
                raise PdfPasswordError(f"{self.name} is encrypted: pass password=")
            if not doc.authenticate(self._password):
                raise PdfWrongPasswordError(f"the password given does not open {self.name}")
        self.repaired = bool(doc.is_repaired)
        if self.repaired:
            if self._strict:
                raise PdfError(f"{self.name} is damaged: MuPDF had to repair it to open it")
            logger.warning("%s is damaged: MuPDF repaired it to open it", self.name)

    def _finish(self, fitz: Any) -> None:
        doc: Any = self._document
        self._document = None
        try:
            if doc is not None:
                _guards.pop(id(doc), None)
                if not doc.is_closed:
                    doc.close()
        finally:
            del doc  # ours must go before the collection
            _watch.collect_since(self._mark)
            release_pdf_memory()
            self.warnings = tuple(_warning_lines(fitz, reset=True)[self._warnings_before :])
            reservation, self._reservation = self._reservation, None
            if reservation is not None:
                reservation.__exit__(None, None, None)


def _warning_lines(fitz: Any, *, reset: bool) -> list[str]:
    text: str = fitz.TOOLS.mupdf_warnings(reset=reset)
    return text.splitlines()


def open_pdf(
    source: PdfSource,
    *,
    password: str | None = None,
    filetype: str | None = "pdf",
    budget: int = DEFAULT_BUDGET,
    strict: bool = False,
    reserve: bool | int | str = False,
) -> PdfContext:
    """Open a PDF from a path, bytes or binary file object, for one ``with`` block.

    ``with open_pdf("in.pdf") as doc:`` yields the ``pymupdf.Document``. At
    exit (also on error, and when opening fails) the document is closed once,
    PyMuPDF objects made in the block are collected unless still referenced,
    MuPDF's store is emptied, the heap trimmed and MuPDF's warnings moved to
    the context's ``warnings``. A repaired file logs a warning, or raises
    :class:`~boundkit.PdfError` with ``strict=True``.

    Raises :class:`FileNotFoundError` for a missing path,
    :class:`~boundkit.PdfPasswordError` when a password is needed,
    :class:`~boundkit.PdfWrongPasswordError` when it is wrong, and
    :class:`~boundkit.PdfError` for anything that is not a readable document.

    ``reserve=True`` first waits for the block's ``budget`` in the dyno's
    admission budget (:func:`~boundkit.reserve`), and holds it until exit;
    a size reserves that amount instead (docs/admission.md).
    """
    return PdfContext(
        source, password=password, filetype=filetype, budget=budget, strict=strict, reserve=reserve
    )


def _free_pixmap(pix: Any) -> None:
    """Drop a pixmap's native samples even while the caller still names it.

    Mirrors ``Pixmap.__del__``: the ``samples_mv`` view is released first so it
    can never point at freed memory. Using the pixmap afterwards raises.
    """
    if pix._samples_mv is not None:
        pix._samples_mv.release()
        pix._samples_mv = None
    pix.this = None


@contextlib.contextmanager
def pixmap(
    page: pymupdf.Page,
    *,
    dpi: int = 150,
    alpha: bool = False,
    colorspace: str = "rgb",
    clip: Any = None,
) -> Iterator[pymupdf.Pixmap]:
    """Render ``page`` and yield the Pixmap; free it at exit, then apply the budget guard.

    Copy what you need (``pix.tobytes("png")``, ``bytes(pix.samples_mv)``)
    inside the block: the pixmap is unusable after it. The guard is that of
    the :func:`open_pdf` block holding the page's document, or a fresh one
    with the default budget.
    """
    guard = _guards.get(id(page.parent)) or _Guard(DEFAULT_BUDGET)
    pix = cast(Any, page).get_pixmap(dpi=dpi, alpha=alpha, colorspace=colorspace, clip=clip)
    _check_guards()  # the page's peak: memory guards see it before the next page
    try:
        yield pix
    finally:
        _free_pixmap(pix)
        del pix
        guard.check()


def _page_numbers(doc: Any, pages: Iterable[int] | None) -> Iterable[int]:
    if pages is None:
        return range(doc.page_count)
    return pages


def render_pages(
    source: PdfSource,
    *,
    dpi: int = 150,
    fmt: Literal["png", "raw"] = "png",
    pages: Iterable[int] | None = None,
    password: str | None = None,
    budget: int = DEFAULT_BUDGET,
    reserve: bool | int | str = False,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(page_number, image bytes)`` for each page, one pixmap alive at a time.

    ``page_number`` counts from 0, as ``pages`` does (default: all pages).
    ``fmt="png"`` yields PNG files; ``"raw"`` the RGB samples, row by row.
    The document is closed and cleaned up as by :func:`open_pdf` when the
    generator finishes or is closed. ``reserve`` is as for :func:`open_pdf`.
    """
    if fmt not in ("png", "raw"):
        raise ConfigError(f"fmt must be 'png' or 'raw', got {fmt!r}")
    context = open_pdf(source, password=password, budget=budget, reserve=reserve)
    return _render(context, dpi, fmt, pages)


def _render(
    context: PdfContext, dpi: int, fmt: str, pages: Iterable[int] | None
) -> Iterator[tuple[int, bytes]]:
    with context as doc:
        for number in _page_numbers(doc, pages):
            pix: Any
            with pixmap(doc[number], dpi=dpi) as pix:
                data = pix.tobytes("png") if fmt == "png" else bytes(pix.samples_mv)
            yield number, data


def _blocks(fitz: Any, page: Any) -> list[tuple[Any, ...]]:
    """``get_text("blocks")`` built from the "dict" output, avoiding its leak (PyMuPDF #5067)."""
    layout = page.get_text("dict", flags=fitz.TEXTFLAGS_BLOCKS)
    blocks = []
    for block in layout["blocks"]:
        lines = ("".join(span["text"] for span in line["spans"]) for line in block["lines"])
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        blocks.append((*block["bbox"], text, block["number"], block["type"]))
    return blocks


def iter_text(
    source: PdfSource,
    *,
    mode: TextMode = "text",
    pages: Iterable[int] | None = None,
    password: str | None = None,
    budget: int = DEFAULT_BUDGET,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(page_number, page.get_text(mode))`` per page, streaming as :func:`render_pages`.

    ``mode="blocks"`` returns the same tuples as PyMuPDF's but is derived from
    the "dict" output, because ``get_text("blocks")`` leaks ~1.6 KB per page.
    """
    if mode not in ("text", "dict", "words", "blocks"):
        raise ConfigError(f"mode must be one of text, dict, words, blocks, got {mode!r}")
    return _text(open_pdf(source, password=password, budget=budget), mode, pages)


def _text(context: PdfContext, mode: str, pages: Iterable[int] | None) -> Iterator[tuple[int, Any]]:
    fitz = _pymupdf()
    with context as doc:
        guard = _guards[id(doc)]
        for number in _page_numbers(doc, pages):
            page: Any = doc[number]
            result = _blocks(fitz, page) if mode == "blocks" else page.get_text(mode)
            del page
            guard.check()
            yield number, result


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
    if size < 1:
        raise ConfigError(f"size must be at least 1, got {size!r}")
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        try:
            yield batch
        finally:
            if cleanup is not None:
                cleanup()
