"""Run psycopg's own tests with every ``conn`` / ``aconn`` lent by boundkit (issue 12).

    python3 tests/psycopg_suite/run.py [--mode fresh|shared|both] [--dsn DSN] [-- PYTEST ARGS]

PyPI's psycopg sdists carry no tests, so the tests come from psycopg's source at
a released version, found at run time in this order:

1. ``PSYCOPG_SUITE_SOURCE``: a directory holding psycopg's ``tests/`` (a checkout);
2. Debian's source package ``psycopg3`` (its ``.orig`` tarball is psycopg's
   release), from the mirror the machine's own apt sources name, with a
   private apt state in the work directory (the system's is not touched);
3. a local git copy of psycopg (``PSYCOPG_SUITE_GIT``, default
   ``/work/.mirror/psycopg+psycopg/repo``), at the release's tag.

The version is the installed psycopg's when a source has it; otherwise the newest
release a source has that the ``postgres`` extra in pyproject.toml allows,
closest to the installed one. Then that psycopg is installed in a venv made for
the run (with psycopg-pool, pytest and anyio, boundkit from ``src/``), so the
tests run against the psycopg they were written for. The suite runs once per
mode (see swap.py) in a throwaway database; known failures are listed in
expected.py. With no source found it says why and exits 0, or 1 with
``--require``. Work files go to ``BOUNDKIT_PSYCOPG_SUITE_DIR`` (default
``~/.cache/boundkit-psycopg-suite``).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pins
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
REPO = pins.REPO
# psycopg's tests of cursor, transaction, copy, prepared, adapt, errors, notify,
# rows, sql, pipeline, connection and types (issue 12)
SUITE = (
    "test_cursor*.py",
    "test_transaction*.py",
    "test_copy*.py",
    "test_prepared*.py",
    "test_adapt.py",
    "test_errors.py",
    "test_notify*.py",
    "test_rows.py",
    "test_sql.py",
    "test_pipeline*.py",
    "test_connection*.py",
    "types",
)
DEFAULT_GIT = "/work/.mirror/psycopg+psycopg/repo"
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
APT_LIST = Path("/etc/apt/sources.list")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def log(message: str) -> None:
    print(f"[psycopg-suite {time.strftime('%H:%M:%S')}] {message}", flush=True)


# sources: each maps a release to a callable extracting its tests into a directory


def debian_mirror() -> str | None:
    """The Debian mirror the machine's apt sources name (read, never stored)."""
    if APT_SOURCES.exists():
        match = re.search(r"^URIs:\s*(\S+)", APT_SOURCES.read_text(), re.MULTILINE)
        return match.group(1) if match else None
    if APT_LIST.exists():
        for line in APT_LIST.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[2]:
                return next(part for part in parts[1:] if "://" in part)
    return None


