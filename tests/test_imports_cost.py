"""Tests of ``boundkit imports``: each module's cost checked against a separate fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil
import pytest

from boundkit.cli import main
from boundkit.imports_cost import (
    installed_modules,
    measure_import,
    measure_imports,
    modules_from_requirements,
)

MIB = 1024 * 1024
WAITER = """
import sys
print("ready", flush=True)
sys.stdin.readline()
__import__(sys.argv[1])
print("done", flush=True)
sys.stdin.readline()
"""


def psutil_import_cost(module: str) -> int:
    """RSS growth of a fresh interpreter importing ``module``, read from outside by psutil."""
    child = subprocess.Popen(
        [sys.executable, "-c", WAITER, module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        process = psutil.Process(child.pid)
        assert "ready" == child.stdout.readline().strip()
        before = process.memory_info().rss
        child.stdin.write("\n")
        child.stdin.flush()
        assert "done" == child.stdout.readline().strip()
        return process.memory_info().rss - before
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()


@pytest.mark.parametrize("module", ["asyncio", "sqlite3", "decimal", "psutil", "cachetools"])
def test_rss_cost_matches_a_fresh_process_measured_from_outside(module: str) -> None:
    """A module's reported RSS cost is within 1 MiB or 30% of psutil's reading of a fresh child."""
    cost = measure_import(module)
    assert cost.error is None
    assert not cost.preloaded
    expected = psutil_import_cost(module)
    assert abs(cost.rss - expected) <= max(MIB, 0.3 * expected), (cost.rss, expected)
    assert cost.seconds > 0
    assert cost.modules >= 1


def test_heavy_packages_are_listed_largest_first() -> None:
    """asyncio's heavy list names packages it pulls in, sorted by RSS, with their timings."""
    cost = measure_import("asyncio")
    sizes = [entry["rss_mb"] for entry in cost.heavy]
    assert sizes == sorted(sizes, reverse=True)
    assert {"module", "rss_mb", "seconds"} == set(cost.heavy[0])
    assert any(entry["module"].startswith("asyncio.") for entry in cost.heavy)


def test_finder_that_imports_while_looking_does_not_recurse() -> None:
    """setuptools' distutils finder imports during find_spec; the measurement still works."""
    cost = measure_import("setuptools")
    assert cost.error is None
    assert any(entry["module"].startswith("setuptools.") for entry in cost.heavy)


def test_stub_only_distributions_name_no_module(tmp_path: Path) -> None:
    """A types-* distribution installs no importable module, so it names none."""
    pytest.importorskip("psutil")
    if "types-psutil" not in {d.metadata["Name"] for d in metadata.distributions()}:
        pytest.skip("types-psutil is not installed (the lint extra)")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("types-psutil\npsutil\n")
    assert ["psutil"] == modules_from_requirements(reqs)


def test_failed_import_is_reported_not_raised() -> None:
    """A module that does not exist gives an error entry, sorted after the others."""
    costs = measure_imports(["no_such_module_boundkit", "decimal"])
    assert ["decimal", "no_such_module_boundkit"] == [c.module for c in costs]
    assert "ModuleNotFoundError" in (costs[1].error or "")


def test_requirements_and_installed_name_top_level_modules(tmp_path: Path) -> None:
    """A requirements file maps distributions to their import names; --installed lists psutil."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# deps\npsutil>=5.9  # memory\n-e .\ncachetools==5.*\n\n")
    assert ["psutil", "cachetools"] == modules_from_requirements(reqs)
    assert {"psutil", "cachetools", "boundkit"} <= set(installed_modules())


def test_cli_json_sorted_by_rss(capsys: pytest.CaptureFixture[str]) -> None:
    """``boundkit imports --json`` prints the documented schema, largest cost first."""
    assert 0 == main(["imports", "--json", "decimal", "asyncio"])
    data = json.loads(capsys.readouterr().out)
    assert "boundkit.imports/1" == data["schema"]
    assert ["asyncio", "decimal"] == [m["module"] for m in data["modules"]]
    keys = {"module", "rss_mb", "seconds", "modules", "heavy", "preloaded", "error"}
    assert keys == set(data["modules"][0])


def test_cli_table_and_failure_status(capsys: pytest.CaptureFixture[str]) -> None:
    """The table has a row per module; a failed import makes the status 1."""
    assert 1 == main(["imports", "--quiet", "decimal", "no_such_module_boundkit"])
    out = capsys.readouterr().out.splitlines()
    assert ["module", "decimal", "no_such_module_boundkit"] == [line.split()[0] for line in out]
    assert 1 == main(["imports"])
    assert "needs MODULE names" in capsys.readouterr().err
