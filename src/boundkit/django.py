"""Django integration: a middleware and a health view sharing one :class:`~boundkit.WebMonitor`.

In ``settings.py`` add ``"boundkit.django.MemoryGuardMiddleware"`` to
``MIDDLEWARE``, and in ``urls.py`` route the view::

    from boundkit.django import health

    urlpatterns = [path("health", health), ...]

Both use :func:`boundkit.web.default_monitor`; Django itself is imported only
when the health view answers. The cache backend
``"boundkit.django.BoundedCacheBackend"`` (for ``CACHES``) is loaded on
first use from :mod:`boundkit._django_cache`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import AdmissionTimeout
from .web import WebMonitor, default_monitor

if TYPE_CHECKING:
    from ._django_cache import BoundedCacheBackend

__all__ = ["BoundedCacheBackend", "MemoryGuardMiddleware", "health"]


def __getattr__(name: str) -> Any:
    if name == "BoundedCacheBackend":  # loaded here, so that importing this module skips Django
        from ._django_cache import BoundedCacheBackend

        return BoundedCacheBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _route(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    return str(route) if route else str(request.path)


class MemoryGuardMiddleware:
    """Check memory and record each request's time and status in the monitor.

    Requests are named by their URL pattern (``items/<int:pk>``) when one
    matched, else by path. Set the class attribute ``monitor`` in a subclass
    to use another :class:`~boundkit.WebMonitor`.
    """

    monitor: WebMonitor | None = None

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._monitor = self.monitor if self.monitor is not None else default_monitor()

    def __call__(self, request: Any) -> Any:
        monitor = self._monitor
        started = monitor.start()
        status = 500
        try:
            response = self.get_response(request)
            status = int(response.status_code)
            return response
        finally:
            monitor.finish(_route(request), started, status)

    def process_exception(self, request: Any, exception: Exception) -> Any:
        """Answer a view's :class:`~boundkit.AdmissionTimeout` with 503 and ``Retry-After``."""
        if not isinstance(exception, AdmissionTimeout):
            return None
        http = importlib.import_module("django.http")
        busy = {"error": "busy", "retry_after": exception.retry_after}
        response = http.JsonResponse(busy, status=503)
        response["Retry-After"] = str(exception.retry_after)
        return response


def health(request: Any) -> Any:
    """Answer with the default monitor's health payload as JSON (a Django view)."""
    http = importlib.import_module("django.http")  # Django ships no type hints
    response = http.JsonResponse(default_monitor().health())
    response["Cache-Control"] = "no-store"
    return response
