"""Tests of the boundkit command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import boundkit
from boundkit import Admission
from boundkit.admission import ENV_ADMISSION_FILE
from boundkit.cli import main
from test_memory import SNAPSHOT_KEYS

MB = 1024**2


def test_snapshot_json_parses_and_carries_every_key() -> None:
    """`boundkit snapshot --json` prints JSON with every documented key."""
    out = subprocess.run(
        [sys.executable, "-m", "boundkit", "snapshot", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # "plans" and "admission" as well when a governed gunicorn or reservations run here
    assert set(json.loads(out)) - SNAPSHOT_KEYS <= {"plans", "admission"}
    assert SNAPSHOT_KEYS <= set(json.loads(out))


def test_snapshot_shows_the_reservation_tables_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`boundkit snapshot` shows the table BOUNDKIT_ADMISSION_FILE names: budget, held, holders."""
    path = tmp_path / "admission"
    monkeypatch.setenv(ENV_ADMISSION_FILE, str(path))
    with Admission(path, budget=100 * MB).reserve(30 * MB, timeout=1):
        assert 0 == main(["snapshot", "--json"])
        found = json.loads(capsys.readouterr().out)["admission"][str(path)]
        assert 0 == main(["snapshot"])
        text = capsys.readouterr().out
    assert (100 * MB, 30 * MB, 1, 0) == (
        found["budget"],
        found["held"],
        found["holders"],
        found["waiters"],
    )
    assert f"reservations in {path}: 30.0 of 100.0 MiB held by 1, 0 waiting" in text


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


def boundkit_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m boundkit ARGS` with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "boundkit", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )


def test_version_prints_the_package_version() -> None:
    """`boundkit --version` prints the installed version and exits 0."""
    done = boundkit_command("--version")
    assert 0 == done.returncode
    assert f"boundkit {boundkit.__version__}" == done.stdout.strip()


def test_bare_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`boundkit` alone prints the help, naming the commands, and exits 0."""
    assert 0 == main([])
    out = capsys.readouterr().out
    assert out.startswith("usage: boundkit")
    assert "snapshot" in out
    assert "demo" in out


def test_bad_memory_limit_is_one_line_not_a_traceback() -> None:
    """A malformed BOUNDKIT_MEMORY_LIMIT prints the ConfigError on one line, exit status 2."""
    done = boundkit_command("snapshot", BOUNDKIT_MEMORY_LIMIT="12Q")
    assert 2 == done.returncode
    expected = (
        "boundkit: error: BOUNDKIT_MEMORY_LIMIT must be a size such as 512M, 1.5G or 4096, "
        "got '12Q'"
    )
    assert [expected] == done.stderr.splitlines()
    assert "" == done.stdout


def test_limit_below_own_rss_warns() -> None:
    """BOUNDKIT_MEMORY_LIMIT=100 (bytes) is below any process's RSS: a warning says so."""
    done = boundkit_command("snapshot", "--json", BOUNDKIT_MEMORY_LIMIT="100")
    assert 0 == done.returncode
    assert done.stderr.startswith(
        "boundkit: warning: the limit from BOUNDKIT_MEMORY_LIMIT (100 B) is below this "
        "command's own resident memory"
    )
    assert "a bare number is bytes" in done.stderr
    assert json.loads(done.stdout)["within_limit"] is False  # stdout stays JSON


def test_limit_above_rss_does_not_warn() -> None:
    """A limit the process fits in prints no warning."""
    done = boundkit_command("snapshot", BOUNDKIT_MEMORY_LIMIT="4G")
    assert 0 == done.returncode
    assert "" == done.stderr


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
