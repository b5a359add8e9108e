"""The exceptions boundkit raises.

Each one also subclasses the builtin that callers already catch, so
``except ValueError`` still works around a bad setting.
"""

from __future__ import annotations

__all__ = [
    "AdmissionTimeout",
    "BoundkitError",
    "ConfigError",
    "InvalidKeyError",
    "LeakError",
    "PdfError",
    "PdfLimitError",
    "PdfPageError",
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


class PdfPageError(PdfError):
    """One page cannot be read or rendered; ``page`` is its number (0-based)."""

    def __init__(self, message: str, *, page: int | None) -> None:
        super().__init__(message)
        self.page = page

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_page_error, (type(self), str(self), self.page))


class PdfLimitError(PdfPageError):
    """A bound refused the work: too many pixels, too much memory or too much time.

    ``page`` is ``None`` when the bound was hit before any page (while opening).
    """


def _rebuild_page_error(cls: type[PdfPageError], message: str, page: int | None) -> PdfPageError:
    return cls(message, page=page)


class LeakError(BoundkitError, AssertionError):
    """Memory grew where it should not: pytest reports the test as failed."""


class AdmissionTimeout(BoundkitError, TimeoutError):
    """No room in the dyno's admission budget within the timeout.

    ``retry_after`` is the seconds a client may wait before trying again
    (the web middleware sends it as ``Retry-After`` with a 503).
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_admission_timeout, (str(self), self.retry_after))


def _rebuild_admission_timeout(message: str, retry_after: int) -> AdmissionTimeout:
    return AdmissionTimeout(message, retry_after=retry_after)


for _cls in (
    BoundkitError,
    ConfigError,
    ResourceClosedError,
    PdfError,
    PdfPasswordError,
    PdfWrongPasswordError,
    PdfPageError,
    PdfLimitError,
    LeakError,
    AdmissionTimeout,
):
    _cls.__module__ = "boundkit"
del _cls


class WatchTargetError(BoundkitError, RuntimeError):
    """``boundkit watch`` cannot read its target: a dead pid or an unreachable URL."""


class HealthFormatError(WatchTargetError, ValueError):
    """A health URL answered with something other than boundkit's JSON health payload."""


__all__ += ["HealthFormatError", "WatchTargetError"]
WatchTargetError.__module__ = HealthFormatError.__module__ = "boundkit"


class InvalidKeyError(BoundkitError, TypeError, ValueError):
    """A cache key of the wrong type, or one the cache is not set up to hold."""


InvalidKeyError.__module__ = "boundkit"
