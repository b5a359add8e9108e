"""How often do growth checks get it wrong? boundkit beside psleak and pytest-memray.

Runs every case below ``--runs`` times (default 20) per tool, each run in a fresh
interpreter, and prints per case the false positives (a clean case flagged), the
false negatives (a leak missed) and the median seconds per check. Tools:

- ``boundkit``: ``boundkit.testing.measure_growth(fn)`` with its defaults.
- ``psleak``: ``MemoryLeakTestCase().execute(fn)`` with the memory checker only,
  ``warmup_times=1000`` and ``PYTHONMALLOC=malloc`` (which it requires).
- ``memray``: pytest-memray's ``@pytest.mark.limit_leaks("64 KB")`` on a test
  calling ``fn`` 1000 times after a 1000-call warm-up in a fixture (not tracked);
  its time is the test body's, under tracking.

Usage: ``python benchmarks/bench_growth.py [--runs 5] [--cases noop,lru_churn]
[--tools boundkit,psleak]``. Times are medians of wall-clock seconds per check
(``time.perf_counter`` inside the child), not pyperf.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
# measure this checkout's boundkit, not whichever one is installed
sys.path.insert(0, str(HERE.parent.parent / "src"))
Fn = Callable[[], object]


def _bytes_object(total: int) -> bytes:
    """A fresh bytes object whose sys.getsizeof is ``total``."""
    return b"x" * (total - sys.getsizeof(b""))


def leak_py_100b() -> Fn:
    kept: list[bytes] = []
    return lambda: kept.append(_bytes_object(100))


def leak_py_1kb() -> Fn:
    kept: list[bytes] = []
    return lambda: kept.append(_bytes_object(1024))


def leak_py_100b_fragmented() -> Fn:
    """The 100 B leak in a process whose heap has ~20 MB of free space in used pools.

    As in a long pytest session: the leak fills space the process already holds,
    so resident memory does not grow for a long while.
    """
    junk = [_bytes_object(100) for _ in range(200_000)]
    holes = junk[::64]  # one survivor in 64 keeps every pool, and so every arena, in use
    del junk
    kept: list[bytes] = []

    def leak() -> None:
        kept.append(_bytes_object(100))

    leak.holes = holes  # type: ignore[attr-defined]
    return leak


def leak_native_1kb() -> Fn:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]

    def leak() -> None:
        ctypes.memset(libc.malloc(1024), 1, 1024)  # never freed

    return leak


def noop() -> Fn:
    return lambda: None


def noop_busy_thread() -> Fn:
    def busy() -> None:
        while True:
            junk = [str(i) * 3 for i in range(200)]
            del junk

    threading.Thread(target=busy, daemon=True).start()
    return lambda: None


def alloc_free_1mb() -> Fn:
    return lambda: b"x" * (1 << 20)


def alloc_free_small() -> Fn:
    return lambda: [{"key": i, "value": str(i)} for i in range(500)]


def cache_plateau() -> Fn:
    cache: dict[int, bytes] = {}
    counter = iter(range(1 << 62))

    def lookup() -> None:
        key = next(counter) % 256
        if key not in cache:
            cache[key] = _bytes_object(1024)

    return lookup


def lru_churn() -> Fn:
    import cachetools

    cache: cachetools.LRUCache[int, bytes] = cachetools.LRUCache(maxsize=2 << 20, getsizeof=len)
    counter = iter(range(1 << 62))
    rng = random.Random()

    def churn() -> None:
        cache[next(counter)] = b"x" * rng.randrange(16, 16384)

    return churn


# case name -> (leaks?, factory)
CASES: dict[str, tuple[bool, Callable[[], Fn]]] = {
    "leak_py_100b": (True, leak_py_100b),
    "leak_py_100b_fragmented": (True, leak_py_100b_fragmented),
    "leak_native_1kb": (True, leak_native_1kb),
    "leak_py_1kb": (True, leak_py_1kb),
    "noop": (False, noop),
    "noop_busy_thread": (False, noop_busy_thread),
    "alloc_free_1mb": (False, alloc_free_1mb),
    "alloc_free_small": (False, alloc_free_small),
    "cache_plateau": (False, cache_plateau),
    "lru_churn": (False, lru_churn),
}

MEMRAY_TEST = """
import os, sys, time
import pytest
sys.path.insert(0, {here!r})
import bench_growth

