"""What `import boundkit` costs over a bare interpreter: time and resident memory.

Run: python benchmarks/bench_import.py [--runs 20]
Each run is a fresh process; prints medians of wall time and of RSS at exit,
and the difference and ratio against `python -c pass`. Timing: time.perf_counter
around subprocess.run, so it includes interpreter start-up for both.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PROBE = (
    "import os\n"
    "{body}\n"
    "page = os.sysconf('SC_PAGE_SIZE')\n"
    "print(int(open('/proc/self/statm').read().split()[1]) * page)\n"
)
CASES = {
    "bare interpreter": "pass",
    "import boundkit": "import boundkit",
    "import boundkit + BoundedCache": "import boundkit; boundkit.BoundedCache",
    "import boundkit + pooled_connection": "import boundkit; boundkit.pooled_connection",
    "import boundkit + open_pdf (pymupdf)": "import boundkit; import pymupdf; boundkit.open_pdf",
}


def run(body: str, runs: int) -> tuple[float, float]:
    times, rss = [], []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(body=body)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        times.append(time.perf_counter() - started)
        rss.append(int(out))
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results = {}
    for name, body in CASES.items():
        try:
            results[name] = run(body, args.runs)
        except subprocess.CalledProcessError as exc:
            print(f"{name}: failed ({exc.stderr.strip().splitlines()[-1]})")
    base_time, base_rss = results["bare interpreter"]
    print(f"{'case':<38} {'median ms':>10} {'ratio':>6} {'RSS MiB':>8} {'+MiB':>6}")
    for name, (seconds, rss) in results.items():
        print(
            f"{name:<38} {seconds * 1000:>10.1f} {seconds / base_time:>6.2f} "
            f"{rss / 2**20:>8.1f} {(rss - base_rss) / 2**20:>6.1f}"
        )
    print(f"({args.runs} fresh processes per case, medians)")


if __name__ == "__main__":
    main()
