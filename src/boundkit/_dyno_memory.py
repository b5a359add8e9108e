"""The dyno's whole memory: what the platform kills on, and each process in it.

A container's limit applies to the total of its processes, read from the
cgroup that sets the limit (v2 ``memory.current``/``memory.stat``, v1
``memory.usage_in_bytes``/``memory.stat``). Without a cgroup limit the total
is the sum over the process tree under the top process (the highest ancestor
running the same executable: the gunicorn arbiter for a worker).

What counts (docs/memory.md): anonymous memory and page cache the kernel
cannot drop at once count; the inactive file cache, which the kernel
reclaims first before any OOM kill, does not (the "working set", as kubelet
and cAdvisor count it); swap counts, since platforms bill it against the
quota and a dyno in swap is already over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ._limits import MemoryLimit, limiting_cgroup, memory_limit

__all__ = ["DynoMemory", "DynoProcess", "DynoReader", "dyno_memory"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 1024 * 1024


@dataclass(frozen=True)
class DynoProcess:
    """One process of the dyno: pid, command name and resident bytes."""

    pid: int
    name: str
    rss: int
    rss_anon: int

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class DynoMemory:
    """The dyno's memory against its limit, in bytes.

    ``used`` is what counts against ``limit``: ``anon`` plus the page cache
    the kernel cannot drop at once (``page_cache - reclaimable``) plus
    ``swap``. ``source`` says where the figures come from (a cgroup file or
    ``"process tree"``); ``processes`` lists every process, largest first.
    """

    used: int
    limit: int
    anon: int
    page_cache: int
    reclaimable: int
    swap: int
    source: str
    limit_source: str
    limited: bool
    processes: tuple[DynoProcess, ...] = field(default=())

    @property
    def fraction(self) -> float:
        """``used`` as a fraction of ``limit`` (0 when there is no limit)."""
        return self.used / self.limit if self.limit else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict in MiB (keys ending ``_mb``), with the processes."""
        return {
            "used_mb": round(self.used / _MB, 1),
            "limit_mb": round(self.limit / _MB, 1),
            "percent_of_limit": round(100 * self.fraction, 1),
            "anon_mb": round(self.anon / _MB, 1),
            "page_cache_mb": round(self.page_cache / _MB, 1),
            "reclaimable_mb": round(self.reclaimable / _MB, 1),
            "swap_mb": round(self.swap / _MB, 1),
            "source": self.source,
            "limit_source": self.limit_source,
            "limited": self.limited,
            "processes": [
                {
                    "pid": p.pid,
                    "name": p.name,
                    "rss_mb": round(p.rss / _MB, 1),
                    "rss_anon_mb": round(p.rss_anon / _MB, 1),
                }
                for p in self.processes
            ],
        }


def dyno_memory(
    *,
    processes: bool = True,
    proc_root: str | os.PathLike[str] = "/proc",
    sys_root: str | os.PathLike[str] = "/sys",
    top: int | None = None,
) -> DynoMemory:
    """Return the whole dyno's memory: the limiting cgroup's usage, else the process tree's.

    ``processes=False`` skips the per-process list (one file read then for a
    cgroup). ``top`` is the pid whose tree is summed without a cgroup limit
    (default: the highest ancestor running this executable). ``proc_root``
    and ``sys_root`` let tests point at fake trees.
    """
    return DynoReader(proc_root=proc_root, sys_root=sys_root, top=top).read(processes=processes)


