"""psycopg tests expected to fail with the fixture swap, each group with its reason.

Found by ``tests/psycopg_suite/run.py`` with psycopg 3.3.4's tests (the newest
release whose tests a source had; see run.py) on boundkit after issue 12's fixes.
Keys are test functions, parameters left out. Every entry is a difference kept on
purpose (docs/pg.md lists them) and fails on every run, so it runs as
``xfail(strict=True)``: a test that starts passing fails the run, and the entry
must go. Tests psycopg itself marks ``xfail`` are not listed here.
"""

from __future__ import annotations

REASONS = {
    "CONTEXT": (
        "by design: `with conn:` commits (or rolls back) and leaves the connection open, as "
        "psycopg's Connection.__exit__ does for a connection that belongs to a pool; the "
        "pooled connection goes back to the pool when the block ends, so `conn.closed` is "
        "False where the test expects True"
    ),
    "PARAMS": (
        "by design: create_pool() sets each connection's connect_timeout (5 s) and "
        "options (statement_timeout, idle_in_transaction_session_timeout), so "
        "conn.info.get_parameters() differs from the test's DSN"
    ),
    "PREPARED": (
        "by design: the pooled connection is reused, and psycopg numbers prepared "
        "statements per connection: after the reset the names go on from the last "
        "borrower's (_pg3_13, not _pg3_0)"
    ),
    "KEPT": (
        "by design: the reset keeps the statements psycopg prepared in earlier blocks on "
        "the connection, as its cache records them, so the test finds an earlier test's "
        "statement in psycopg's cache (conn._prepared) beside its own"
    ),
}

# in both modes
EVERY_MODE: dict[str, list[str]] = {
    "CONTEXT": [
        "tests/test_connection.py::test_context_commit",
        "tests/test_connection.py::test_context_rollback",
        "tests/test_connection_async.py::test_context_commit",
        "tests/test_connection_async.py::test_context_rollback",
    ],
    "PARAMS": [
        "tests/test_connection_info.py::test_get_params",
    ],
}

# in shared mode only: what an earlier borrower leaves on the one pooled connection
SHARED_ONLY: dict[str, list[str]] = {
    "PREPARED": [
        "tests/test_prepared.py::test_evict_lru",
        "tests/test_prepared_async.py::test_evict_lru",
    ],
    "KEPT": [
        "tests/test_pipeline.py::test_auto_prepare",
        "tests/test_pipeline_async.py::test_auto_prepare",
    ],
}


def expected_failures(mode: str) -> dict[str, str]:
    """Test function (node id without parameters) -> reason, for ``mode`` (fresh or shared)."""
    groups = [EVERY_MODE, SHARED_ONLY] if mode == "shared" else [EVERY_MODE]
    return {
        name: REASONS[key] for group in groups for key, names in group.items() for name in names
    }
