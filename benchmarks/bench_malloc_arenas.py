"""RSS of a threaded worker with glibc's default malloc arenas against ``MALLOC_ARENA_MAX=2``.

Run: ``PYTHONPATH=src python3 benchmarks/bench_malloc_arenas.py``. Each setting runs
in a fresh child process (the variable is read when glibc starts): 8 threads each
allocate and free mid-sized buffers (above pymalloc's 512-byte limit, so they come
from malloc) while keeping a few alive, the pattern of a threaded web worker. The
child prints its peak and final RSS; the parent prints the medians of 3 runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, random, threading
from boundkit.memory import process_memory, trim_memory

def work(seed):
    rng = random.Random(seed)
    kept = []
    for i in range(30_000):
        kept.append(bytearray(rng.randrange(600, 120_000)))
        if len(kept) > 400:
            del kept[rng.randrange(len(kept))]

peak = 0
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    peak = max(peak, process_memory().rss)
    threads[0].join(0.01)
for t in threads:
    t.join()
after = process_memory().rss
trim_memory()
print(json.dumps({"peak": peak, "after": after, "trimmed": process_memory().rss}))
"""


def run(arena_max: str | None) -> dict[str, int]:
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = arena_max
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out))


def main() -> int:
    mib = 1024**2
    print("8 threads x 30,000 malloc'd buffers of 0.6-120 KB, 400 kept per thread; medians of 3")
    print(f"{'setting':<22} {'peak RSS':>10} {'RSS after':>10} {'after trim':>11}")
    base = None
    for label, value in (("default arenas", None), ("MALLOC_ARENA_MAX=2", "2")):
        runs = [run(value) for _ in range(3)]
        peak, after, trimmed = (
            statistics.median(r[key] for r in runs) for key in ("peak", "after", "trimmed")
        )
        base = base or peak
        print(
            f"{label:<22} {peak / mib:7.1f} MiB {after / mib:6.1f} MiB {trimmed / mib:7.1f} MiB"
            f"   peak {peak / base:4.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
