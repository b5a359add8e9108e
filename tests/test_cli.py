"""Tests of the boundkit command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from boundkit.cli import main
from test_memory import SNAPSHOT_KEYS


def test_snapshot_json_parses_and_carries_every_key() -> None:
    """`boundkit snapshot --json` prints JSON with every documented key."""
    out = subprocess.run(
        [sys.executable, "-m", "boundkit", "snapshot", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # "plans" as well when a governed gunicorn runs on this machine
    assert set(json.loads(out)) - SNAPSHOT_KEYS <= {"plans"}
    assert SNAPSHOT_KEYS <= set(json.loads(out))


def test_snapshot_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the snapshot is a key/value table."""
    assert 0 == main(["snapshot"])
    out = capsys.readouterr().out
    flat, _, dyno = out.partition("\n\ndyno: ")
    assert SNAPSHOT_KEYS - {"dyno"} == {line.split()[0] for line in flat.splitlines()}
    assert "pid" in dyno
    assert "rss_mb" in dyno
    assert f"{os.getpid()} " in dyno


def test_unknown_command_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown subcommand is a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert 2 == info.value.code
    assert "invalid choice" in capsys.readouterr().err


def test_snapshot_shows_the_share_plan_of_a_governed_dyno(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With a governed dyno's state on the machine, the snapshot prints its plan as a table."""
    from boundkit.dyno import DynoState
    from boundkit.share import plan_shares

    state = DynoState.create()  # this process stands in for the arbiter
    try:
        plan = plan_shares("512M", workers=2, footprint="60M", arbiter="30M")
        state.write(state.plan_path, plan.as_dict())
        state.write(state.health_path, {"status": "ok"})
        assert 0 == main(["snapshot"])
        out = capsys.readouterr().out
        heading = f"share plan of the gunicorn arbiter {os.getpid()} (MiB):"
        assert heading in out
        table = out.split(heading)[1].split("\n\n")[0]
        assert "limit" in table
        assert f"{round(plan.share / 1024**2, 1)}" in table
    finally:
        import shutil

        shutil.rmtree(state.directory)
