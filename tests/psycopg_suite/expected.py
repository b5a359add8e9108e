"""psycopg tests expected to fail with the fixture swap, each with its reason."""

from __future__ import annotations


def expected_failures(mode: str) -> dict[str, str]:
    """Node id -> reason for the tests expected to fail in ``mode`` (fresh or shared)."""
    return {}
