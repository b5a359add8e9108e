"""psycopg's ``conn`` and ``aconn`` fixtures, lent by boundkit's pools (see swap.py).

swap.py registers this module after psycopg's tests/fix_db.py, so these
fixtures replace psycopg's own. Each test's connection is one block, held for
the whole test. The block ends with an exception of this module's own, so it
rolls back: psycopg's fixture closes its connection, which discards an open
transaction, and its tests rely on that (a table one test creates must not
exist in the next).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from boundkit.pg import create_pool, pooled_connection
from boundkit.pg_async import acreate_pool, apooled_connection


class EndOfTest(Exception):
    """Ends a test's block with a rollback, as psycopg's fixture ends with ``close()``."""


def _pool_scope(fixture_name: str, config: pytest.Config) -> str:
    return "session" if config.getoption("--boundkit-mode") == "shared" else "function"


def _pool_name(request: pytest.FixtureRequest) -> str:
    return f"psycopg-suite-{request.config.getoption('--boundkit-mode')}"


@pytest.fixture(scope=_pool_scope)
def boundkit_pool(session_dsn: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A pool of one connection: per test (fresh) or per run (shared)."""
    pool = create_pool(session_dsn, min_size=0, max_size=1, name=_pool_name(request))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope=_pool_scope)
async def boundkit_apool(
    session_dsn: str, anyio_backend: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """The async twin of ``boundkit_pool``, in the tests' event loop."""
    pool = await acreate_pool(session_dsn, min_size=0, max_size=1, name=_pool_name(request))
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def conn(dsn: str, boundkit_pool: Any, tracefile: Any, request: Any) -> Iterator[Any]:
    """psycopg's ``conn``: a connection lent by ``pooled_connection()`` for the test."""
    from tests.fix_db import maybe_trace  # psycopg's own fixture module

    with (
        contextlib.suppress(EndOfTest),
        pooled_connection(pool=boundkit_pool) as conn,
        maybe_trace(conn.pgconn, tracefile, request.function),
    ):
        yield conn
        raise EndOfTest


@pytest.fixture
async def aconn(dsn: str, boundkit_apool: Any, tracefile: Any, request: Any) -> AsyncIterator[Any]:
    """psycopg's ``aconn``: a connection lent by ``apooled_connection()`` for the test."""
    from tests.fix_db import maybe_trace

    with contextlib.suppress(EndOfTest):
        async with apooled_connection(pool=boundkit_apool) as conn:
            with maybe_trace(conn.pgconn, tracefile, request.function):
                yield conn
                raise EndOfTest
