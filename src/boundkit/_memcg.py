"""Memory cgroups for child processes: create one with a hard limit, read its OOM kills, remove it.

One cgroup per child, made under this process's own memory cgroup (v1) or
beside the other children of its own cgroup (v2), so the parent's limit still
covers the child. Needs write access to the cgroup tree (root, or a delegated
subtree); :func:`create_memory_cgroup` returns ``None`` where it has none, and
the caller falls back to ``RLIMIT_AS``. Stdlib only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryCgroup", "create_memory_cgroup"]

_PREFIX = "boundkit-pdf-"
_counter = itertools.count()


@dataclass(frozen=True)
class MemoryCgroup:
    """A cgroup holding at most ``limit`` bytes; ``version`` is 1 or 2."""

    path: Path
    version: int
    limit: int

    def __str__(self) -> str:
        return f"cgroup v{self.version}"

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this cgroup for want of memory."""
        if self.version == 2:
            return _read_counter(self.path / "memory.events", "oom_kill")
        kills = _read_counter(self.path / "memory.oom_control", "oom_kill")
        if kills:
            return kills
        # kernels before 4.13 do not count kills: a limit that was hit is the best sign
        return _read_counter(self.path / "memory.failcnt", None)

    def remove(self) -> None:
        """Remove the (empty) cgroup; retries briefly while a killed child finishes exiting."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY: the last task is still being torn down
                time.sleep(0.01)


def _read_counter(path: Path, key: str | None) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    if key is None:
        return int(text.strip() or 0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _own_cgroup(proc_root: Path, v1: bool) -> str | None:
    """This process's cgroup path: the ``memory`` line (v1) or the unified ``0::`` line (v2)."""
    try:
        lines = (proc_root / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (v1 and "memory" in controllers.split(",")) or (not v1 and controllers == ""):
            return path
    return None


def _remove_stale(directory: Path) -> None:
    """Remove cgroups left by boundkit parents that died without cleaning up."""
    with contextlib.suppress(OSError):
        for entry in directory.glob(_PREFIX + "*"):
            owner = entry.name[len(_PREFIX) :].partition("-")[0]
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                with contextlib.suppress(OSError):
                    entry.rmdir()


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def create_memory_cgroup(
    limit: int,
    *,
    sys_root: str | os.PathLike[str] = "/sys",
    proc_root: str | os.PathLike[str] = "/proc",
) -> MemoryCgroup | None:
    """Create a memory cgroup limited to ``limit`` bytes (swap included), or return ``None``.

    A process joins it by writing its pid to ``<path>/cgroup.procs``; remove it
    with :meth:`MemoryCgroup.remove` once that process has exited.
    """
    base = Path(sys_root) / "fs" / "cgroup"
    name = f"{_PREFIX}{os.getpid()}-{next(_counter)}"
    v1_root = base / "memory"
    if (v1_root / "memory.limit_in_bytes").exists():
        own = _own_cgroup(Path(proc_root), v1=True)
        if own is None:
            return None
        parent = v1_root / own.lstrip("/")
        return _make(parent, name, limit, 1)
    if (base / "cgroup.controllers").exists():
        own = _own_cgroup(Path(proc_root), v1=False)
        if own is None:
            return None
        here = base / own.lstrip("/")
        # a v2 cgroup with processes cannot have children with controllers (except the root):
        # the child goes beside this process, in its parent, which already delegates memory
        parent = here if own == "/" else here.parent
        return _make(parent, name, limit, 2)
    return None


def _make(parent: Path, name: str, limit: int, version: int) -> MemoryCgroup | None:
    _remove_stale(parent)
    path = parent / name
    try:
        path.mkdir()
    except OSError:
        return None
    cgroup = MemoryCgroup(path, version, limit)
    if version == 1:
        ok = _write(path / "memory.limit_in_bytes", str(limit))
        if ok and (path / "memory.memsw.limit_in_bytes").exists():
            ok = _write(path / "memory.memsw.limit_in_bytes", str(limit))
    else:
        ok = (path / "memory.max").exists() and _write(path / "memory.max", str(limit))
        if ok and (path / "memory.swap.max").exists():
            ok = _write(path / "memory.swap.max", "0")
    if not ok:
        cgroup.remove()
        return None
    return cgroup
