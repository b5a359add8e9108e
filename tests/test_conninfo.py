"""A conninfo's password never shows, whatever the string: well-formed, mangled or unparsable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from boundkit import ConfigError, MemoryGuard, WebMonitor  # noqa: E402
from boundkit.pg import create_pool, pool_stats, pooled_connection  # noqa: E402
from boundkit.pg_async import acreate_pool, apooled_connection  # noqa: E402
from fix_pg import refused_port  # noqa: E402

CORE = "Zq7Kx9"  # in every generated password: it must never show
# characters that break conninfo syntax, and letters that spell no libpq keyword
NASTY = st.text(alphabet="@:/=' \"\\%?&#,[]xyQ\t", max_size=6)
PASSWORDS = st.builds(lambda a, b: a + CORE + b, NASTY, NASTY)


def _escaped(password: str) -> str:
    return password.replace("\\", "\\\\").replace("'", "\\'")


# how a user writes a password into a conninfo: right, or wrong in the usual ways
FORMS = [
    "host={host} port={port} user=app password={pw} dbname=db",
    "host={host} port={port} user=app password='{pw}' dbname=db",
    "host={host} port={port} user=app password='{escaped}' dbname=db",
    "host={host} port={port} user=app password = {pw}",
    "host={host} port={port} user=apppassword={pw}dbname=db",
    "host={host} port={port} user=app password='{pw} dbname=db",
    "host={host} port={port} sslpassword={pw} user=app",
    "postgresql://app:{pw}@{host}:{port}/db",
    "postgresql://app:{encoded}@{host}:{port}/db",
    "postgresql://app:{encoded}@{host}:{port}/db?password={pw}",
    "postgresql://app@{host}:{port}/db?password={encoded}",
    "postgresql://app@{host}:{port}/db?password={pw}&sslmode=disable",
    "postgres:/app:{pw}@{host}:{port}/db",
    "postgres//app:{encoded}@{host}:{port}/db",
    "app:{pw}@{host}:{port}/db",
    "postgresql://app::{pw}@@{host}:{port}/db",
    "postgresql://{host}:{port}/db password={pw}",
    "{pw}",
]


def _dsn(form: str, password: str, port: int) -> str:
    return form.format(
        host="127.0.0.1",
        port=port,
        pw=password,
        escaped=_escaped(password),
        encoded=quote(password, safe=""),
    )


def _shown(exc: BaseException) -> str:
    """Everything an exception can show: str, repr, the whole formatted chain."""
    chain = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    seen, links = [], exc
    while links is not None and links not in seen:
        seen.append(links)
        links = links.__cause__ or links.__context__
    return "\n".join([chain, *(f"{e!s} {e!r}" for e in seen)])


@pytest.fixture
def port() -> Iterator[int]:
    """A local port that refuses connections: a pool there fails at once."""
    with refused_port() as number:
        yield number


@pytest.mark.parametrize(
    "dsn",
    [
        "postgres:/u:s3cr3tPw@127.0.0.1/db",
        "u:s3cr3tPw@127.0.0.1/db",
        "postgresql://u:s3cr3tPw@1.2.3.4@127.0.0.1/db",
        "host=127.0.0.1 user=upassword=s3cr3tPw",
        "host=127.0.0.1 password='s3cr3tPw",
        "host=127.0.0.1 s3cr3tPw=1",
    ],
)
def test_a_malformed_conninfo_is_refused_without_its_password(dsn, caplog):
    """The issue's strings (and kin) raise ConfigError quoting no part of the password."""
    with pytest.raises(ConfigError) as info, pooled_connection(dsn):
        pass  # pragma: no cover
    assert "s3cr3tPw" not in _shown(info.value) + caplog.text
    assert "not shown: it may hold a password" in str(info.value)


def test_the_refusal_keeps_libpqs_reason():
    """The ConfigError still says what libpq found wrong, minus the quoted piece."""
    with pytest.raises(ConfigError) as info:
        create_pool("u:s3cr3tPw@127.0.0.1/db")
    assert str(info.value).endswith('missing "=" after "***" in connection info string')
    with pytest.raises(ConfigError, match='invalid connection option "\\*\\*\\*"'):
        create_pool("host=127.0.0.1 passwrd=x")  # "password=a b=c": the piece may be a password


