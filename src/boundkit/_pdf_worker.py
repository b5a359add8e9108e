"""The child process of :mod:`boundkit.pdf_isolated` and the frames both sides exchange.

The parent writes pickled requests to the child's stdin; the child answers on
its stdout with frames: a kind byte, a length, then the payload. Page images
travel as raw bytes; everything else the child sends is a pickle of plain
values (str, bytes, numbers, lists, tuples, dicts) that the parent loads with
:func:`load_plain`, which refuses any class, so a child subverted by a hostile
file cannot make the parent run code. Errors travel as (class name, message,
page) and are rebuilt from a fixed list of boundkit errors.

Run as ``python -m boundkit._pdf_worker PROTOCOL LIMIT CGROUP PARENT_PID``.
The child exits at once when ``PROTOCOL`` is not the digest of its own source
(boundkit was upgraded under a running parent); else it joins the cgroup (or
sets ``RLIMIT_AS`` to ``LIMIT`` when ``CGROUP`` is ``-``), dies with its
parent, and serves one request after another.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import resource
import signal
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._sizes import format_bytes
from .errors import (
    ConfigError,
    PdfError,
    PdfLimitError,
    PdfPageError,
    PdfPasswordError,
    PdfWrongPasswordError,
)
from .memory import _high_water, _reset_high_water, process_memory

if TYPE_CHECKING:
    from .pdf import PageStream

HEADER = struct.Struct("!cQ")
READY = b"R"  # the worker is up: payload empty
OPENED = b"O"  # the document opened: payload = page count (8 bytes)
PAGE = b"P"  # one page: 8-byte page number, then the image bytes or a plain pickle of the text
SKIPPED = b"S"  # a page failed and was skipped: payload = plain pickle of the error
ERROR = b"E"  # the request failed: payload = plain pickle of the error; the request is over
DONE = b"D"  # the request is over: payload = USAGE (resident bytes now, peak since the request)
NOTES = b"W"  # before DONE or ERROR: plain pickle of (MuPDF's lines, whether it repaired the file)
LOG = b"L"  # a log record, sent whenever one is made: plain pickle of (logger, level, message)
NUMBER = struct.Struct("!q")
USAGE = struct.Struct("!qq")

#: The worker's exit status when its memory limit is too small to import PyMuPDF.
NO_MEMORY_STATUS = 3


def _protocol() -> str:
    """A digest of this file as imported: a worker started from an edited file refuses to serve."""
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    except OSError:  # no source file (a frozen app): nothing can change under us either
        return "frozen"


PROTOCOL = _protocol()
#: The worker's exit status when the parent speaks another protocol.
WRONG_PROTOCOL_STATUS = 4

NEXT = "next"
STOP = "stop"

_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        PdfError,
        PdfPasswordError,
        PdfWrongPasswordError,
        PdfPageError,
        PdfLimitError,
        ConfigError,
        FileNotFoundError,
    )
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}: only plain values may cross")


def load_plain(data: bytes) -> Any:
    """Unpickle ``data`` that may hold only builtin values, never a class or a function."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def encode_error(exc: BaseException) -> bytes:
    """The plain pickle of a boundkit error (or FileNotFoundError) for :func:`decode_error`."""
    page = exc.page if isinstance(exc, PdfPageError) else None
    return pickle.dumps((type(exc).__name__, str(exc), page))


def decode_error(data: bytes) -> Exception:
    """Rebuild the error :func:`encode_error` sent; unknown names become :class:`PdfError`."""
    name, message, page = load_plain(data)
    cls = _ERRORS.get(name, PdfError)
    if issubclass(cls, PdfPageError):
        return cls(message, page=page)
    return cls(message)


def write_frame(stream: IO[bytes], kind: bytes, *parts: bytes) -> None:
    """Write one frame (``kind``, then the parts as one payload) and flush."""
    stream.write(HEADER.pack(kind, sum(len(part) for part in parts)))
    for part in parts:
        stream.write(part)
    stream.flush()


# what MuPDF and the dynamic loader say when an allocation or a mapping was refused
_STARVED = ("malloc", "out of memory", "failed to map segment")


