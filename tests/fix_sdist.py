"""Peers' own test suites, taken from the sdist of the version installed here.

:func:`peer_tests` downloads the sdist of an installed distribution from PyPI
(``pip download --no-binary :all:``) into a cache directory, once, and
extracts the files the caller names. The cache is ``BOUNDKIT_SDIST_CACHE``,
else ``~/.cache/boundkit-sdists``. Without a network the tests that need a
suite skip, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def _cache_dir() -> Path:
    found = os.environ.get("BOUNDKIT_SDIST_CACHE")
    path = Path(found) if found else Path.home() / ".cache" / "boundkit-sdists"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def peer_tests(distribution: str, members: list[str]) -> Path:
    """Return the directory of the installed ``distribution``'s sdist, with ``members``
    (paths inside the sdist, relative to its top folder) extracted."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        _unavailable(f"{distribution} is not installed")
    cache = _cache_dir()
    archives = [
        path
        for path in cache.glob("*.tar.gz")
        if path.name.lower().replace("_", "-") == f"{distribution}-{version}.tar.gz".lower()
    ]
    if not archives:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:"]
        command += ["--no-deps", "--dest", str(cache), f"{distribution}=={version}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode:
            _unavailable(f"cannot download the {distribution} {version} sdist: {done.stderr}")
        return peer_tests(distribution, members)
    archive = archives[0]
    with tarfile.open(archive) as tar:
        prefix = tar.getmembers()[0].name.split("/")[0]
        wanted = [
            member
            for member in tar.getmembers()
            if any(member.name.startswith(f"{prefix}/{name}") for name in members)
        ]
        if not wanted:
            _unavailable(f"the {archive.name} sdist carries none of {members}")
        tar.extractall(cache, members=wanted, filter="data")
    return cache / prefix
