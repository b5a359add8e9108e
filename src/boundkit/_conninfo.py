"""Where a conninfo keeps its secrets, and how to show it (or libpq's words on it) without them.

A conninfo is read here as libpq reads it (``key=value`` pairs, or a
``postgresql://`` URI), to find the exact span of every secret value:
``password`` and the other secret keywords. :func:`check_conninfo` refuses,
with a :class:`~boundkit.ConfigError` that quotes none of the string, a
conninfo libpq cannot parse, or one where libpq would read part of what looks
like a password as another field (an ``@`` or ``?`` inside a URI's password).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote, unquote

from ._redact import HIDDEN, SECRET_KEYWORDS
from ._redact import redact as _hide_patterns
from .errors import ConfigError

_URI_PREFIXES = ("postgresql://", "postgres://")
_SPACE = " \t\n\r\f\v"  # C isspace(), as libpq's parser uses it
# a secret shorter than this is not searched for in free text (it would hide ordinary words)
_MIN_SCRUBBED = 4


class Secret(NamedTuple):
    """One secret value in a conninfo: its span in the string and its value as libpq reads it."""

    keyword: str
    start: int
    end: int
    value: str


class _Unparsable(Exception):
    pass


def _keyword_secrets(conninfo: str) -> list[Secret]:
    # libpq's conninfo_parse(), step for step, keeping the spans of the secret values
    found: list[Secret] = []
    i, n = 0, len(conninfo)
    while i < n:
        if conninfo[i] in _SPACE:
            i += 1
            continue
        name_start = i
        while i < n and conninfo[i] != "=" and conninfo[i] not in _SPACE:
            i += 1
        name = conninfo[name_start:i]
        while i < n and conninfo[i] in _SPACE:
            i += 1
        if i >= n or conninfo[i] != "=":
            raise _Unparsable
        i += 1
        while i < n and conninfo[i] in _SPACE:
            i += 1
        value_start = i
        value: list[str] = []
        if i < n and conninfo[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _Unparsable
                if conninfo[i] == "\\":
                    i += 1
                    if i < n:
                        value.append(conninfo[i])
                        i += 1
                    continue
                if conninfo[i] == "'":
                    i += 1
                    break
                value.append(conninfo[i])
                i += 1
        else:
            while i < n and conninfo[i] not in _SPACE:
                if conninfo[i] == "\\":
                    i += 1
                    if i < n:
                        value.append(conninfo[i])
                        i += 1
                else:
                    value.append(conninfo[i])
                    i += 1
        if name in SECRET_KEYWORDS:
            found.append(Secret(name, value_start, i, "".join(value)))
    return found


def _uri_secrets(conninfo: str, start: int) -> list[Secret]:
    # libpq's conninfo_uri_parse_options(): user info ends at the first "@",
    # unless a "/" comes first; the password is what follows its first ":"
    n = len(conninfo)
    at = start
    while at < n and conninfo[at] not in "@/":
        at += 1
    found: list[Secret] = []
    after = start
    if at < n and conninfo[at] == "@":
        userinfo = conninfo[start:at]
        if "?" in userinfo:  # libpq reads "h?password=x" as a user name
            raise _Unparsable
        colon = conninfo.find(":", start, at)
        if colon != -1:
            found.append(Secret("password", colon + 1, at, unquote(conninfo[colon + 1 : at])))
        after = at + 1
    query = conninfo.find("?", after)
    if "@" in conninfo[after : n if query == -1 else query]:
        raise _Unparsable  # libpq would read the rest of a password as host or database
    if query != -1:
        offset = query + 1
        for param in conninfo[query + 1 :].split("&"):
            key, equals, _ = param.partition("=")
            if equals and unquote(key) in SECRET_KEYWORDS:
                value_start = offset + len(key) + 1
                value_end = offset + len(param)
                raw = conninfo[value_start:value_end]
                found.append(Secret(unquote(key), value_start, value_end, unquote(raw)))
            offset += len(param) + 1
    return found


def find_secrets(conninfo: str) -> list[Secret] | None:
    """Every secret value in ``conninfo`` in order, or ``None`` when its layout is unclear.

    >>> [s.value for s in find_secrets("host=db password='a b' user=app")]
    ['a b']
    >>> [s.value for s in find_secrets("postgresql://app:s%40t@db/app")]
    ['s@t']
    >>> find_secrets("postgresql://app:s@t@db/app") is None  # "t@db" would be the host
    True
    """
    try:
        for prefix in _URI_PREFIXES:
            if conninfo.startswith(prefix):
                return _uri_secrets(conninfo, len(prefix))
        return _keyword_secrets(conninfo)
    except _Unparsable:
        return None


def redact(conninfo: str) -> str:
    """Return ``conninfo`` with every secret value replaced by ``***``.

    >>> redact("postgresql://app:s3cret@db:5432/app?password=x")
    'postgresql://app:***@db:5432/app?password=***'
    >>> redact("host=db password='a b' user=app")
    'host=db password=*** user=app'
    """
    secrets = find_secrets(conninfo)
    if secrets is None:
        return _hide_patterns(conninfo)
    shown, last = [], 0
    for secret in secrets:
        shown += [conninfo[last : secret.start], HIDDEN]
        last = secret.end
    shown.append(conninfo[last:])
    return "".join(shown)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` (an error message, say) with ``secrets`` and anything password-like hidden."""
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return _hide_patterns(text)


