"""Reading this process's memory, and giving memory back to the system."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import resource
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import psutil

from ._dyno_memory import DynoMemory, DynoProcess, DynoReader, dyno_memory
from ._limits import MemoryLimit, memory_limit
from .errors import ConfigError

__all__ = [
    "DynoMemory",
    "DynoProcess",
    "DynoReader",
    "MemoryLimit",
    "ProcessMemory",
    "dyno_memory",
    "memory_limit",
    "memory_snapshot",
    "process_memory",
    "trim_memory",
]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of one process, in bytes.

    ``rss_anon`` is resident memory less file-backed and shared pages: the
    heap, stacks and anonymous mappings that a leak makes grow.
    """

    rss: int
    rss_anon: int

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


class _StatmReader:
    """Reads ``/proc/self/statm`` through a file kept open between calls.

    The descriptor is reopened after ``fork()``: an inherited one would go on
    reading the parent's numbers.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = 0

    def read(self) -> ProcessMemory | None:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            self.close()
            try:
                self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self._pid = pid
        fields = os.pread(self._fd, 128, 0).split()
        resident, shared = int(fields[1]), int(fields[2])
        return ProcessMemory(rss=resident * _PAGE_SIZE, rss_anon=(resident - shared) * _PAGE_SIZE)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


_statm = _StatmReader()


def process_memory(pid: int | None = None) -> ProcessMemory:
    """Return the resident and anonymous resident memory of a process.

    With no ``pid`` (or this process's own) on Linux this reads
    ``/proc/self/statm`` through a kept-open file, about ten times cheaper than
    psutil; elsewhere, and for other processes, it asks psutil.
    """
    if pid is None or pid == os.getpid():
        own = _statm.read() if sys.platform.startswith("linux") else None
        if own is not None:
            return own
    info = psutil.Process(pid).memory_info()
    shared = getattr(info, "shared", 0)
    return ProcessMemory(rss=info.rss, rss_anon=max(info.rss - shared, 0))


def _load_malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def trim_memory() -> int:
    """Run a full garbage collection, then return free heap pages to the system.

    Calls glibc's ``malloc_trim(0)`` where it exists (nothing else is tried
    elsewhere). Returns the resident bytes given back, 0 when none were.
    """
    before = process_memory().rss
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return max(before - process_memory().rss, 0)


_MB = 1024 * 1024


def _check_fraction(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a fraction in (0, 1], else raise ConfigError."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ConfigError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def memory_snapshot(
    *, warning: float = 0.80, critical: float = 0.90, limit: MemoryLimit | None = None
) -> dict[str, Any]:
    """Return this process's memory against its limit as a JSON-ready dict.

    Cheap enough for a health endpoint: no smaps, no gc scan. ``status`` is
    ``"ok"``, ``"warning"`` or ``"critical"`` as RSS passes the ``warning``
    and ``critical`` fractions of the limit. Keys (stable): ``rss_mb``,
    ``rss_anon_mb``, ``peak_rss_mb``, ``limit_mb``, ``limit_source``,
    ``limited``, ``percent_of_limit``, ``within_limit``, ``status``,
    ``system_total_mb``, ``system_available_mb``, ``gc_counts``, ``pid``,
    ``timestamp`` (ISO 8601, UTC), and ``dyno``: the whole container's
    memory and each process in it (:meth:`DynoMemory.as_dict`). Sizes are
    MiB.
    """
    if not _check_fraction("warning", warning) <= _check_fraction("critical", critical):
        raise ConfigError(
            f"thresholds must satisfy 0 < warning <= critical, got {warning!r} and {critical!r}"
        )
    mem = process_memory()
    found = limit if limit is not None else memory_limit()
    system = psutil.virtual_memory()
    fraction = mem.rss / found.bytes if found.bytes else 0.0
    status = "critical" if fraction >= critical else "warning" if fraction >= warning else "ok"
    return {
        "rss_mb": round(mem.rss / _MB, 1),
        "rss_anon_mb": round(mem.rss_anon / _MB, 1),
        "peak_rss_mb": round(_peak_rss() / _MB, 1),
        "limit_mb": round(found.bytes / _MB, 1),
        "limit_source": found.source,
        "limited": found.limited,
        "percent_of_limit": round(100 * fraction, 1),
        "within_limit": mem.rss < found.bytes,
        "status": status,
        "system_total_mb": round(system.total / _MB, 1),
        "system_available_mb": round(system.available / _MB, 1),
        "gc_counts": list(gc.get_count()),
        "pid": os.getpid(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dyno": dyno_memory().as_dict(),
    }


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
    return max(peak, _peak_before_reset)  # memory_scope() resets the kernel's figure


# The process's peak RSS before boundkit last reset the kernel's high-water mark.
_peak_before_reset = 0


def _high_water() -> int | None:
    """Peak RSS in bytes since the process started or its last reset (Linux ``VmHWM``)."""
    try:
        with open("/proc/self/status", "rb") as status:
            text = status.read()
    except OSError:
        return None
    start = text.find(b"VmHWM:")
    if start < 0:
        return None
    return int(text[start + 6 : text.index(b"kB", start)]) * 1024


def _reset_high_water(peak: int | None = None) -> int | None:
    """Reset ``VmHWM`` to the current RSS; return the peak it held, None where it cannot.

    Writes 5 to ``/proc/self/clear_refs`` (Linux 4.0+). The peak before the reset
    (``peak`` when the caller has just read it) is kept for
    :func:`memory_snapshot`'s ``peak_rss_mb``.
    """
    global _peak_before_reset
    if peak is None:
        peak = _high_water()
    if peak is None:
        return None
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:
        return None
    _peak_before_reset = max(_peak_before_reset, peak)
    return peak
