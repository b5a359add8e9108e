"""The exceptions boundkit raises.

Each one also subclasses the builtin that callers already catch, so
``except ValueError`` still works around a bad setting.
"""

from __future__ import annotations

__all__ = [
    "BoundkitError",
    "ConfigError",
    "LeakError",
    "PdfError",
    "PdfPasswordError",
    "PdfWrongPasswordError",
    "ResourceClosedError",
]


class BoundkitError(Exception):
    """Base class of every error boundkit raises itself."""


class ConfigError(BoundkitError, ValueError):
    """A bound, size, threshold or environment value is invalid."""


class ResourceClosedError(BoundkitError, RuntimeError):
    """A pool, connection, document or monitor was used after it was closed."""


class PdfError(BoundkitError):
    """A document cannot be opened or read (corrupt, empty, not a PDF)."""


class PdfPasswordError(PdfError):
    """The document is encrypted and no password was given."""


class PdfWrongPasswordError(PdfPasswordError):
    """The password given does not open the document."""


class LeakError(BoundkitError, AssertionError):
    """Memory grew where it should not: pytest reports the test as failed."""


for _cls in (
    BoundkitError,
    ConfigError,
    ResourceClosedError,
    PdfError,
    PdfPasswordError,
    PdfWrongPasswordError,
    LeakError,
):
    _cls.__module__ = "boundkit"
del _cls
