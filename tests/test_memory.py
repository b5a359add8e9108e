"""Tests of boundkit.memory and boundkit._limits: probes, limits, snapshot, trim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from boundkit import ConfigError
from boundkit.memory import (
    MemoryLimit,
    memory_limit,
    memory_snapshot,
    process_memory,
    trim_memory,
)
from fakes import V1_MOUNT, V2_MOUNT, fake_proc_and_sys

V1_UNLIMITED = "9223372036854771712"
MB = 1024 * 1024
SNAPSHOT_KEYS = {
    "rss_mb",
    "rss_anon_mb",
    "peak_rss_mb",
    "limit_mb",
    "limit_source",
    "limited",
    "percent_of_limit",
    "within_limit",
    "status",
    "system_total_mb",
    "system_available_mb",
    "gc_counts",
    "pid",
    "timestamp",
    "dyno",
}


def test_process_memory_agrees_with_psutil() -> None:
    """The kept-open statm reading matches psutil's RSS for this process."""
    ours = process_memory()
    info = psutil.Process().memory_info()
    assert abs(ours.rss - info.rss) < 8 * MB
    assert 0 < ours.rss_anon <= ours.rss


def test_process_memory_of_another_process() -> None:
    """Another process's memory is read by pid."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = process_memory(child.pid)
        assert 0 < theirs.rss_anon <= theirs.rss
        assert abs(psutil.Process(child.pid).memory_info().rss - theirs.rss) < 8 * MB
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_process_memory_after_fork_reads_the_child() -> None:
    """A forked child reads its own memory, not the parent's through an inherited file."""
    process_memory()  # open the kept file in the parent first
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        before = process_memory().rss_anon
        block = bytearray(64 * MB)
        block[::4096] = b"x" * len(block[::4096])
        grown = process_memory().rss_anon - before
        os.write(write_end, str(grown).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        grown = int(pipe.read())
    os.waitpid(pid, 0)
    assert grown >= 60 * MB


def test_trim_memory_gives_back_freed_heap() -> None:
    """After freeing many small objects, trim_memory() returns what RSS gave back."""
    blocks = [bytes(200) + bytes([i % 256]) for i in range(200_000)]
    del blocks
    before = process_memory().rss
    given_back = trim_memory()
    after = process_memory().rss
    assert given_back >= 0
    assert after <= before
    assert abs((before - after) - given_back) < 4 * MB


# -- memory_limit on fake trees ---------------------------------------------------------


NO_ENV: dict[str, str] = {}


def _limit(proc: Path, sys_root: Path, environ: dict[str, str] = NO_ENV) -> MemoryLimit:
    return memory_limit(environ=environ, proc_root=proc, sys_root=sys_root)


def test_cgroup_v2_nested_takes_the_smallest_limit_up_the_tree(tmp_path: Path) -> None:
    """The limit is the minimum of memory.max from this process's cgroup up to the root."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/app/web/worker\n",
        mounts=[V2_MOUNT],
        files={
            "fs/cgroup/memory.max": "max\n",
            "fs/cgroup/app/memory.max": str(512 * MB),
            "fs/cgroup/app/web/memory.max": "max\n",
            "fs/cgroup/app/web/worker/memory.max": str(2048 * MB),
            "fs/cgroup/other/memory.max": str(64 * MB),  # a sibling: not ours
        },
    )
    found = _limit(proc, sys_root)
    assert 512 * MB == found.bytes
    assert found.limited
    assert found.source.startswith("cgroup v2")
    assert found.source.endswith("fs/cgroup/app/memory.max")


def test_cgroup_v2_unlimited_falls_through_to_the_system_total(tmp_path: Path) -> None:
    """'max' at every level means no cgroup limit: the system total, reported as such."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/app\n",
        mounts=[V2_MOUNT],
        files={"fs/cgroup/memory.max": "max\n", "fs/cgroup/app/memory.max": "max\n"},
    )
    found = _limit(proc, sys_root)
    assert MemoryLimit(psutil.virtual_memory().total, "no limit found", limited=False) == found


