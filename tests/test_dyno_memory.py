"""Tests of boundkit.memory.dyno_memory: the whole dyno on fake cgroup v1 and v2 trees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from boundkit.memory import dyno_memory, memory_snapshot
from fakes import V1_MOUNT, V2_MOUNT, fake_proc_and_sys

MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def _process(proc: Path, pid: int, name: str, resident_mb: int, shared_mb: int) -> None:
    """Write a fake /proc/<pid>/statm and comm."""
    (proc / str(pid)).mkdir()
    pages = resident_mb * MB // PAGE
    (proc / str(pid) / "statm").write_text(
        f"{pages * 2} {pages} {shared_mb * MB // PAGE} 1 0 1 0\n"
    )
    (proc / str(pid) / "comm").write_text(name + "\n")


def test_cgroup_v2_total_leaves_out_inactive_file_cache(tmp_path: Path) -> None:
    """v2: used = memory.current - inactive_file + swap, read where memory.max is set."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/dyno/web\n",
        mounts=[V2_MOUNT],
        files={
            "fs/cgroup/memory.max": "max\n",
            "fs/cgroup/dyno/memory.max": str(512 * MB),
            "fs/cgroup/dyno/memory.current": str(300 * MB),
            "fs/cgroup/dyno/memory.stat": (
                f"anon {200 * MB}\nfile {90 * MB}\nactive_file {30 * MB}\ninactive_file {60 * MB}\n"
            ),
            "fs/cgroup/dyno/memory.swap.current": str(10 * MB),
            "fs/cgroup/dyno/cgroup.procs": "",
            "fs/cgroup/dyno/web/memory.max": "max\n",
            "fs/cgroup/dyno/web/memory.current": str(290 * MB),
            "fs/cgroup/dyno/web/cgroup.procs": "101\n102\n103\n",
        },
    )
    _process(proc, 101, "gunicorn", 30, 10)
    _process(proc, 102, "gunicorn", 150, 12)
    _process(proc, 103, "gunicorn", 110, 12)
    dyno = dyno_memory(proc_root=proc, sys_root=sys_root)
    assert 512 * MB == dyno.limit
    assert dyno.limited
    assert (300 - 60 + 10) * MB == dyno.used
    assert (200 * MB, 90 * MB, 60 * MB, 10 * MB) == (
        dyno.anon,
        dyno.page_cache,
        dyno.reclaimable,
        dyno.swap,
    )
    assert dyno.source.startswith("cgroup v2")
    assert dyno.source.endswith("dyno/memory.current")
    assert [102, 103, 101] == [p.pid for p in dyno.processes]
    assert 150 * MB == dyno.processes[0].rss
    assert 138 * MB == dyno.processes[0].rss_anon
    as_dict = dyno.as_dict()
    assert 250.0 == as_dict["used_mb"]
    assert 48.8 == as_dict["percent_of_limit"]


def test_cgroup_v1_total_uses_the_hierarchical_stat(tmp_path: Path) -> None:
    """v1: used = usage_in_bytes - total_inactive_file + total_swap; processes of subgroups too."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="9:pids:/\n4:memory:/docker/abc\n1:cpu:/\n",
        mounts=[V1_MOUNT],
        files={
            "fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
            "fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(512 * MB),
            "fs/cgroup/memory/docker/abc/memory.usage_in_bytes": str(400 * MB),
            "fs/cgroup/memory/docker/abc/memory.stat": (
                f"cache {1 * MB}\nrss {2 * MB}\ninactive_file 0\n"
                f"total_cache {120 * MB}\ntotal_rss {280 * MB}\n"
                f"total_inactive_file {100 * MB}\ntotal_swap 0\n"
            ),
            "fs/cgroup/memory/docker/abc/cgroup.procs": "201\n",
            "fs/cgroup/memory/docker/abc/sub/cgroup.procs": "202\n",
        },
    )
    _process(proc, 201, "arbiter", 40, 8)
    _process(proc, 202, "worker", 240, 20)
    dyno = dyno_memory(proc_root=proc, sys_root=sys_root)
    assert (512 * MB, 300 * MB) == (dyno.limit, dyno.used)
    assert (280 * MB, 120 * MB, 100 * MB) == (dyno.anon, dyno.page_cache, dyno.reclaimable)
    assert dyno.source.startswith("cgroup v1")
    assert [202, 201] == [p.pid for p in dyno.processes]


def test_gone_process_is_skipped(tmp_path: Path) -> None:
    """A pid listed in cgroup.procs whose /proc entry has gone is left out, not an error."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/\n",
        mounts=[V2_MOUNT],
        files={
            "fs/cgroup/memory.max": str(256 * MB),
            "fs/cgroup/memory.current": str(100 * MB),
            "fs/cgroup/cgroup.procs": "301\n302\n",
        },
    )
    _process(proc, 301, "python", 50, 5)
    dyno = dyno_memory(proc_root=proc, sys_root=sys_root)
    assert [301] == [p.pid for p in dyno.processes]
    assert 100 * MB == dyno.used


def test_without_a_cgroup_limit_the_process_tree_is_summed(tmp_path: Path) -> None:
    """No cgroup limit: the total is the RSS of the top process and all its descendants."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dyno = dyno_memory(top=os.getpid(), sys_root=tmp_path / "sys")  # no cgroup files
        pids = {p.pid for p in dyno.processes}
        assert {os.getpid(), child.pid} <= pids
        assert dyno.source == f"process tree of pid {os.getpid()}"
        assert sum(p.rss for p in dyno.processes) == dyno.used
    finally:
        child.kill()
        child.wait()


def test_snapshot_includes_the_dyno() -> None:
    """memory_snapshot() carries the dyno's total and this process among its processes."""
    snap = memory_snapshot()
    dyno = snap["dyno"]
    assert dyno["used_mb"] > 0
    assert dyno["limit_mb"] > 0
    assert os.getpid() in {p["pid"] for p in dyno["processes"]}