class DynoReader:
    """Reads the dyno again and again: where to read is found once, at creation.

    For a watcher (the arbiter's supervisor reads every 250 ms): a reading of
    a cgroup is then two or three small files. Without a cgroup limit the
    tree is ``pids()`` when given (the supervisor knows its workers), else
    the process tree under ``top``.
    """

    def __init__(
        self,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
        top: int | None = None,
        pids: Callable[[], list[int]] | None = None,
    ) -> None:
        self._proc, sys_path = Path(proc_root), Path(sys_root)
        self._cgroup = limiting_cgroup(self._proc, sys_path)
        self._limit = memory_limit(proc_root=self._proc, sys_root=sys_path)
        self._top = top
        self._pids = pids

    def read(self, *, processes: bool = True) -> DynoMemory:
        """Return the dyno's memory now (see :func:`dyno_memory`)."""
        if self._cgroup is not None:
            limit, directory, version = self._cgroup
            usage = _cgroup_usage(directory, version)
            if usage is not None:
                pids = _cgroup_pids(directory) if processes else []
                return DynoMemory(
                    **usage,
                    limit=limit.bytes,
                    limit_source=limit.source,
                    limited=True,
                    processes=_processes(pids, self._proc),
                )
        if self._pids is not None:
            pids = self._pids()
        else:
            pids = list(_tree_pids(self._top if self._top is not None else top_process()))
        return _tree_memory(self._limit, pids, self._proc)


def _cgroup_usage(directory: Path, version: int) -> dict[str, Any] | None:
    current = "memory.current" if version == 2 else "memory.usage_in_bytes"
    usage = _read_int(directory / current)
    if usage is None:
        return None
    stat = _read_stat(directory / "memory.stat")
    if version == 2:
        anon, cache = stat.get("anon", 0), stat.get("file", 0)
        inactive = stat.get("inactive_file", 0)
        swap = _read_int(directory / "memory.swap.current") or 0
    else:  # v1: the total_* keys cover the subtree (use_hierarchy)
        anon = stat.get("total_rss", stat.get("rss", 0))
        cache = stat.get("total_cache", stat.get("cache", 0))
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        swap = stat.get("total_swap", stat.get("swap", 0))
    reclaimable = min(inactive, usage)
    return {
        "used": usage - reclaimable + swap,
        "anon": anon,
        "page_cache": cache,
        "reclaimable": reclaimable,
        "swap": swap,
        "source": f"cgroup v{version} {directory / current}",
    }


def _tree_memory(limit: MemoryLimit, pids: list[int], proc: Path) -> DynoMemory:
    members = _processes(pids, proc)
    return DynoMemory(
        used=sum(p.rss for p in members),
        limit=limit.bytes,
        anon=sum(p.rss_anon for p in members),
        page_cache=0,
        reclaimable=0,
        swap=0,
        source=f"process tree of pid {pids[0] if pids else os.getpid()}",
        limit_source=limit.source,
        limited=limit.limited,
        processes=members,
    )


def top_process() -> int:
    """Return the highest ancestor of this process that runs the same executable."""
    me = psutil.Process()
    try:
        exe = me.exe()
        top = me
        for parent in me.parents():
            if parent.pid <= 1 or parent.exe() != exe:
                break
            top = parent
        return top.pid
    except (psutil.Error, OSError):
        return me.pid


def _tree_pids(top: int) -> Iterator[int]:
    try:
        root = psutil.Process(top)
        yield root.pid
        for child in root.children(recursive=True):
            yield child.pid
    except psutil.Error:
        yield os.getpid()


def _cgroup_pids(directory: Path) -> list[int]:
    pids: list[int] = []
    for dirpath, _dirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                text = (Path(dirpath) / "cgroup.procs").read_text()
            except OSError:
                continue
            pids.extend(int(line) for line in text.split() if line.isdigit())
    return pids


def _processes(pids: list[int], proc: Path) -> tuple[DynoProcess, ...]:
    found = []
    for pid in pids:
        try:
            fields = (proc / str(pid) / "statm").read_text().split()
            name = (proc / str(pid) / "comm").read_text().strip()
        except OSError:  # gone since it was listed
            continue
        resident, shared = int(fields[1]), int(fields[2])
        found.append(
            DynoProcess(pid, name, resident * _PAGE_SIZE, max(resident - shared, 0) * _PAGE_SIZE)
        )
    return tuple(sorted(found, key=lambda p: p.rss, reverse=True))


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    stat = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stat[key] = int(value)
    return stat
