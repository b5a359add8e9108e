"""Run boundkit's PostgreSQL tests at the lowest psycopg and psycopg-pool the extra allows.

The main CI run installs the newest releases the ``postgres`` extra in
pyproject.toml allows; this runs tests/test_pg.py and tests/test_pg_async.py
again in a venv with the lowest ones (read from pyproject.toml, so raising a pin
moves this run along). The venv sees the machine's packages (pytest and the rest
of the test extra) and holds only its own psycopg, psycopg-binary and
psycopg-pool, which come first on its path; boundkit comes from this checkout's
src/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "psycopg_suite"))

import pins  # noqa: E402
from packaging.version import Version  # noqa: E402


def main() -> int:
    psycopg, pool = pins.lowest("psycopg"), pins.lowest("psycopg-pool")
    venv = Path(os.environ.get("BOUNDKIT_LOWEST_VENV", Path(tempfile.gettempdir()) / "pg-lowest"))
    python = pins.make_venv(venv, psycopg, [f"psycopg-pool=={pool}"], system_site=True)
    check = "import psycopg, psycopg_pool; print(psycopg.__version__, psycopg_pool.__version__)"
    found = subprocess.run([python, "-c", check], capture_output=True, text=True, check=True)
    print(f"+ lowest allowed: psycopg {psycopg}, psycopg-pool {pool}; the venv has {found.stdout}")
    if [Version(v) for v in found.stdout.split()] != [psycopg, pool]:
        print("the venv does not have the lowest versions", file=sys.stderr)
        return 1
    tests = ["tests/test_pg.py", "tests/test_pg_async.py"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's boundkit
    command = [python, "-m", "pytest", "-q", "-p", "no:randomly", *tests]
    return subprocess.run(command, cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