class DebianSource:
    """Debian's ``psycopg3`` source packages, through apt with a private state."""

    def __init__(self, work: Path) -> None:
        self.root = work / "apt"
        self.options: list[str] = []

    def _apt(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            [tool, *self.options, *args], capture_output=True, text=True, cwd=cwd, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {result.stderr.strip()[-400:]}")
        return result.stdout

    def releases(self) -> dict[Version, Callable[[Path], None]]:
        mirror = debian_mirror()
        if mirror is None or shutil.which("apt-get") is None:
            log("Debian: no apt or no Debian mirror in the apt sources")
            return {}
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        suites = "stable testing unstable"
        (self.root / "sources.list.d" / "src.sources").write_text(
            f"Types: deb-src\nURIs: {mirror}\nSuites: {suites}\n"
            f"Components: main\nSigned-By: {KEYRING}\n"
        )
        self.options = [
            "-o",
            "Dir::Etc::sourcelist=/dev/null",
            "-o",
            f"Dir::Etc::sourceparts={self.root / 'sources.list.d'}",
            "-o",
            f"Dir::State::lists={self.root / 'lists'}",
            "-o",
            f"Dir::Cache={self.root / 'cache'}",
            "-o",
            "Debug::NoLocking=1",
        ]
        try:
            self._apt("apt-get", "update", "-q")
            shown = self._apt("apt-cache", "showsrc", "psycopg3")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            log(f"Debian: cannot read the source index: {exc}")
            return {}
        found: dict[Version, Callable[[Path], None]] = {}
        for debian_version in re.findall(r"^Version:\s*(\S+)", shown, re.MULTILINE):
            upstream = debian_version.split(":")[-1].rsplit("-", 1)[0]
            with contextlib.suppress(InvalidVersion):
                found[Version(upstream)] = self._extractor(debian_version, upstream)
        log(f"Debian: psycopg3 sources {', '.join(map(str, sorted(found))) or 'none'}")
        return found

    def _extractor(self, debian_version: str, upstream: str) -> Callable[[Path], None]:
        def extract(into: Path) -> None:
            download = self.root / "download"
            shutil.rmtree(download, ignore_errors=True)
            download.mkdir()
            self._apt(
                "apt-get", "source", "--download-only", f"psycopg3={debian_version}", cwd=download
            )
            (tarball,) = download.glob(f"psycopg3_{upstream}.orig.tar.*")
            with tarfile.open(tarball) as archive:
                members = []
                for member in archive.getmembers():
                    _, _, inner = member.name.partition("/")
                    if inner == "pyproject.toml" or inner.startswith("tests/"):
                        member.name = inner
                        members.append(member)
                archive.extractall(into, members=members, filter="data")

        return extract


class GitSource:
    """A local git copy of psycopg's repository, read at a release tag."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir

    def releases(self) -> dict[Version, Callable[[Path], None]]:
        if not (self.git_dir / "HEAD").exists() and not (self.git_dir / ".git").exists():
            log(f"git: no psycopg repository at {self.git_dir}")
            return {}
        tags = subprocess.run(
            ["git", f"--git-dir={self._dot_git()}", "tag"], capture_output=True, text=True
        ).stdout.split()
        found: dict[Version, Callable[[Path], None]] = {}
        for tag in tags:
            with contextlib.suppress(InvalidVersion):
                found[Version(tag)] = self._extractor(tag)
        log(f"git: {self.git_dir} has psycopg tags up to {max(found, default='none')}")
        return found

    def _dot_git(self) -> Path:
        return self.git_dir / ".git" if (self.git_dir / ".git").exists() else self.git_dir

    def _extractor(self, tag: str) -> Callable[[Path], None]:
        def extract(into: Path) -> None:
            archive = subprocess.run(
                ["git", f"--git-dir={self._dot_git()}", "archive", tag, "tests", "pyproject.toml"],
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)

        return extract


def candidates(
    installed: Version, sources: list[dict[Version, Callable[[Path], None]]]
) -> list[tuple[Version, Callable[[Path], None]]]:
    """Releases to try, best first: the installed one, then the closest the extra allows."""
    offers: list[tuple[Version, Callable[[Path], None]]] = []
    for releases in sources:  # earlier sources first for the same release
        offers += [(version, extract) for version, extract in releases.items()]

    def preference(offer: tuple[Version, Callable[[Path], None]]) -> tuple[bool, bool, Version]:
        version = offer[0]
        return (version == installed, version.release[:2] == installed.release[:2], version)

    allowed = [
        offer for offer in offers if not offer[0].is_prerelease and pins.allows("psycopg", offer[0])
    ]
    return sorted(allowed, key=preference, reverse=True)


def get_tests(work: Path, installed: Version) -> tuple[Version, Path] | None:
    """Extract the tests of the best available psycopg release; ``None`` if none works."""
    sources = []
    if given := os.environ.get("PSYCOPG_SUITE_SOURCE"):
        return installed, Path(given)
    sources.append(DebianSource(work).releases())
    sources.append(GitSource(Path(os.environ.get("PSYCOPG_SUITE_GIT", DEFAULT_GIT))).releases())
    for version, extract in candidates(installed, sources):
        into = work / f"psycopg-{version}"
        if (into / "tests" / "conftest.py").exists():
            return version, into
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        try:
            extract(into)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            log(f"psycopg {version}: cannot get its tests: {exc}")
            shutil.rmtree(into, ignore_errors=True)
            continue
        log(f"psycopg {version}: tests extracted to {into}")
        return version, into
    return None


def python_for(version: Version, installed: Version, work: Path) -> str:
    """An interpreter with psycopg ``version``: this one, or a venv made for the run."""
    if version == installed:
        return sys.executable
    log(f"installing psycopg {version} in a venv for the run")
    pool = str(pins.postgres_extra()["psycopg-pool"])
    others = [pool, "pytest", "anyio", *pins.base_dependencies()]
    return pins.make_venv(work / f"venv-{version}", version, others, system_site=False)


@contextlib.contextmanager
def test_database(dsn: str | None) -> Iterator[str]:
    """A database for the run, found as the main suite finds one (tests/fix_pg.py).

    ``dsn`` or ``BOUNDKIT_TEST_DSN``; else a throwaway database on the local
    server; else a throwaway cluster from the PostgreSQL binaries.
    """
    if dsn := dsn or os.environ.get("BOUNDKIT_TEST_DSN"):
        yield dsn
        return
    sys.path.insert(0, str(REPO / "tests"))
    import psycopg

    from fix_pg import _LOCAL, _start_cluster

    try:
        admin = psycopg.connect(f"{_LOCAL} dbname=postgres", autocommit=True)
    except psycopg.OperationalError:
        cluster = _start_cluster()
        if cluster is None:
            raise SystemExit("no PostgreSQL server and no binaries to start one") from None
        try:
            yield cluster.dsn
        finally:
            cluster.remove()
        return
    name = f"boundkit_psycopg_suite_{os.getpid()}"
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{_LOCAL} dbname={name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def suite_files(source: Path) -> list[str]:
    """The test files of the suite, relative to ``source``."""
    files: list[str] = []
    for pattern in SUITE:
        files += sorted(
            str(Path(p).relative_to(source)) for p in glob.glob(str(source / "tests" / pattern))
        )
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("fresh", "shared", "both"), default="both")
    parser.add_argument("--dsn", help="database to run in (default: a throwaway one)")
    parser.add_argument("--require", action="store_true", help="fail when no tests are found")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()

    default = Path.home() / ".cache" / "boundkit-psycopg-suite"
    work = Path(os.environ.get("BOUNDKIT_PSYCOPG_SUITE_DIR", default))
    work.mkdir(parents=True, exist_ok=True)
    installed = Version(metadata.version("psycopg"))
    found = get_tests(work, installed)
    if found is None:
        log(
            "SKIPPED: no source of psycopg's tests: PyPI's sdists carry none, Debian's "
            "mirror gave no psycopg3 source tarball, and there is no local psycopg "
            "repository (PSYCOPG_SUITE_GIT) or checkout (PSYCOPG_SUITE_SOURCE)"
        )
        return 1 if args.require else 0
    version, source = found
    if version != installed:
        log(f"no source of psycopg {installed}'s tests: running psycopg {version}'s")
    python = python_for(version, installed, work)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    modes = ("fresh", "shared") if args.mode == "both" else (args.mode,)
    failed = []
    with test_database(args.dsn) as dsn:
        for mode in modes:
            log(f"psycopg {version}, mode {mode}")
            command = [
                python,
                "-m",
                "pytest",
                "-p",
                "swap",
                f"--test-dsn={dsn}",
                f"--boundkit-mode={mode}",
                "-q",
                "-p",
                "no:randomly",
                # psycopg's own markers: minutes of gc loops, and timings a shared box breaks
                "-m",
                "not slow and not timing and not flakey",
                *suite_files(source),
                *args.pytest_args,
            ]
            # psycopg's conftest refuses to run after a run that did not finish
            (source / ".pytest_cache" / "v" / "segfault").unlink(missing_ok=True)
            if subprocess.run(command, cwd=source, env=env).returncode != 0:
                failed.append(mode)
    if failed:
        log(f"FAILED in mode {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