@pytest.mark.parametrize(
    ("dsn", "shown", "values"),
    [
        ("host=db password='a bc' user=app", "host=db password=*** user=app", ["a bc"]),
        ("host=db password=a\\ bc user=app", "host=db password=*** user=app", ["a bc"]),
        (
            "postgresql://app:s%40te@db/app?password=xyzw",
            "postgresql://app:***@db/app?password=***",
            ["s@te", "xyzw"],
        ),
        (
            "postgresql://app@db/app?sslpassword=k%20ey&port=1",
            "postgresql://app@db/app?sslpassword=***&port=1",
            ["k ey"],
        ),
    ],
)
def test_redact_replaces_exactly_the_secret_values(dsn, shown, values):
    """redact() hides every secret value libpq reads, quotes, escapes and encodings included."""
    from boundkit._conninfo import check_conninfo, find_secrets, redact  # private helpers

    assert shown == redact(dsn)
    assert values == [secret.value for secret in find_secrets(dsn)]
    assert set(values) <= set(check_conninfo(dsn))  # accepted, and hidden in libpq's messages


def over_mangled_dsns(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run a test (taking ``dsn`` and a refused ``port``) over generated passwords in FORMS."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(form=st.sampled_from(FORMS), password=PASSWORDS)
        def run(form: str, password: str, port: int, caplog: pytest.LogCaptureFixture) -> None:
            caplog.clear()
            with caplog.at_level(logging.DEBUG):
                test(_dsn(form, password, port), caplog)

        # name and docstring only: with functools.wraps pytest would read test's signature
        run.__name__, run.__doc__ = test.__name__, test.__doc__
        return run

    return decorate


@over_mangled_dsns(examples=300)
def test_no_conninfo_shows_its_password(dsn, caplog):
    """Whatever the form, the password never shows: errors, chains, reprs, stats, health, logs."""
    name = f"prop-{uuid.uuid4().hex[:8]}"
    shown = []
    try:
        pool = create_pool(dsn, name=name, timeout=0.2)
    except ConfigError as exc:
        shown.append(_shown(exc))
        with pytest.raises(ConfigError) as again, pooled_connection(dsn):
            pass  # pragma: no cover
        shown.append(_shown(again.value))
    else:
        try:
            monitor = WebMonitor(guard=MemoryGuard(limit="64G"))
            shown += [repr(pool), str(pool_stats()), monitor.health_body().decode()]
        finally:
            pool.close()
    shown.append(caplog.text)
    assert CORE not in "\n".join(shown)


@over_mangled_dsns(examples=25)
def test_no_failed_connection_shows_its_password(dsn, caplog):
    """A pool that cannot connect (sync and async) raises and logs without the password."""
    with contextlib.suppress(ConfigError):  # refused: the test above covers it
        shown = []
        pool = create_pool(dsn, timeout=0.8, connect_timeout=1)
        try:
            with pytest.raises(psycopg.OperationalError) as info, pooled_connection(pool=pool):
                pass  # pragma: no cover
            shown.append(_shown(info.value))
        finally:
            pool.close()
        shown.append(asyncio.run(_async_failure(dsn)))
        assert "refused" in shown[0]
        assert CORE not in "\n".join([*shown, caplog.text])


async def _async_failure(dsn: str) -> str:
    pool = await acreate_pool(dsn, timeout=0.8, connect_timeout=1)
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            async with apooled_connection(pool=pool):
                pass  # pragma: no cover
    finally:
        await pool.close()
    return _shown(info.value)


def test_settings_repr_hides_the_conninfo():
    """The pool's settings (what a traceback with locals shows) carry no password."""
    from boundkit._pg_base import PoolSettings

    settings_ = PoolSettings(conninfo="host=db password=hunter2secret")
    assert "hunter2secret" not in repr(settings_)
    assert ("hunter2secret",) == settings_.secrets
