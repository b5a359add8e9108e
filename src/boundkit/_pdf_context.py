"""The context :func:`boundkit.pdf.open_pdf` returns: one document, its MuPDF lines and repairs.

Public through :mod:`boundkit.pdf`, which holds the functions built on it.
"""

from __future__ import annotations

import errno
import logging
import os
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Union

from ._pdf_memory import _Guard, _shrink_store, _trim_heap, _watch
from ._pdf_mupdf import MupdfMessages, load, reason
from ._sizes import parse_bytes
from ._window import check_count
from .errors import (
    PdfError,
    PdfPageError,
    PdfPasswordError,
    PdfWrongPasswordError,
    ResourceClosedError,
)

if TYPE_CHECKING:
    import pymupdf

__all__ = [
    "DEFAULT_BUDGET",
    "PdfContext",
    "PdfSource",
    "TextMode",
    "check_max_pixels",
    "contexts",
    "messages",
    "mupdf_errors",
    "page_error",
    "release_pdf_memory",
]

logger = logging.getLogger("boundkit.pdf")

#: Resident growth (bytes) over a document's opening that triggers the guard. The page
#: being rendered (decoded images, pixmap, output) comes on top (docs/pdf.md).
DEFAULT_BUDGET = 64 * 1024 * 1024

#: What iter_text() yields per page: plain text, or PyMuPDF's dict, words or blocks.
TextMode = Literal["text", "dict", "words", "blocks"]
PdfSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
messages = MupdfMessages()


def mupdf_errors(fitz: Any) -> tuple[type[BaseException], ...]:
    """What PyMuPDF raises for a file it cannot read (MuPDF's own errors are not RuntimeErrors)."""
    return (RuntimeError, ValueError, IndexError, fitz.mupdf.FzErrorBase)


def release_pdf_memory() -> None:
    """Empty MuPDF's process-wide store and return free heap pages to the system.

    Costs microseconds when the store is already empty; the next document
    that needs an evicted image or font decodes it again.
    """
    _shrink_store(100)  # all of it
    _trim_heap()


# id(document) -> the open_pdf context that holds it open
contexts: dict[int, PdfContext] = {}


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    return repr(name) if isinstance(name, str) else f"<{type(source).__name__}>"


def _check_source(source: object) -> None:
    readable = callable(getattr(source, "read", None))
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) and not readable:
        raise TypeError(
            "source must be a path (str or os.PathLike), bytes, bytearray, memoryview or a "
            f"binary file object with .read(), got {type(source).__name__}: {source!r:.80}"
        )


def check_max_pixels(max_pixels: object) -> int | None:
    return None if max_pixels is None else check_count("max_pixels", max_pixels)