def _parse_problem(message: str, conninfo: str, keywords: set[str]) -> str:
    # libpq quotes pieces of the string it could not parse: hide every piece
    # longer than one character that is not one of the (plain) ``keywords``. A piece may itself hold
    # '"': take the longest quoted run that is a part of the conninfo.
    shown, i = [], 0
    while (opening := message.find('"', i)) != -1:
        closings = [e for e in range(len(message) - 1, opening, -1) if message[e] == '"']
        if not closings:
            shown.append(message[i : opening + 1] + HIDDEN)
            i = len(message)
            break
        end = next((e for e in closings if message[opening + 1 : e] in conninfo), closings[-1])
        piece = message[opening + 1 : end]
        safe = len(piece) <= 1 or piece in keywords
        shown.append(message[i : opening + 1] + (piece if safe else HIDDEN) + '"')
        i = end + 1
    shown.append(message[i:])
    return " ".join("".join(shown).split())


def check_conninfo(conninfo: str) -> tuple[str, ...]:
    """Refuse a conninfo whose secrets could be misplaced; return the strings to hide.

    Raises :class:`~boundkit.ConfigError` quoting no part of ``conninfo`` when
    libpq cannot parse it or when its secrets are not where libpq would read
    them. Returns every secret value, as written and as read, for
    :func:`scrub`.
    """
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    problem = None
    try:
        parsed = conninfo_to_dict(conninfo)
    except Exception as exc:  # psycopg.ProgrammingError: libpq cannot parse it
        keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
        problem = _parse_problem(str(exc), conninfo, keywords - SECRET_KEYWORDS)
    if problem is not None:  # raised outside the except: no __context__ holding the string
        raise ConfigError(f"invalid conninfo (not shown: it may hold a password): {problem}")
    secrets = find_secrets(conninfo)
    read = {key: str(value) for key, value in parsed.items() if key in SECRET_KEYWORDS}
    if (
        secrets is None
        or read != {s.keyword: s.value for s in secrets}
        or _hide_patterns(shown := redact(conninfo)) != shown  # "user=upassword=x"
    ):
        raise ConfigError(
            "conninfo not accepted (not shown: it may hold a password): libpq would read part "
            "of a password as another field (a space missing between key=value pairs? in a "
            "postgresql:// URI percent-encode '@' as %40, '/' as %2F, '?' as %3F in the password)"
        )
    hidden = {conninfo[s.start : s.end] for s in secrets} | {s.value for s in secrets}
    hidden |= {quote(s.value, safe="") for s in secrets}
    return tuple(sorted((s for s in hidden if len(s) >= _MIN_SCRUBBED), key=len, reverse=True))