def test_cgroup_v2_mount_of_a_subtree_without_namespace(tmp_path: Path) -> None:
    """A container that sees the host's cgroup path but only its own subtree reads the mount."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/kubepods/pod42/container7\n",
        mounts=[V2_MOUNT],
        files={"fs/cgroup/memory.max": str(300 * MB)},
    )
    assert 300 * MB == _limit(proc, sys_root).bytes


def test_cgroup_v2_namespaced_mount_root(tmp_path: Path) -> None:
    """A mount whose root is a subtree maps this process's path relative to that root."""
    mount = "41 31 0:38 /kubepods /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw"
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/kubepods/pod42\n",
        mounts=[mount],
        files={
            "fs/cgroup/memory.max": "max\n",
            "fs/cgroup/pod42/memory.max": str(256 * MB),
        },
    )
    assert 256 * MB == _limit(proc, sys_root).bytes


def test_cgroup_v1_limited_and_nested(tmp_path: Path) -> None:
    """cgroup v1 takes the smallest memory.limit_in_bytes up the tree."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="9:pids:/\n4:memory:/docker/abc\n1:cpu:/\n",
        mounts=[V1_MOUNT],
        files={
            "fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
            "fs/cgroup/memory/docker/memory.limit_in_bytes": str(1024 * MB),
            "fs/cgroup/memory/docker/abc/memory.limit_in_bytes": V1_UNLIMITED,
            "fs/cgroup/memory/docker/abc/memory.stat": f"cache 0\nhierarchical_memory_limit "
            f"{1024 * MB}\n",
        },
    )
    found = _limit(proc, sys_root)
    assert 1024 * MB == found.bytes
    assert found.source.startswith("cgroup v1")


def test_cgroup_v1_hierarchical_limit_counts(tmp_path: Path) -> None:
    """A hierarchical_memory_limit lower than any readable limit file is the limit."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="4:memory:/job\n",
        mounts=[V1_MOUNT],
        files={
            "fs/cgroup/memory/job/memory.limit_in_bytes": V1_UNLIMITED,
            "fs/cgroup/memory/job/memory.stat": f"hierarchical_memory_limit {200 * MB}\n",
        },
    )
    assert 200 * MB == _limit(proc, sys_root).bytes


def test_cgroup_v1_unlimited_like_this_machine(tmp_path: Path) -> None:
    """9223372036854771712 at every level (as on this machine) means unlimited."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="4:memory:/process_api/2081\n",
        mounts=[V1_MOUNT],
        files={
            "fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
            "fs/cgroup/memory/memory.stat": f"hierarchical_memory_limit {V1_UNLIMITED}\n",
        },
    )
    assert not _limit(proc, sys_root).limited


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 * MB), ("1.5G", 1536 * MB), ("512MiB", 512 * MB), ("1048576", MB)],
)
def test_env_override_wins_over_cgroups(tmp_path: Path, text: str, expected: int) -> None:
    """BOUNDKIT_MEMORY_LIMIT beats any cgroup limit and accepts human sizes."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path, cgroup="0::/\n", mounts=[V2_MOUNT], files={"fs/cgroup/memory.max": "1000000"}
    )
    found = _limit(proc, sys_root, {"BOUNDKIT_MEMORY_LIMIT": text})
    assert MemoryLimit(expected, "BOUNDKIT_MEMORY_LIMIT") == found


@pytest.mark.parametrize("text", ["lots", "0", "-1G", "12 parsecs"])
def test_env_override_bad_value_names_variable_and_value(tmp_path: Path, text: str) -> None:
    """A bad BOUNDKIT_MEMORY_LIMIT raises ConfigError naming the variable and the value."""
    with pytest.raises(ConfigError) as info:
        memory_limit(environ={"BOUNDKIT_MEMORY_LIMIT": text}, proc_root=tmp_path)
    assert "BOUNDKIT_MEMORY_LIMIT" in str(info.value)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("name", ["DYNO_RAM", "MEMORY_AVAILABLE"])