class PdfContext:
    """The context manager :func:`open_pdf` returns; entering it yields the document.

    After the block, ``warnings`` holds MuPDF's warning and error lines from
    while it ran (nested blocks keep their own), and ``repaired`` says whether
    MuPDF had to repair the file, at open or while reading pages.
    """

    def __init__(
        self,
        source: PdfSource,
        *,
        password: str | None,
        filetype: str | None,
        budget: int | str,
        strict: bool,
        max_pixels: int | None,
        reserve: bool | int | str | None = None,
    ) -> None:
        _check_source(source)
        if reserve is None:
            from .admission import pdf_reserve_default

            reserve = pdf_reserve_default.get()
        self._source = source
        self._password = password
        self._filetype = filetype
        self.budget = parse_bytes(budget, name="budget")
        self.max_pixels = check_max_pixels(max_pixels)
        self._strict = strict
        self._reserve = reserve
        self._reservation: Any = None
        self._document: pymupdf.Document | None = None
        self._entered = False
        self._mark = 0
        self._lines: list[str] = []
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
        fitz = load()
        self._mark = _watch.older
        self._lines = messages.open(fitz)
        self._guard = _Guard(self.budget)
        try:
            if self._reserve is not False:
                from .admission import reserve_for_pdf

                self._reservation = reserve_for_pdf(self._reserve, self._guard.budget)
            self._document = self._open(fitz)
            self._check(fitz, self._document)
        except BaseException:
            self._finish(fitz, failed=True)
            raise
        contexts[id(self._document)] = self
        return self._document

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(load(), failed=exc_type is not None)

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
        except mupdf_errors(fitz) as exc:
            messages.drain(fitz)
            cause = reason(exc)
            if "encryption handler" in cause:
                raise PdfError(
                    f"cannot open {self.name}: it is encrypted for certificate holders "
                    f"(public-key security), which MuPDF does not support; no password opens "
                    f"it ({cause})"
                ) from exc
            words = "; ".join(self._lines[:2]) or cause
            kind = self._filetype or "a document"
            raise PdfError(f"cannot open {self.name} as {kind}: {words}") from exc

    def _check(self, fitz: Any, doc: Any) -> None:
        if doc.needs_pass:
            if self._password is None:
                raise PdfPasswordError(f"{self.name} is encrypted: pass password=")
            if not doc.authenticate(self._password):
                raise PdfWrongPasswordError(f"the password given does not open {self.name}")
        try:
            doc.page_count  # noqa: B018 (MuPDF counts the pages now, or fails)
        except mupdf_errors(fitz) as exc:
            raise PdfError(
                f"cannot open {self.name}: its page count is unreadable: {reason(exc)}"
            ) from exc
        self._note_repair(doc, "to open it")

    def _note_repair(self, doc: Any, when: str) -> None:
        """Record a repair MuPDF made (``when`` it was noticed); strict raises."""
        if self.repaired or not doc.is_repaired:
            return
        self.repaired = True
        if self._strict:
            raise PdfError(f"{self.name} is damaged: MuPDF had to repair it {when}")
        logger.warning("%s is damaged: MuPDF repaired it %s", self.name, when)

    def _after_page(self, doc: Any, page: int) -> None:
        """Collect MuPDF's lines, note a repair and apply the budget guard after one page."""
        messages.drain(load())
        self._note_repair(doc, f"while reading page {page}")
        self._guard.check()

    def _page_error(self, exc: BaseException, page: int) -> PdfPageError:
        """The PdfPageError for MuPDF's ``exc`` on ``page``."""
        return page_error(self.name, exc, page)

    def _finish(self, fitz: Any, *, failed: bool) -> None:
        doc: Any = self._document
        self._document = None
        damaged = None
        try:
            if doc is not None:
                contexts.pop(id(doc), None)
                if not doc.is_closed:
                    try:
                        self._note_repair(doc, "while the block read it")
                    except PdfError as exc:  # strict: raised once the document is closed
                        damaged = exc
                    doc.close()
        finally:
            del doc  # ours must go before the collection
            _watch.collect_since(self._mark)
            release_pdf_memory()
            messages.close(fitz, self._lines)
            self.warnings = tuple(self._lines)
            reservation, self._reservation = self._reservation, None
            if reservation is not None:
                reservation.__exit__(None, None, None)
        if damaged is not None and not failed:
            raise damaged

    def _page_numbers(self, doc: Any, pages: tuple[int, ...] | None) -> list[int]:
        """``pages`` as page numbers from 0 (``-1`` is the last page), checked against ``doc``."""
        count: int = doc.page_count
        if pages is None:
            return list(range(count))
        numbers = []
        for number in pages:
            if not -count <= number < count:
                raise PdfPageError(
                    f"page {number} is not in {self.name}, which has {count} pages", page=number
                )
            numbers.append(number % count)
        return numbers


def page_error(name: str, exc: BaseException, page: int) -> PdfPageError:
    """The PdfPageError for MuPDF's ``exc`` on ``page`` of the document ``name``."""
    messages.drain(load())
    return PdfPageError(f"cannot read page {page} of {name}: {reason(exc)}", page=page)


PdfContext.__module__ = "boundkit.pdf"
