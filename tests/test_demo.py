"""Tests of `boundkit demo`: every part has a row, and boundkit holds less than naive code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PARTS = ("cache", "pg", "metrics", "pdf", "guard", "django", "celery")


def _demo(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "boundkit", "demo"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=300,
    ).stdout
    return out.splitlines()


def _size(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


@pytest.mark.slow
def test_demo_prints_a_row_per_part_where_boundkit_holds_less(pg_dsn: str) -> None:
    """With a database, each part's row shows boundkit holding less memory than naive code."""
    lines = _demo({**os.environ, "DATABASE_URL": pg_dsn})
    rows = {line.split()[0]: line for line in lines if line.split()[:1] in ([p] for p in PARTS)}
    assert set(PARTS) == set(rows)
    for part, line in rows.items():
        assert "skipped" not in line, line
        fields = line.rsplit(maxsplit=4)
        naive, held = _size(" ".join(fields[1:3])), _size(" ".join(fields[3:5]))
        assert held < naive, f"{part}: boundkit {held} B >= naive {naive} B"


def test_demo_without_database_skips_that_row_with_a_reason() -> None:
    """Without DATABASE_URL the database row says how to enable it and the demo still succeeds."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    lines = _demo(env)
    assert ["pg         skipped: set DATABASE_URL to run the database row"] == [
        line for line in lines if line.startswith("pg ")
    ]