@pytest.fixture(scope="module")
def warm():
    fn = bench_growth.CASES[{case!r}][1]()
    for _ in range(1000):
        fn()
    return fn

@pytest.mark.limit_leaks("64 KB")
def test_case(warm):
    started = time.perf_counter()
    for _ in range(1000):
        warm()
    with open(os.environ["BENCH_TIME_FILE"], "w") as out:
        out.write(str(time.perf_counter() - started))
"""


def child(tool: str, case: str) -> dict[str, object]:
    """Run one check in this process; say whether it flagged growth and how long it took."""
    fn = CASES[case][1]()
    started = time.perf_counter()
    if tool == "boundkit":
        from boundkit.testing import measure_growth

        flagged = measure_growth(fn).leaked
    elif tool == "psleak":
        import psleak

        try:
            psleak.MemoryLeakTestCase().execute(
                fn, warmup_times=1000, checkers=psleak.Checkers.only("memory")
            )
            flagged = False
        except psleak.MemoryLeakError:
            flagged = True
    else:
        raise SystemExit(f"unknown tool {tool!r}")
    return {"flagged": flagged, "seconds": time.perf_counter() - started}


def run_memray(case: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        test_file = Path(tmp, "test_memray_case.py")
        test_file.write_text(MEMRAY_TEST.format(here=str(HERE.parent), case=case))
        time_file = Path(tmp, "seconds")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "pytest_memray.plugin",
                "--memray",
                "-q",
                "-p",
                "no:cacheprovider",
                "-W",
                "ignore",
                str(test_file),
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            # only memray's plugin: other plugins' imports would dominate the run time
            env={
                **os.environ,
                "BENCH_TIME_FILE": str(time_file),
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            },
        )
        if proc.returncode not in (0, 1) or not time_file.exists():
            raise RuntimeError(
                f"memray run failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return {"flagged": proc.returncode == 1, "seconds": float(time_file.read_text())}


def run_once(tool: str, case: str) -> dict[str, object]:
    if tool == "memray":
        return run_memray(case)
    env = dict(os.environ)
    if tool == "psleak":
        env.update(PYTHONMALLOC="malloc", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(HERE), "--child", tool, case],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} on {case} failed:\n{proc.stdout}{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def available(tool: str) -> bool:
    module = {"boundkit": "boundkit", "psleak": "psleak", "memray": "pytest_memray"}[tool]
    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="fresh processes per case and tool")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--tools", default="boundkit,psleak,memray", help="comma-separated tools")
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    cases = args.cases.split(",")
    tools = [tool for tool in args.tools.split(",") if available(tool)]
    unknown = [case for case in cases if case not in CASES]
    if unknown or args.runs < 1:
        parser.error(f"unknown cases {unknown} or --runs below 1")
    print(f"{args.runs} fresh-process runs per case and tool; python {sys.version.split()[0]}")
    print(
        f"{'case':<25}{'leaks':<7}" + "".join(f"{tool + ' FP/FN  s/check':<26}" for tool in tools)
    )
    totals = {tool: [0, 0] for tool in tools}
    for case in cases:
        leaks = CASES[case][0]
        cells = []
        for tool in tools:
            results = [run_once(tool, case) for _ in range(args.runs)]
            wrong = sum(result["flagged"] != leaks for result in results)
            fp, fn = (0, wrong) if leaks else (wrong, 0)
            totals[tool][0] += fp
            totals[tool][1] += fn
            median = statistics.median(float(result["seconds"]) for result in results)  # type: ignore[arg-type]
            cells.append(f"{fp:>2} / {fn:<2} {median:>8.3f}       ")
        print(
            f"{case:<25}{'yes' if leaks else 'no':<7}" + "".join(f"{c:<26}" for c in cells),
            flush=True,
        )
    print(
        f"{'total':<32}" + "".join(f"{totals[t][0]:>2} / {totals[t][1]:<2}{'':<19}" for t in tools)
    )
    print(
        "FP: clean case flagged; FN: leak missed. s/check: median seconds per check in the child"
        " (memray: its tracked 1000-call test body only, pytest start-up excluded)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