def _is_memory_failure(exc: BaseException | None) -> bool:
    """True when MuPDF or Python ran out of memory somewhere in the cause chain."""
    while exc is not None:
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or any(sign in text for sign in _STARVED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_mupdf_limit(exc: BaseException | None) -> bool:
    while exc is not None:
        if type(exc).__name__ == "FzErrorLimit":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# what holds this worker, for messages: main() sets it
_bound = "the worker's memory limit"


def typed_error(exc: Exception, page: int | None, name: str) -> Exception:
    """``exc`` as the boundkit error the parent raises: limits, page errors, or itself."""
    if _is_memory_failure(exc):
        where = f"page {page}" if page is not None else "opening"
        return PdfLimitError(f"{name}: {where} needed more than {_bound}", page=page)
    if _is_mupdf_limit(exc):
        return PdfLimitError(f"{name}: page {page} exceeds a MuPDF limit: {exc}", page=page)
    if type(exc).__name__ in _ERRORS:  # a PdfError mid-file (strict) ends it, as in-process
        return exc
    if page is None:
        return PdfError(f"cannot open {name}: {type(exc).__name__}: {exc}")
    return PdfPageError(
        f"cannot read page {page} of {name}: {type(exc).__name__}: {exc}", page=page
    )


def resolve_pages(pages: list[int] | None, count: int) -> list[int]:
    """The page numbers a request covers: all, or ``pages`` with negatives counted from the end."""
    if pages is None:
        return list(range(count))
    return [number + count if number < 0 else number for number in pages]


def _results(request: dict[str, Any], numbers: list[int]) -> PageStream[Any]:
    from . import pdf

    options = request["options"]
    if request["op"] == "render":
        return pdf.render_pages(request["source"], pages=numbers, **options)
    return pdf.iter_text(request["source"], pages=numbers, **options)


def _count_pages(source: str | bytes, options: dict[str, Any]) -> int:
    """Open the document once to count its pages, quietly: the stream's own open logs."""
    from . import pdf

    logging.disable(logging.CRITICAL)
    try:
        strict = options.get("strict", False)
        with pdf.open_pdf(source, password=options.get("password"), strict=strict) as doc:
            return int(doc.page_count)
    finally:
        logging.disable(logging.NOTSET)


class _Notes:
    """MuPDF's lines and the repair over one request's streams. A failed page ends a stream
    and the next page starts another, which opens the file again: MuPDF then says again what
    it said in the first, and those repeats are left out, as one in-process stream has them
    once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.repaired = False

    def add(self, stream: PageStream[Any]) -> None:
        """Take a finished stream's lines, less those an earlier stream of the request gave."""
        earlier = Counter(self.lines)
        for line in stream.warnings:
            if earlier[line]:
                earlier[line] -= 1
            else:
                self.lines.append(line)
        self.repaired = self.repaired or stream.repaired

    def send(self, out: IO[bytes]) -> None:
        write_frame(out, NOTES, pickle.dumps((self.lines, self.repaired), protocol=5))


def _serve(request: dict[str, Any], commands: IO[bytes], out: IO[bytes]) -> None:
    """Answer one request: OPENED, then one frame per NEXT command, then NOTES and DONE
    (or NOTES and ERROR)."""
    source, name = request["source"], request["name"]
    _reset_high_water()  # the peak DONE reports is this request's
    try:
        count = _count_pages(source, request["options"])
    except Exception as exc:
        write_frame(out, ERROR, encode_error(typed_error(exc, None, name)))
        return
    write_frame(out, OPENED, NUMBER.pack(count))
    numbers = resolve_pages(request["pages"], count)
    notes = _Notes()
    position = 0
    results: PageStream[Any] | None = None
    try:
        while pickle.load(commands) == NEXT:
            if position == len(numbers):
                if results is not None:  # run it to its end: strict may find a repair there
                    stream, results = results, None
                    try:
                        next(stream, None)
                    except Exception as exc:
                        notes.add(stream)
                        notes.send(out)
                        write_frame(out, ERROR, encode_error(typed_error(exc, None, name)))
                        return
                    notes.add(stream)
                break
            if results is None:
                results = _results(request, numbers[position:])
            try:
                number, value = next(results)
            except Exception as exc:
                notes.add(results)
                results = None
                error = typed_error(exc, numbers[position], name)
                position += 1
                if not request["skip"] or not isinstance(error, PdfPageError):
                    notes.send(out)
                    write_frame(out, ERROR, encode_error(error))
                    return
                write_frame(out, SKIPPED, encode_error(error))
                continue
            position += 1
            data = value if request["op"] == "render" else pickle.dumps(value, protocol=5)
            write_frame(out, PAGE, NUMBER.pack(number), data)
    finally:
        if results is not None:
            results.close()
            notes.add(results)
    notes.send(out)
    rss = process_memory().rss
    write_frame(out, DONE, USAGE.pack(rss, _high_water() or rss))


class _ForwardHandler(logging.Handler):
    """Send the worker's log records to the parent, which logs them under the same logger."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        message = pickle.dumps((record.name, record.levelno, record.getMessage()))
        write_frame(self._out, LOG, message)


def _bind_to_parent(parent_pid: int) -> None:
    """Die with the parent (Linux ``PR_SET_PDEATHSIG``), and exit now if it is already gone."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)


def _bound_memory(limit: int, cgroup: str) -> None:
    if cgroup != "-":
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    else:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> None:
    """Serve requests from stdin until it closes (the parent closed it or died)."""
    protocol, limit, cgroup, parent_pid = argv or sys.argv[1:]
    if protocol != PROTOCOL:
        sys.exit(WRONG_PROTOCOL_STATUS)
    _bind_to_parent(int(parent_pid))
    _bound_memory(int(limit), cgroup)
    global _bound
    _bound = (
        f"memory_limit={format_bytes(int(limit))} ({'RLIMIT_AS' if cgroup == '-' else 'cgroup'})"
    )
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints (MuPDF's own messages) must not corrupt the frames
    commands = sys.stdin.buffer
    try:
        import pymupdf
    except (MemoryError, ImportError) as exc:
        if _is_memory_failure(exc):
            os._exit(NO_MEMORY_STATUS)
        raise
    tools: Any = pymupdf.TOOLS
    tools.mupdf_display_errors(False)  # MuPDF's messages stay in the warnings open_pdf collects
    tools.mupdf_display_warnings(False)
    logging.getLogger().addHandler(_ForwardHandler(out))
    write_frame(out, READY)
    while True:
        try:
            request = pickle.load(commands)
        except EOFError:
            return
        _serve(request, commands, out)


if __name__ == "__main__":
    main()