def test_platform_hints_in_megabytes(tmp_path: Path, name: str) -> None:
    """With no cgroup limit, a platform's MB hint is the limit."""
    found = memory_limit(environ={name: "512"}, proc_root=tmp_path, sys_root=tmp_path)
    assert MemoryLimit(512 * MB, name) == found


def test_platform_hint_bad_value(tmp_path: Path) -> None:
    """A hint that is not a number of MiB raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"DYNO_RAM.*'half a gig'"):
        memory_limit(environ={"DYNO_RAM": "half a gig"}, proc_root=tmp_path)


def test_cgroup_limit_beats_platform_hint(tmp_path: Path) -> None:
    """A real cgroup limit is preferred to an announced one."""
    proc, sys_root = fake_proc_and_sys(
        tmp_path,
        cgroup="0::/\n",
        mounts=[V2_MOUNT],
        files={"fs/cgroup/memory.max": str(256 * MB)},
    )
    assert 256 * MB == _limit(proc, sys_root, {"DYNO_RAM": "512"}).bytes


def test_rlimit_as_is_used_when_nothing_else_limits(tmp_path: Path) -> None:
    """A finite RLIMIT_AS is the limit when no cgroup or hint gives one."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (8 * 1024**3, resource.RLIM_INFINITY))\n"
        "from boundkit.memory import memory_limit\n"
        f"print(memory_limit(environ={{}}, proc_root={str(tmp_path)!r}).as_dict())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert str({"bytes": 8 * 1024**3, "source": "RLIMIT_AS", "limited": True}) == out.strip()


def test_memory_limit_on_this_machine_is_sane() -> None:
    """On the real machine the limit is positive and its source is named."""
    found = memory_limit()
    assert found.bytes > 0
    assert found.source


# -- memory_snapshot -----------------------------------------------------------------


def test_snapshot_has_every_documented_key_and_is_json() -> None:
    """The snapshot carries the documented keys and survives a JSON round trip."""
    snap = memory_snapshot()
    assert SNAPSHOT_KEYS == set(snap)
    assert snap == json.loads(json.dumps(snap))
    assert os.getpid() == snap["pid"]
    assert snap["timestamp"].endswith("+00:00")


@pytest.mark.parametrize(
    ("limit_mb_factor", "status"), [(10.0, "ok"), (1.17, "warning"), (1.05, "critical")]
)
def test_snapshot_status_against_thresholds(limit_mb_factor: float, status: str) -> None:
    """Status is ok below 80 %, warning from 80 % and critical from 90 % of the limit."""
    rss = process_memory().rss
    snap = memory_snapshot(limit=MemoryLimit(int(rss * limit_mb_factor), "test"))
    assert status == snap["status"]
    assert "test" == snap["limit_source"]


@pytest.mark.parametrize(("warning", "critical"), [(0.9, 0.8), (0.0, 0.5), (-1.0, 0.9)])
def test_snapshot_rejects_bad_thresholds(warning: float, critical: float) -> None:
    """Thresholds out of order or not positive raise ConfigError naming them."""
    with pytest.raises(ConfigError, match=repr(warning)):
        memory_snapshot(warning=warning, critical=critical)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"warning": "0.8"}, "warning must be a fraction in [(]0, 1], got '0.8'"),
        ({"warning": None}, "warning must be a fraction in [(]0, 1], got None"),
        ({"critical": True}, "critical must be a fraction in [(]0, 1], got True"),
        ({"critical": 1.5}, "critical must be a fraction in [(]0, 1], got 1.5"),
        ({"critical": float("inf")}, "critical must be a fraction in [(]0, 1], got inf"),
        ({"warning": 0.95, "critical": 0.9}, "0 < warning <= critical, got 0.95 and 0.9"),
    ],
)
def test_snapshot_thresholds_are_validated(options: dict[str, object], message: str) -> None:
    """memory_snapshot's thresholds must be fractions in order: ConfigError names the value."""
    with pytest.raises(ConfigError, match=message):
        memory_snapshot(**options)  # type: ignore[arg-type]
