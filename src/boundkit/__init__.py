"""boundkit: keep a long-running Python process inside a fixed memory budget.

Every public name is importable from here. Names are loaded on first use, so
``import boundkit`` stays cheap and never imports psycopg or PyMuPDF; a name
whose optional extra is missing raises an ImportError that names the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BoundkitError,
    ConfigError,
    LeakError,
    PdfError,
    PdfPasswordError,
    PdfWrongPasswordError,
    ResourceClosedError,
)

if TYPE_CHECKING:
    from ._sizes import format_bytes, parse_bytes
    from .memory import ProcessMemory, process_memory, trim_memory
    from .pdf import (
        PdfContext,
        batched,
        iter_text,
        open_pdf,
        pixmap,
        release_pdf_memory,
        render_pages,
    )
    from .testing import GrowthReport, assert_no_growth, measure_growth

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "GrowthReport": "boundkit.testing",
    "PdfContext": "boundkit.pdf",
    "ProcessMemory": "boundkit.memory",
    "assert_no_growth": "boundkit.testing",
    "batched": "boundkit.pdf",
    "format_bytes": "boundkit._sizes",
    "iter_text": "boundkit.pdf",
    "measure_growth": "boundkit.testing",
    "open_pdf": "boundkit.pdf",
    "parse_bytes": "boundkit._sizes",
    "pixmap": "boundkit.pdf",
    "process_memory": "boundkit.memory",
    "release_pdf_memory": "boundkit.pdf",
    "render_pages": "boundkit.pdf",
    "trim_memory": "boundkit.memory",
}
# third-party top-level package -> the extra that installs it
_EXTRA_OF = {"psycopg": "postgres", "psycopg_pool": "postgres", "pymupdf": "pdf", "fitz": "pdf"}

__all__ = [
    "BoundkitError",
    "ConfigError",
    "GrowthReport",
    "LeakError",
    "PdfContext",
    "PdfError",
    "PdfPasswordError",
    "PdfWrongPasswordError",
    "ProcessMemory",
    "ResourceClosedError",
    "__version__",
    "assert_no_growth",
    "batched",
    "format_bytes",
    "iter_text",
    "measure_growth",
    "open_pdf",
    "parse_bytes",
    "pixmap",
    "process_memory",
    "release_pdf_memory",
    "render_pages",
    "trim_memory",
]


def __getattr__(name: str) -> Any:
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'boundkit' has no attribute {name!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        extra = _EXTRA_OF.get(missing)
        if extra is None:
            raise
        raise ImportError(
            f"boundkit.{name} needs the {extra!r} extra: pip install 'boundkit[{extra}]'",
            name=exc.name,
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
