"""Tests of the package root: cheap import, lazy names, typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import boundkit

HEAVY = ("psycopg", "psycopg_pool", "pymupdf", "fitz")


def test_import_pulls_in_no_heavy_dependency() -> None:
    """`import boundkit` imports neither psycopg nor PyMuPDF."""
    code = f"import sys, boundkit\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "[]" == out.strip()


def test_all_is_sorted_and_every_name_resolves() -> None:
    """Every name in __all__ is importable from the package root, and __all__ is sorted."""
    assert sorted(boundkit.__all__) == boundkit.__all__
    for name in boundkit.__all__:
        assert getattr(boundkit, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    """A name boundkit does not have raises AttributeError naming it."""
    with pytest.raises(AttributeError, match="no_such_thing"):
        boundkit.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_ships_py_typed() -> None:
    """The package is marked as typed."""
    assert (Path(boundkit.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize(
    ("name", "blocked", "extra"),
    [
        ("pooled_connection", "psycopg", "postgres"),
        ("apooled_connection", "psycopg_pool", "postgres"),
    ],
)
def test_missing_extra_names_the_extra_to_install(name: str, blocked: str, extra: str) -> None:
    """A name whose optional dependency is missing raises ImportError naming the extra."""
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None  # as if not installed\n"
        "import boundkit\n"
        "try:\n"
        f"    boundkit.{name}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert f"pip install 'boundkit[{extra}]'" in out
    assert name in out
