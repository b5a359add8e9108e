"""The psycopg versions pyproject.toml's ``postgres`` extra allows, and venvs that have one.

Used by run.py (psycopg's suite at the release its tests were written for) and
by .ci/pg_versions.py (boundkit's own tests at both ends of the range).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def postgres_extra() -> dict[str, Requirement]:
    """The requirements of the ``postgres`` extra, by package name."""
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    return {req.name: req for req in map(Requirement, extras["postgres"])}


def base_dependencies() -> list[str]:
    """boundkit's own runtime dependencies."""
    return list(_project()["dependencies"])  # type: ignore[call-overload]


def allows(name: str, version: Version) -> bool:
    """Whether the extra admits this release of ``name``."""
    requirement = postgres_extra().get(name)
    return requirement is None or requirement.specifier.contains(version, prereleases=False)


def lowest(name: str) -> Version:
    """The lowest release of ``name`` the extra admits: its ``>=`` / ``==`` / ``~=`` bound."""
    bounds = [
        Version(spec.version)
        for spec in postgres_extra()[name].specifier
        if spec.operator in (">=", "==", "~=")
    ]
    if not bounds:
        raise SystemExit(f"pyproject.toml's postgres extra sets no lower bound for {name}")
    return max(bounds)


def make_venv(venv: Path, psycopg: Version, others: list[str], *, system_site: bool) -> str:
    """A venv with psycopg ``psycopg`` and ``others`` installed; returns its python.

    Reused while it holds the same requirements. ``psycopg[binary]==3.2.0``
    cannot be installed (its extra pins a ``.dev1`` psycopg-binary never
    released): then psycopg and psycopg-binary of that version go in side by side.
    """
    python = venv / "bin" / "python"
    stamp = venv / "boundkit-requirements"
    wanted = repr((str(psycopg), others, system_site))
    if stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    options = ["--system-site-packages"] if system_site else []
    subprocess.run([sys.executable, "-m", "venv", *options, str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for choice in (
        [f"psycopg[binary]=={psycopg}"],
        [f"psycopg=={psycopg}", f"psycopg-binary=={psycopg}"],
    ):
        if subprocess.run([*pip, *choice, *others]).returncode == 0:
            break
    else:
        raise SystemExit(f"cannot install psycopg {psycopg} in {venv}")
    stamp.write_text(wanted)
    return str(python)
