"""Fakes the tests inject where boundkit takes a clock, a memory reader or a /proc and /sys root."""

from __future__ import annotations

from pathlib import Path

MB = 1024**2


class FakeTimer:
    """A clock that moves only when a test ticks it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


class FakeMemory:
    """A memory reader that reports what a test sets in ``used``."""

    def __init__(self, used: int = 10 * MB) -> None:
        self.used = used

    def __call__(self) -> int:
        return self.used


V2_MOUNT = "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw"
V1_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"


def fake_proc_and_sys(
    tmp_path: Path, *, cgroup: str, mounts: list[str], files: dict[str, str]
) -> tuple[Path, Path]:
    """Write a fake /proc and /sys under ``tmp_path``: this process's cgroup and mounts in
    /proc, ``files`` (paths relative to /sys) in /sys; return both roots."""
    proc = tmp_path / "proc"
    sys_root = tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text("\n".join(mounts) + "\n")
    for name, text in files.items():
        path = sys_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc, sys_root
