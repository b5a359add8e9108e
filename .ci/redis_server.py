"""A redis-server 7.4 or later for the near-cache tests (issue 18), built from Debian's source.

redis-py refuses client-side caching below Redis 7.4, and Debian 12 ships 7.0.
``python3 .ci/redis_server.py`` prints the path of a redis-server 7.4+, taking the
first of:

- the one ``BOUNDKIT_REDIS_SERVER`` names, or the ``redis-server`` on PATH, if 7.4+;
- one this script built before, in its cache (``BOUNDKIT_REDIS_BUILD_CACHE``, else
  ``~/.cache/boundkit-redis``): no network, instant;
- a new build: apt reads Debian trixie's source index (``apt-get update`` into a
  directory of this script's own; apt checks the index's signature against the Debian
  archive keyring), apt-helper downloads the package's upstream tarball from the pool,
  checked against the index's SHA-256, and ``make`` builds ``redis-server`` from it (no
  build dependencies beyond a C compiler and make). Debian's own patches are not applied:
  the binary serves tests on 127.0.0.1 only.

Progress goes to stderr. Any failure exits non-zero, naming the step that failed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
LOWEST = (7, 4)


class Failed(Exception):
    """A step that failed, said in one line."""


def say(message: str) -> None:
    print(f"redis_server.py: {message}", file=sys.stderr, flush=True)


def version_of(binary: str) -> tuple[int, ...] | None:
    """The version ``binary --version`` reports, None if it does not run."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", done.stdout)
    return tuple(int(part) for part in found.groups()) if found else None


def usable(binary: str | None) -> bool:
    found = version_of(binary) if binary else None
    return found is not None and found >= LOWEST


def cache_dir() -> Path:
    found = os.environ.get("BOUNDKIT_REDIS_BUILD_CACHE")
    return Path(found) if found else Path.home() / ".cache" / "boundkit-redis"


def cached_builds(cache: Path) -> list[Path]:
    """The binaries built before, newest version first."""
    builds = [path for path in cache.glob("redis-*/redis-server") if usable(str(path))]
    return sorted(builds, key=lambda path: version_of(str(path)) or (), reverse=True)


def run(step: str, command: list[str], timeout: float = 60) -> str:
    if shutil.which(command[0]) is None:
        raise Failed(f"{step} needs {command[0]}, which is not installed")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise Failed(f"{step} failed ({' '.join(command[:3])} ...):\n{tail}")
    return done.stdout


def source_record(apt: Path) -> dict[str, str]:
    """Debian trixie's ``redis`` source record, read by apt from the signed index."""
    if not KEYRING.exists():
        raise Failed(f"no Debian archive keyring at {KEYRING} (package debian-archive-keyring)")
    for folder in ("lists/partial", "cache/archives/partial"):
        (apt / folder).mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    sources.write_text(f"deb-src [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    options = [
        f"Dir::Etc::SourceList={sources}",
        "Dir::Etc::SourceParts=/dev/null",
        f"Dir::State::Lists={apt / 'lists'}",
        f"Dir::Cache={apt / 'cache'}",
        "Dir::State::status=/var/lib/dpkg/status",
    ]
    settings = [part for option in options for part in ("-o", option)]
    say(f"apt-get update: the {SUITE} source index from {MIRROR}")
    run("apt-get update", ["apt-get", *settings, "-q", "update"], timeout=600)
    text = run("apt-cache showsrc", ["apt-cache", *settings, "showsrc", "redis"])
    records = [parse_record(block) for block in text.strip().split("\n\n") if block.strip()]
    records = [record for record in records if record.get("Package") == "redis"]
    if not records:
        raise Failed(f"no redis source package in {SUITE}'s index")
    return records[0]


def parse_record(block: str) -> dict[str, str]:
    """A deb822 stanza as field -> value (continuation lines joined by newlines)."""
    record: dict[str, str] = {}
    field = ""
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and field:
            record[field] += "\n" + line.strip()
        elif ":" in line:
            field, _, value = line.partition(":")
            record[field] = value.strip()
    return record


def upstream_tarball(record: dict[str, str]) -> tuple[str, str, str]:
    """The orig tarball's URL, file name and SHA-256 from a source record."""
    for line in record.get("Checksums-Sha256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and re.fullmatch(r"redis_[\d.]+\.orig\.tar\.(gz|xz)", parts[2]):
            digest, name = parts[0], parts[2]
            return f"{MIRROR}/{record['Directory']}/{name}", name, digest
    raise Failed(f"redis {record.get('Version')}'s record lists no upstream tarball")


def download(url: str, target: Path, digest: str) -> None:
    say(f"downloading {url}")
    helper = "/usr/lib/apt/apt-helper"
    run("download", [helper, "download-file", url, str(target), f"SHA256:{digest}"], timeout=600)
    found = hashlib.sha256(target.read_bytes()).hexdigest()
    if found != digest:
        raise Failed(f"{target.name} has SHA-256 {found}, the signed index says {digest}")


def build(cache: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="redis-build-") as work:
        url, name, digest = upstream_tarball(source_record(Path(work) / "apt"))
        upstream = name.split("_")[1].split(".orig")[0]
        if tuple(int(part) for part in upstream.split(".")[:2]) < LOWEST:
            raise Failed(f"{SUITE} has redis {upstream}, older than 7.4")
        tarball = Path(work) / name
        download(url, tarball, digest)
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        source = Path(work) / f"redis-{upstream}"
        jobs = str(os.cpu_count() or 2)
        say(f"building redis-server {upstream} (make -j{jobs}; a few minutes)")
        run("make", ["make", f"-j{jobs}", "-C", str(source / "src"), "redis-server"], timeout=1800)
        target = cache / f"redis-{upstream}"
        staged = cache / f".redis-{upstream}.partial"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        shutil.copy2(source / "src" / "redis-server", staged / "redis-server")
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    binary = target / "redis-server"
    if not usable(str(binary)):
        raise Failed(f"the built {binary} does not run as redis-server 7.4+")
    return binary


def main() -> int:
    for candidate in (os.environ.get("BOUNDKIT_REDIS_SERVER"), shutil.which("redis-server")):
        if candidate and usable(candidate):
            print(candidate)
            return 0
    cache = cache_dir()
    builds = cached_builds(cache)
    if not builds:
        try:
            builds = [build(cache)]
        except (Failed, OSError, subprocess.TimeoutExpired, tarfile.TarError) as exc:
            say(f"no redis-server 7.4+: {exc}")
            return 1
    say(f"redis-server {'.'.join(map(str, version_of(str(builds[0])) or ()))}: {builds[0]}")
    print(builds[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
