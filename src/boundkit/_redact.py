"""Passwords out of connection strings, for every message, repr and health payload."""

from __future__ import annotations

import re

__all__ = ["redact"]

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact(conninfo: str) -> str:
    """Return ``conninfo`` with any password replaced by ``***``.

    >>> redact("postgresql://app:s3cret@db:5432/app?password=x")
    'postgresql://app:***@db:5432/app?password=***'
    >>> redact("host=db password='a b' user=app")
    'host=db password=*** user=app'
    """
    return _PASSWORD_KEYWORD.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", conninfo))
