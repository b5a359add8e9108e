"""pytest plugin: psycopg's own tests with every ``conn`` / ``aconn`` lent by boundkit.

Loaded by ``run.py`` into a run of psycopg's test suite (``-p swap``). psycopg's
``conn`` and ``aconn`` fixtures (tests/fix_db.py) each open a new connection;
here each test's connection is one ``pooled_connection()`` /
``apooled_connection()`` block instead, held for the whole test, in one of two
modes (``--boundkit-mode``; the fixtures are in lent.py):

- ``fresh``: a pool of one connection per test, so every test borrows a new
  connection: what lending itself changes;
- ``shared``: one pool of one connection for the whole run (one sync, one
  async), so every test borrows the connection the previous test gave back:
  what leaks from one borrower to the next.

Tests listed in ``expected.py`` are marked ``xfail(strict=True)`` with their
reason: each must fail, so a regression and a fix both fail the run.
"""

from __future__ import annotations

import pytest
from expected import expected_failures

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
    config.pluginmanager.import_plugin("lent")


def pytest_report_header(config: pytest.Config) -> str:
    return f"boundkit fixture swap: mode={config.getoption('--boundkit-mode')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    failures = expected_failures(config.getoption("--boundkit-mode"))
    for item in items:
        reason = failures.get(item.nodeid.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
