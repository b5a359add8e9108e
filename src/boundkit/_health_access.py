"""Who may see health details: a token from the environment, or a loopback caller.

The convention of Spring Boot Actuator's ``show-details=when-authorized``:
uptime monitors get the bare ``status``; details (memory, workers, routes,
caches, pools) go to callers that present ``BOUNDKIT_HEALTH_TOKEN`` (as
``Authorization: Bearer <token>`` or ``X-Boundkit-Token: <token>``) or that
connect from the loopback interface without having come through a proxy
(no ``X-Forwarded-For``: behind a local reverse proxy every caller would
look local).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping

__all__ = ["ENV_HEALTH_TOKEN", "health_authorised"]

ENV_HEALTH_TOKEN = "BOUNDKIT_HEALTH_TOKEN"


def health_authorised(
    client: str | None,
    headers: Mapping[str, str],
    *,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Whether a caller at address ``client`` with ``headers`` (lowercase names) sees details.

    >>> health_authorised("127.0.0.1", {}, environ={})
    True
    >>> health_authorised("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, environ={})
    False
    >>> env = {"BOUNDKIT_HEALTH_TOKEN": "s3cret"}
    >>> health_authorised("203.0.113.9", {"authorization": "Bearer s3cret"}, environ=env)
    True
    >>> health_authorised("203.0.113.9", {"authorization": "Bearer guess"}, environ=env)
    False
    """
    token = (os.environ if environ is None else environ).get(ENV_HEALTH_TOKEN, "")
    if token:
        offered = headers.get("x-boundkit-token", "")
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered = offered or credentials.strip()
        if offered and hmac.compare_digest(offered.encode(), token.encode()):
            return True
    if "x-forwarded-for" in headers or "forwarded" in headers or not client:
        return False
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def wsgi_headers(environ: Mapping[str, object]) -> dict[str, str]:
    """The request headers of a WSGI ``environ`` that :func:`health_authorised` reads."""
    names = {
        "HTTP_AUTHORIZATION",
        "HTTP_X_BOUNDKIT_TOKEN",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_FORWARDED",
    }
    return {key[5:].lower().replace("_", "-"): str(environ[key]) for key in names if key in environ}


def asgi_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI ``scope["headers"]`` as a dict of lowercase names."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
