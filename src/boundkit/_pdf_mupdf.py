"""PyMuPDF glue behind :mod:`boundkit.pdf`: loading it, its messages, its errors, pixmap samples.

Nothing here imports PyMuPDF at import time; :func:`load` does, on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import logging
import re
import warnings
from typing import Any

__all__ = [
    "MupdfMessages",
    "drop_samples",
    "installed_distributions",
    "load",
    "missing_error",
    "own_samples",
    "reason",
    "repair_advice",
]

#: MuPDF's own warning and error lines, one record each (they used to go to stdout).
mupdf_logger = logging.getLogger("boundkit.pdf.mupdf")

#: The two PyPI distributions that install the ``pymupdf`` package.
DISTRIBUTIONS = ("pymupdf", "pymupdf-lite")


def installed_distributions() -> dict[str, str]:
    """The distributions of :data:`DISTRIBUTIONS` that pip has installed, with their versions."""
    found = {}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def repair_advice(found: dict[str, str]) -> str:
    """What to run for the installed ``found`` (from :func:`installed_distributions`)."""
    if not found:
        return "boundkit.pdf needs the 'pdf' extra: pip install 'boundkit[pdf]'"
    if len(found) == 1:
        ((name, version),) = found.items()
        return (
            f"{name} {version} is installed but its files are incomplete (another distribution "
            f"of pymupdf was uninstalled over it?): pip install --force-reinstall --no-deps "
            f"'{name}=={version}'"
        )
    full, lite = found["pymupdf"], found["pymupdf-lite"]
    return (
        f"pymupdf {full} and pymupdf-lite {lite} are both installed and share the same files, "
        f"so uninstalling either breaks the other; keep one. To keep pymupdf (something else "
        f"needs it): pip uninstall -y pymupdf-lite && pip install --force-reinstall --no-deps "
        f"'pymupdf=={full}', and install boundkit without the [pdf] extra. To keep "
        f"pymupdf-lite: pip uninstall -y pymupdf && pip install --force-reinstall --no-deps "
        f"'pymupdf-lite=={lite}'"
    )


def load() -> Any:
    """Import and return ``pymupdf``, whichever distribution installed it.

    A failed import raises an :class:`ImportError` naming the repair for the
    installed state; both distributions installed at once gives a
    :class:`RuntimeWarning` with the repair, once.
    """
    if _loaded:
        return _loaded[0]
    found = installed_distributions()
    try:
        import pymupdf
    except ImportError as exc:
        raise missing_error(found) from exc
    if not hasattr(pymupdf, "open"):  # what an uninstall leaves imports as an empty namespace
        raise missing_error(found)
    if len(found) > 1:
        warnings.warn(repair_advice(found), RuntimeWarning, stacklevel=3)
    _loaded.append(pymupdf)
    return pymupdf


def missing_error(found: dict[str, str]) -> ImportError:
    """The ImportError for a ``pymupdf`` that cannot be imported, given the installed ``found``.

    Its ``name`` is ``"pymupdf"`` only when no distribution is installed, so
    ``boundkit``'s lazy names, which turn that into "needs the 'pdf' extra",
    keep the repair advice otherwise.
    """
    return ImportError(repair_advice(found), name=None if found else "pymupdf")


_loaded: list[Any] = []  # pymupdf, once load() has imported it and checked the distributions


class MupdfMessages:
    """Moves MuPDF's warning and error lines from PyMuPDF's process-wide list to open contexts.

    PyMuPDF appends every MuPDF warning and error to one list and prints the
    errors to stdout. While any context is open, the printing is off
    (``TOOLS.mupdf_display_errors``, restored when the last context closes),
    and :meth:`drain` moves the lines into every open context's list (at
    most ``limit`` each) and logs each on ``boundkit.pdf.mupdf``. Contexts may
    close in any order, as interleaved generators do.
    """

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._open: list[list[str]] = []
        self._display = True

    def open(self, fitz: Any) -> list[str]:
        """Start collecting for a new context; returns its list of lines."""
        if self._open:
            self.drain(fitz)
        else:
            self._display = fitz.TOOLS.mupdf_display_errors()
            fitz.TOOLS.mupdf_display_errors(False)
            fitz.TOOLS.mupdf_warnings(reset=True)  # lines from before belong to no context
        lines: list[str] = []
        self._open.append(lines)
        return lines

    def drain(self, fitz: Any) -> None:
        """Move the lines MuPDF wrote since the last drain to the open contexts and the log."""
        text: str = fitz.TOOLS.mupdf_warnings(reset=True)
        for line in text.splitlines():
            mupdf_logger.warning("%s", line)
            for lines in self._open:
                if len(lines) < self.limit:
                    lines.append(line)
                elif len(lines) == self.limit:
                    lines.append(f"(more lines went to the {mupdf_logger.name!r} log only)")

    def close(self, fitz: Any, lines: list[str]) -> None:
        """Drain, then stop collecting into ``lines``."""
        self.drain(fitz)
        self._open = [other for other in self._open if other is not lines]
        if not self._open:
            fitz.TOOLS.mupdf_display_errors(self._display)


_CODE = re.compile(r"^code=\d+: ")


def reason(exc: BaseException) -> str:
    """MuPDF's own words for ``exc``: the innermost message of its chain, without the code.

    PyMuPDF wraps MuPDF's error (``unknown encryption handler``) in its own
    (``Failed to open stream``); the innermost one says why.
    """
    words = str(exc)
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if str(current):
            words = str(current)
        current = current.__cause__ or current.__context__
    return _CODE.sub("", words)


@functools.lru_cache(maxsize=16)
def _samples_type(length: int) -> Any:
    """A ctypes array type of ``length`` bytes whose instances take attributes.

    Made with the metaclass directly, not ``c_ubyte * length``, whose cache keeps
    every length ever asked for; this one keeps 16.
    """
    array_type: Any = type(ctypes.Array)
    return array_type(
        "PixmapSamples", (ctypes.Array,), {"_type_": ctypes.c_ubyte, "_length_": length}
    )


def own_samples(fitz: Any, pix: Any) -> None:
    """Make ``pix.samples_mv`` a view that keeps the samples alive as long as any view does.

    PyMuPDF's own view points at memory the pixmap frees, so a numpy array or a
    slice made from it dangles once the pixmap goes. This view's buffer belongs
    to a ctypes array that holds MuPDF's pixmap, so arrays, slices and copies of
    the view keep the samples (and only them) alive, and they are freed when
    the last one goes.
    """
    native = pix.this
    length = pix.stride * pix.height
    if length <= 0:
        return
    address = fitz.mupdf.fz_pixmap_samples_int(native)
    buffer = _samples_type(length).from_address(address)
    buffer.pixmap = native
    pix._samples_mv = memoryview(buffer).cast("B")


def drop_samples(pix: Any) -> None:
    """Make ``pix`` unusable and drop its reference to MuPDF's pixmap.

    The samples are freed now unless a view from :func:`own_samples` (or
    anything made from one) still holds them.
    """
    pix._samples_mv = None
    pix.this = None
