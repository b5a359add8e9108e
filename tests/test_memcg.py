"""boundkit._memcg: memory cgroups for worker processes, on the machine's real cgroup tree."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from boundkit._memcg import MemoryCgroup, create_memory_cgroup


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    """A 64 MiB cgroup, or a skip where this process may not create one."""
    made = create_memory_cgroup(64 * 1024**2)
    if made is None:
        pytest.skip("no writable memory cgroup here (needs root and cgroup v1 or v2)")
    yield made
    made.remove()


def test_limit_is_written_and_removed(cgroup: MemoryCgroup) -> None:
    """The cgroup exists with the limit asked for, and remove() deletes it."""
    limit_file = "memory.max" if cgroup.version == 2 else "memory.limit_in_bytes"
    assert 64 * 1024**2 == int((cgroup.path / limit_file).read_text())
    assert 0 == cgroup.oom_kills()
    cgroup.remove()
    assert not cgroup.path.exists()


def test_a_process_past_the_limit_is_killed_and_counted(cgroup: MemoryCgroup) -> None:
    """A process that joins and allocates past the limit is OOM-killed, and oom_kills says so."""
    code = (
        "import sys\n"
        "open(sys.argv[1] + '/cgroup.procs', 'w').write(str(__import__('os').getpid()))\n"
        "ballast = bytearray(b'x') * (256 * 1024 * 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(cgroup.path)], check=False)
    assert -9 == done.returncode
    assert cgroup.oom_kills() >= 1


def test_stale_cgroups_of_dead_parents_are_removed(cgroup: MemoryCgroup) -> None:
    """A cgroup left by a boundkit process that died is removed when the next one is made."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = cgroup.path.parent / f"boundkit-pdf-{dead.stdout.strip()}-0"
    stale.mkdir()
    mine = cgroup.path.parent / f"boundkit-pdf-{os.getpid()}-999"
    mine.mkdir()
    try:
        fresh = create_memory_cgroup(32 * 1024**2)
        assert fresh is not None
        fresh.remove()
        assert not stale.exists()
        assert mine.exists()  # this process is alive: its cgroups stay
    finally:
        for path in (stale, mine):
            if path.exists():
                path.rmdir()
