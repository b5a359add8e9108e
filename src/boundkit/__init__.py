"""boundkit: keep a long-running Python process inside a fixed memory budget.

Every public name is importable from here. Names are loaded on first use, so
``import boundkit`` stays cheap and never imports psycopg or PyMuPDF; a name
whose optional extra is missing raises an ImportError that names the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._extras import NEEDS_EXTRA, raise_if_extra_missing
from .errors import (
    AdmissionTimeout,
    BoundkitError,
    ConfigError,
    InvalidKeyError,
    LeakError,
    PdfError,
    PdfLimitError,
    PdfPageError,
    PdfPasswordError,
    PdfWrongPasswordError,
    ResourceClosedError,
)

if TYPE_CHECKING:
    from ._sizes import estimate_size, format_bytes, parse_bytes
    from .admission import Admission, reserve
    from .cache import BoundedCache, CacheStats, cached
    from .guard import MemoryGuard
    from .memory import (
        DynoMemory,
        MemoryLimit,
        ProcessMemory,
        dyno_memory,
        memory_limit,
        memory_snapshot,
        process_memory,
        trim_memory,
    )
    from .metrics import BoundedCounter, QuantileSketch, RequestStats, RollingWindow
    from .pdf import (
        PdfContext,
        batched,
        iter_text,
        open_pdf,
        pixmap,
        release_pdf_memory,
        render_pages,
    )
    from .pdf_isolated import (
        IsolatedPages,
        close_isolated_workers,
        isolated_iter_text,
        isolated_render_pages,
    )
    from .pg import (
        PooledConnection,
        close_pools,
        create_pool,
        pool_stats,
        pooled_connection,
        release_idle,
    )
    from .pg_async import (
        AsyncPooledConnection,
        aclose_pools,
        acreate_pool,
        apool_stats,
        apooled_connection,
    )
    from .scope import MemoryDelta, memory_scope, monitor_memory
    from .testing import (
        GrowthAttempt,
        GrowthReport,
        aassert_no_growth,
        ameasure_growth,
        assert_no_growth,
        measure_growth,
    )
    from .web import ASGIMiddleware, WebMonitor, WSGIMiddleware

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "ASGIMiddleware": "boundkit.web",
    "AsyncPooledConnection": "boundkit.pg_async",
    "BoundedCache": "boundkit.cache",
    "BoundedCounter": "boundkit.metrics",
    "CacheStats": "boundkit.cache",
    "GrowthAttempt": "boundkit.testing",
    "GrowthReport": "boundkit.testing",
    "IsolatedPages": "boundkit.pdf_isolated",
    "MemoryDelta": "boundkit.scope",
    "MemoryGuard": "boundkit.guard",
    "MemoryLimit": "boundkit.memory",
    "DynoMemory": "boundkit.memory",
    "dyno_memory": "boundkit.memory",
    "PdfContext": "boundkit.pdf",
    "PooledConnection": "boundkit.pg",
    "ProcessMemory": "boundkit.memory",
    "QuantileSketch": "boundkit.metrics",
    "RequestStats": "boundkit.metrics",
    "RollingWindow": "boundkit.metrics",
    "WSGIMiddleware": "boundkit.web",
    "WebMonitor": "boundkit.web",
    "aassert_no_growth": "boundkit.testing",
    "aclose_pools": "boundkit.pg_async",
    "acreate_pool": "boundkit.pg_async",
    "ameasure_growth": "boundkit.testing",
    "apool_stats": "boundkit.pg_async",
    "apooled_connection": "boundkit.pg_async",
    "assert_no_growth": "boundkit.testing",
    "batched": "boundkit.pdf",
    "cached": "boundkit.cache",
    "close_isolated_workers": "boundkit.pdf_isolated",
    "close_pools": "boundkit.pg",
    "create_pool": "boundkit.pg",
    "estimate_size": "boundkit._sizes",
    "format_bytes": "boundkit._sizes",
    "isolated_iter_text": "boundkit.pdf_isolated",
    "isolated_render_pages": "boundkit.pdf_isolated",
    "iter_text": "boundkit.pdf",
    "measure_growth": "boundkit.testing",
    "memory_limit": "boundkit.memory",
    "memory_scope": "boundkit.scope",
    "memory_snapshot": "boundkit.memory",
    "monitor_memory": "boundkit.scope",
    "open_pdf": "boundkit.pdf",
    "parse_bytes": "boundkit._sizes",
    "pixmap": "boundkit.pdf",
    "pool_stats": "boundkit.pg",
    "pooled_connection": "boundkit.pg",
    "process_memory": "boundkit.memory",
    "release_idle": "boundkit.pg",
    "release_pdf_memory": "boundkit.pdf",
    "render_pages": "boundkit.pdf",
    "trim_memory": "boundkit.memory",
    "Admission": "boundkit.admission",
    "reserve": "boundkit.admission",
}

__all__ = [
    "ASGIMiddleware",
    "Admission",
    "AdmissionTimeout",
    "AsyncPooledConnection",
    "BoundedCache",
    "BoundedCounter",
    "BoundkitError",
    "CacheStats",
    "ConfigError",
    "DynoMemory",
    "GrowthAttempt",
    "GrowthReport",
    "InvalidKeyError",
    "IsolatedPages",
    "LeakError",
    "MemoryDelta",
    "MemoryGuard",
    "MemoryLimit",
    "PdfContext",
    "PdfError",
    "PdfLimitError",
    "PdfPageError",
    "PdfPasswordError",
    "PdfWrongPasswordError",
    "PooledConnection",
    "ProcessMemory",
    "QuantileSketch",
    "RequestStats",
    "ResourceClosedError",
    "RollingWindow",
    "WSGIMiddleware",
    "WebMonitor",
    "__version__",
    "aassert_no_growth",
    "aclose_pools",
    "acreate_pool",
    "ameasure_growth",
    "apool_stats",
    "apooled_connection",
    "assert_no_growth",
    "batched",
    "cached",
    "close_isolated_workers",
    "close_pools",
    "create_pool",
    "dyno_memory",
    "estimate_size",
    "format_bytes",
    "isolated_iter_text",
    "isolated_render_pages",
    "iter_text",
    "measure_growth",
    "memory_limit",
    "memory_scope",
    "memory_snapshot",
    "monitor_memory",
    "open_pdf",
    "parse_bytes",
    "pixmap",
    "pool_stats",
    "pooled_connection",
    "process_memory",
    "release_idle",
    "release_pdf_memory",
    "render_pages",
    "reserve",
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
        raise_if_extra_missing(f"boundkit.{name}", exc)
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


# `from boundkit import *` gives the names that need no optional extra (and so never
# imports psycopg or PyMuPDF); the others are imported by name.
__all__ = [name for name in __all__ if _LAZY.get(name) not in NEEDS_EXTRA]


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(__all__) | set(_LAZY))
