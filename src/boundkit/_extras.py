"""Which optional extra installs which dependency, and the error that names it."""

from __future__ import annotations

# third-party top-level package -> the extra that installs it
EXTRA_OF = {
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "pymupdf": "pdf",
    "fitz": "pdf",
    "celery": "celery",
}
# boundkit modules that import an extra's package at the top
NEEDS_EXTRA = frozenset({"boundkit.celery", "boundkit.pdf", "boundkit.pg", "boundkit.pg_async"})


def raise_if_extra_missing(what: str, exc: ImportError) -> None:
    """Raise the error for ``what`` (a module or name) if ``exc`` is a missing extra.

    It is a ``ModuleNotFoundError`` naming the extra and the ``pip`` command,
    with ``name`` kept from ``exc`` so an outer import can name its own path,
    raised from the original error. Returns when ``exc`` is something else.
    """
    extra = EXTRA_OF.get((exc.name or "").partition(".")[0])
    if extra is not None:
        raise ModuleNotFoundError(
            f"{what} needs the {extra!r} extra: pip install 'boundkit[{extra}]'", name=exc.name
        ) from exc.__cause__ or exc
