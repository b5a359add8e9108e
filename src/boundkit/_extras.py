"""Which optional extra installs which dependency, and the error that names it."""

from __future__ import annotations

# third-party top-level package -> the extra that installs it
EXTRA_OF = {"psycopg": "postgres", "psycopg_pool": "postgres", "pymupdf": "pdf", "fitz": "pdf"}
# boundkit modules that import an extra's package at the top
NEEDS_EXTRA = frozenset({"boundkit.pdf", "boundkit.pg", "boundkit.pg_async"})


def missing_extra(what: str, exc: ImportError) -> ImportError | None:
    """The error for ``what`` (a module or name) when ``exc`` is a missing extra, else None.

    It is a ``ModuleNotFoundError`` naming the extra and the ``pip`` command,
    with ``name`` kept from ``exc`` so an outer import can name its own path.
    """
    extra = EXTRA_OF.get((exc.name or "").partition(".")[0])
    if extra is None:
        return None
    return ModuleNotFoundError(
        f"{what} needs the {extra!r} extra: pip install 'boundkit[{extra}]'", name=exc.name
    )
