"""Passwords out of connection strings and URLs, for every message, repr and health payload."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["HIDDEN", "SECRET_KEYWORDS", "redact", "redact_values"]

HIDDEN = "***"
# libpq's secret keywords; ``password`` also covers Redis URLs' ``?password=``
SECRET_KEYWORDS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_KEYWORD = re.compile(
    r"((?:" + "|".join(sorted(SECRET_KEYWORDS)) + r")\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Return ``text`` with whatever looks like a password replaced by ``***``.

    Any text will do (a URL, a conninfo, an error message); a conninfo that
    libpq can parse is better served by :func:`boundkit._conninfo.redact`.

    >>> redact("postgresql://app:s3cret@db:5432/app?password=x")
    'postgresql://app:***@db:5432/app?password=***'
    >>> redact("host=db password='a b' user=app")
    'host=db password=*** user=app'
    """
    return _PASSWORD_KEYWORD.sub(rf"\1{HIDDEN}", _PASSWORD_IN_URL.sub(rf"\1{HIDDEN}@", text))


def redact_values(data: Any) -> Any:
    """Return ``data`` (JSON-like: dicts, lists, strings, numbers) with every string redacted.

    >>> redact_values({"broker": ["redis://:pw@host/0"], "tasks": 3})
    {'broker': ['redis://:***@host/0'], 'tasks': 3}
    """
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_values(key): redact_values(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_values(value) for value in data]
    return data
