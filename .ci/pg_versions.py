"""CI at both ends of the psycopg / psycopg-pool range pyproject.toml's postgres extra allows.

``python3 .ci/pg_versions.py newest`` upgrades this interpreter's psycopg and
psycopg-pool to the newest releases the extra allows (``pip install -e .``
keeps an older release already installed), for the main run.

``python3 .ci/pg_versions.py lowest`` runs tests/test_pg.py and
tests/test_pg_async.py in a venv with the lowest releases the extra allows (read
from pyproject.toml, so raising a pin moves this run along). The venv sees the
machine's packages (pytest and the rest of the test extra) and holds only its own
psycopg, psycopg-binary and psycopg-pool, which come first on its path; boundkit
comes from this checkout's src/.
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

SHOW = "import psycopg, psycopg_pool; print(psycopg.__version__, psycopg_pool.__version__)"


def versions(python: str) -> list[Version]:
    """The psycopg and psycopg-pool versions ``python`` imports."""
    found = subprocess.run([python, "-c", SHOW], capture_output=True, text=True, check=True)
    return [Version(version) for version in found.stdout.split()]


def newest() -> int:
    requirements = [str(req) for req in pins.postgres_extra().values()]
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", *requirements]
    subprocess.run(pip, check=True)
    print(f"+ newest allowed by {requirements}: {versions(sys.executable)}")
    return 0


def lowest() -> int:
    psycopg, pool = pins.lowest("psycopg"), pins.lowest("psycopg-pool")
    venv = Path(os.environ.get("BOUNDKIT_LOWEST_VENV", Path(tempfile.gettempdir()) / "pg-lowest"))
    python = pins.make_venv(venv, psycopg, [f"psycopg-pool=={pool}"], system_site=True)
    found = versions(python)
    print(f"+ lowest allowed: psycopg {psycopg}, psycopg-pool {pool}; the venv has {found}")
    if found != [psycopg, pool]:
        print("the venv does not have the lowest versions", file=sys.stderr)
        return 1
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's boundkit
    tests = ["tests/test_pg.py", "tests/test_pg_async.py"]
    command = [python, "-m", "pytest", "-q", "-p", "no:randomly", *tests]
    return subprocess.run(command, cwd=REPO, env=env).returncode


if __name__ == "__main__":
    actions = {"newest": newest, "lowest": lowest}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit(f"usage: {sys.argv[0]} newest|lowest")
    sys.exit(actions[sys.argv[1]]())
