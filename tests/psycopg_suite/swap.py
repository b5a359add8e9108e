"""pytest plugin: psycopg's own tests with every ``conn`` / ``aconn`` lent by boundkit.

Loaded by ``run.py`` into a run of psycopg's test suite (``-p swap``). psycopg's
``conn`` and ``aconn`` fixtures (tests/fix_db.py) each open a new connection;
here each test's connection is one ``pooled_connection()`` /
``apooled_connection()`` block instead, held for the whole test, in one of two
modes (``--boundkit-mode``):

The block ends with an exception of the fixture's own, so it rolls back: psycopg's
fixture closes its connection, which discards an open transaction, and its tests
rely on that (a table one test creates must not exist in the next).

- ``fresh``: a pool of one connection per test, so every test borrows a new
  connection: what lending itself changes;
- ``shared``: one pool of one connection for the whole run (one sync, one
  async), so every test borrows the connection the previous test gave back:
  what leaks from one borrower to the next.

Tests listed in ``expected.py`` are marked ``xfail(strict=False)`` with their
reason, so the run still reports them (XFAIL, or XPASS once fixed).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from expected import expected_failures

from boundkit.pg import create_pool, pooled_connection
from boundkit.pg_async import acreate_pool, apooled_connection

MODES = ("fresh", "shared")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--boundkit-mode",
        choices=MODES,
        default="fresh",
        help="fresh: a new pooled connection per test; shared: one for the whole run",
    )


def pytest_configure(config: pytest.Config) -> None:
    # registered now, after psycopg's tests/conftest.py loaded tests/fix_db.py:
    # among fixtures of the same scope the one registered last wins
    config.pluginmanager.register(LentConnections(), "boundkit-lent-connections")


def pytest_report_header(config: pytest.Config) -> str:
    return f"boundkit fixture swap: mode={config.getoption('--boundkit-mode')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    failures = expected_failures(config.getoption("--boundkit-mode"))
    for item in items:
        reason = failures.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))


def _pool_scope(fixture_name: str, config: pytest.Config) -> str:
    return "session" if config.getoption("--boundkit-mode") == "shared" else "function"


def _pool_name(request: pytest.FixtureRequest) -> str:
    return f"psycopg-suite-{request.config.getoption('--boundkit-mode')}"


class EndOfTest(Exception):
    """Ends a test's block with a rollback, as psycopg's fixture ends with ``close()``."""


class LentConnections:
    """psycopg's ``conn`` and ``aconn`` fixtures, lent by boundkit's pools."""

    @pytest.fixture(scope=_pool_scope)
    def boundkit_pool(self, session_dsn: str, request: pytest.FixtureRequest) -> Iterator[Any]:
        """A pool of one connection: per test (fresh) or per run (shared)."""
        pool = create_pool(session_dsn, min_size=0, max_size=1, name=_pool_name(request))
        try:
            yield pool
        finally:
            pool.close()

    @pytest.fixture(scope=_pool_scope)
    async def boundkit_apool(
        self, session_dsn: str, anyio_backend: Any, request: pytest.FixtureRequest
    ) -> AsyncIterator[Any]:
        """The async twin of ``boundkit_pool``, in the tests' event loop."""
        pool = await acreate_pool(session_dsn, min_size=0, max_size=1, name=_pool_name(request))
        try:
            yield pool
        finally:
            await pool.close()

    @pytest.fixture
    def conn(self, dsn: str, boundkit_pool: Any, tracefile: Any, request: Any) -> Iterator[Any]:
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
    async def aconn(
        self, dsn: str, boundkit_apool: Any, tracefile: Any, request: Any
    ) -> AsyncIterator[Any]:
        """psycopg's ``aconn``: a connection lent by ``apooled_connection()`` for the test."""
        from tests.fix_db import maybe_trace

        with contextlib.suppress(EndOfTest):
            async with apooled_connection(pool=boundkit_apool) as conn:
                with maybe_trace(conn.pgconn, tracefile, request.function):
                    yield conn
                    raise EndOfTest
