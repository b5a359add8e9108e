"""Finding the memory limit this process really lives under.

Containers limit memory through cgroups, platforms announce it in the
environment, and the host's total is only the last resort.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from ._sizes import parse_bytes
from .errors import ConfigError

__all__ = ["MemoryLimit", "memory_limit"]

ENV_LIMIT = "BOUNDKIT_MEMORY_LIMIT"
NO_LIMIT = "no limit found"
# cgroup v1 reports "unlimited" as a huge page-rounded number (9223372036854771712)
_UNLIMITED = 1 << 60
_PLATFORM_HINTS_MB = ("DYNO_RAM", "MEMORY_AVAILABLE")


@dataclass(frozen=True)
class MemoryLimit:
    """The effective memory limit in bytes and where it was found.

    ``limited`` is false when nothing limits the process and ``bytes`` is the
    system's total memory.
    """

    bytes: int
    source: str
    limited: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


def memory_limit(
    *,
    environ: Mapping[str, str] | None = None,
    proc_root: str | os.PathLike[str] = "/proc",
    sys_root: str | os.PathLike[str] = "/sys",
) -> MemoryLimit:
    """Return the memory limit that applies to this process.

    In order: ``BOUNDKIT_MEMORY_LIMIT`` (``512M``, ``1.5G``, ``512MiB`` or
    bytes) wins outright; else the smallest cgroup limit up the tree from this
    process's own cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes`` and
    ``hierarchical_memory_limit``); else a platform hint in MiB (``DYNO_RAM``,
    ``MEMORY_AVAILABLE``); else a finite ``RLIMIT_AS``; else the system's
    total memory with ``limited=False``. ``proc_root`` and ``sys_root`` let
    tests point at fake trees: mount points under ``/sys`` are read below
    ``sys_root`` instead.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_LIMIT, "").strip():
        value = parse_bytes(env[ENV_LIMIT], name=ENV_LIMIT)
        if value <= 0:
            raise ConfigError(f"{ENV_LIMIT} must be positive, got {env[ENV_LIMIT]!r}")
        return MemoryLimit(value, ENV_LIMIT)
    cgroup = _cgroup_limit(Path(proc_root), Path(sys_root))
    if cgroup is not None:
        return cgroup
    for name in _PLATFORM_HINTS_MB:
        if env.get(name, "").strip():
            try:
                megabytes = float(env[name])
            except ValueError:
                raise ConfigError(f"{name} must be a number of MiB, got {env[name]!r}") from None
            if not 0 < megabytes < _UNLIMITED:
                raise ConfigError(f"{name} must be a positive number of MiB, got {env[name]!r}")
            return MemoryLimit(int(megabytes * 1024 * 1024), name)
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and 0 < soft < _UNLIMITED:
        return MemoryLimit(soft, "RLIMIT_AS")
    return MemoryLimit(psutil.virtual_memory().total, NO_LIMIT, limited=False)


def _cgroup_limit(proc_root: Path, sys_root: Path) -> MemoryLimit | None:
    found = limiting_cgroup(proc_root, sys_root)
    return None if found is None else found[0]


def limiting_cgroup(proc_root: Path, sys_root: Path) -> tuple[MemoryLimit, Path, int] | None:
    """Return the smallest cgroup limit over this process, the directory setting it and its version.

    The directory is the one whose usage the limit is enforced on (for v1's
    ``hierarchical_memory_limit``, this process's own cgroup).
    """
    found: list[tuple[MemoryLimit, Path, int]] = []
    for directory, mount, version in _memory_cgroups(proc_root, sys_root):
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        for cgdir in _up_to(directory, mount):
            value = _read_limit(cgdir / name)
            if value is not None:
                found.append(
                    (MemoryLimit(value, f"cgroup v{version} {cgdir / name}"), cgdir, version)
                )
        if version == 1:
            value = _hierarchical_limit(directory / "memory.stat")
            if value is not None:
                source = f"cgroup v1 {directory / 'memory.stat'}"
                found.append((MemoryLimit(value, source), directory, 1))
    return min(found, key=lambda item: item[0].bytes, default=None)


def _memory_cgroups(proc_root: Path, sys_root: Path) -> Iterator[tuple[Path, Path, int]]:
    """Yield (this process's cgroup directory, mount point, version) per memory hierarchy."""
    try:
        own = (proc_root / "self" / "cgroup").read_text().splitlines()
        mounts = (proc_root / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return
    paths: dict[str, str] = {}  # "v2" or "v1" -> the cgroup path of this process
    for line in own:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        root, mount_point = _unescape(fields[3]), _rebase(_unescape(fields[4]), sys_root)
        fstype, super_options = fields[dash + 1], fields[dash + 3 : dash + 4]
        if fstype == "cgroup2" and "v2" in paths:
            yield _own_directory(mount_point, root, paths["v2"]), mount_point, 2
        elif (
            fstype == "cgroup"
            and "v1" in paths
            and super_options
            and "memory" in super_options[0].split(",")
        ):
            yield _own_directory(mount_point, root, paths["v1"]), mount_point, 1


def _rebase(mount_point: str, sys_root: Path) -> Path:
    if mount_point == "/sys" or mount_point.startswith("/sys/"):
        return sys_root / mount_point[len("/sys/") :]
    return Path(mount_point)


def _own_directory(mount_point: Path, root: str, path: str) -> Path:
    """Map a cgroup path to its directory under a mount of the hierarchy's ``root``.

    Without a cgroup namespace a container sees the host's path for itself but
    has only its own subtree mounted; then the mount point is its cgroup.
    """
    relative = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
    candidate = mount_point / relative if not relative.startswith("..") else mount_point
    return candidate if candidate.is_dir() else mount_point


def _up_to(directory: Path, mount_point: Path) -> Iterator[Path]:
    while True:
        yield directory
        if directory == mount_point or directory.parent == directory:
            return
        directory = directory.parent


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max", or a file we do not understand
        return None
    value = int(text)
    return value if 0 < value < _UNLIMITED else None


def _hierarchical_limit(stat: Path) -> int | None:
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(" ")
        if key == "hierarchical_memory_limit" and value.strip().isdigit():
            limit = int(value)
            return limit if 0 < limit < _UNLIMITED else None
    return None


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape")
