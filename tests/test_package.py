"""Tests of the package root: cheap import, lazy names, typing marker."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("boundkit.near_cache", "redis", "redis"),
        ("boundkit.near_redis", "redis", "redis"),
        ("boundkit.shared", "redis", "redis"),
        ("boundkit.celery", "celery", "celery"),
    ],
)
def test_module_without_its_extra_names_the_extra(module: str, blocked: str, extra: str) -> None:
    """Importing a module whose optional dependency is missing names the extra to install."""
    code = f"import sys\nsys.modules[{blocked!r}] = None  # as if not installed\nimport {module}\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert 1 == done.returncode
    last = done.stderr.strip().splitlines()[-1]
    assert f"ModuleNotFoundError: {module} needs the {extra!r} extra" in last
    assert f"pip install 'boundkit[{extra}]'" in last


@pytest.fixture
def core_only_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose interpreter (run with ``-S``) sees the stdlib, boundkit and its
    two core dependencies only: a venv without any extra, built without a network."""
    import cachetools
    import psutil

    for module in (cachetools, psutil):
        package = Path(module.__file__ or "").parent
        (tmp_path / package.name).symlink_to(package)
    src = Path(boundkit.__file__).parent.parent
    return {"PYTHONPATH": f"{src}{os.pathsep}{tmp_path}", "PATH": os.environ.get("PATH", "")}


def run_core_only(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in the core-only interpreter (no site-packages at all)."""
    return subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_star_import_works_without_any_extra(core_only_env: dict[str, str]) -> None:
    """`from boundkit import *` succeeds with no extra installed and binds every __all__ name."""
    code = (
        "import importlib.util\n"
        "assert importlib.util.find_spec('psycopg') is None, 'extras are visible'\n"
        "from boundkit import *\n"
        "import boundkit\n"
        "print(all(name in globals() for name in boundkit.__all__), 'BoundedCache' in globals())\n"
    )
    done = run_core_only(core_only_env, code)
    assert 0 == done.returncode, done.stderr
    assert "True True" == done.stdout.strip()


def test_all_leaves_out_names_that_need_an_extra() -> None:
    """__all__ holds no name whose module imports psycopg or PyMuPDF; they stay importable."""
    for name in ("pooled_connection", "apooled_connection", "render_pages", "open_pdf"):
        assert name not in boundkit.__all__
        assert name in dir(boundkit)
    assert "BoundedCache" in boundkit.__all__


def test_dir_lists_public_names_not_implementation_imports() -> None:
    """dir(boundkit) lists the public names, not the module's own imports."""
    listed = dir(boundkit)
    for name in ("Any", "TYPE_CHECKING", "annotations", "importlib", "NEEDS_EXTRA"):
        assert name not in listed
    assert set(boundkit.__all__) <= set(listed)
    assert "__version__" in listed


@pytest.mark.parametrize(
    ("module", "name"),
    [("boundkit.pg", "pooled_connection"), ("boundkit.pg_async", "apooled_connection")],
)
def test_pg_module_without_extra_names_the_extra(
    core_only_env: dict[str, str], module: str, name: str
) -> None:
    """Importing from boundkit.pg / pg_async without psycopg names the extra, as the root does."""
    code = f"from {module} import {name}\n"
    done = run_core_only(core_only_env, code)
    assert 1 == done.returncode
    last = done.stderr.strip().splitlines()[-1]
    expected = f"ModuleNotFoundError: {module} needs the 'postgres' extra"
    assert f"{expected}: pip install 'boundkit[postgres]'" == last


def test_root_name_without_extra_names_the_extra_once(core_only_env: dict[str, str]) -> None:
    """`from boundkit import pooled_connection` without psycopg names the extra and the name."""
    done = run_core_only(core_only_env, "from boundkit import pooled_connection\n")
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "boundkit.pooled_connection needs the 'postgres' extra: pip install 'boundkit[postgres]'"
    )


ROOT = Path(__file__).resolve().parent.parent


def test_license_file_is_the_mit_licence_pyproject_declares() -> None:
    """The repository carries the MIT licence that pyproject.toml names, as its licence file."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = "MIT"' in pyproject
    assert 'license-files = ["LICENSE"]' in pyproject
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


@pytest.mark.slow
def test_wheel_carries_the_license(tmp_path: Path) -> None:
    """A wheel built from a copy of the sources holds LICENSE and names it in its metadata."""
    import shutil
    import zipfile

    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("boundkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
        [licence] = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(licence) == (ROOT / "LICENSE").read_bytes()
    assert "License-Expression: MIT" in text
    assert "License-File: LICENSE" in text


def test_readme_says_what_the_demo_and_the_suite_need() -> None:
    """The README says the demo's database row needs DATABASE_URL and what the suite costs."""
    readme = (ROOT / "README.md").read_text()
    demo = readme.partition("<!-- test-command -->")[0]
    assert "database row runs only when `DATABASE_URL`" in demo
    before_tests = demo.rsplit("```", 1)[-1]
    for promise in ("Django", "Flask", "FastAPI", "gunicorn", "a few minutes"):
        assert promise in before_tests, promise
