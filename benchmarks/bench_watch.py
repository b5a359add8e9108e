"""How fast ``boundkit watch`` detects a 1 MiB/min leak, and how often it cries wolf.

1. A real Python process runs a GC-sawtooth workload (reference cycles holding
   50-150 KB buffers, freed by the cyclic collector, with glibc's mmap threshold
   fixed so freed buffers leave RSS); its RSS is sampled every
   ``--fast`` seconds. The samples less their median are the noise profile.
2. Simulated runs at a 5 s interval (no real minutes pass): the noise profile,
   read from a random offset (so its saw teeth and serial correlation are kept;
   one measured sample stands for one 5 s sample), plus a 1 MiB/min leak or no
   leak, judged at the end of runs of 1 to 60 minutes. The time to detect is the
   shortest run length from which at least 95% of leaking runs are judged
   ``growing`` while at most 1% of stable runs are.
3. The same runs judged by ordinary least squares with its textbook 95% interval,
   the method a hand-written script uses, as the peer.

Also times drawing one plot each way (SVG/HTML here, PNG with matplotlib, HTML with
plotly, the peers a user would reach for) in fresh interpreters, with peak RSS.
Prints the counts per run length, and writes the plot of one 30-minute leaking run
(``--plot``, e.g. docs/_static/watch-leak.svg).

    python benchmarks/bench_watch.py [--runs 100] [--plot FILE.svg]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from boundkit._trend import judge
from boundkit.memory import process_memory
from boundkit.watch import DEFAULT_MIN_RATE, Sample, summarise

MIB = 1024 * 1024
INTERVAL = 5.0
LEAK = MIB / 60  # bytes per second: 1 MiB/min
DURATIONS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60)

SAWTOOTH_WORKER = """
import gc, random, time
gc.set_threshold(200, 10, 10)
while True:
    node = [bytearray(random.randrange(50_000, 150_000))]
    node.append(node)  # a cycle: only the collector frees it
    del node
    time.sleep(random.uniform(0.002, 0.008))
"""
# a fixed mmap threshold: glibc's dynamic one would keep the freed buffers in the heap
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "32768"}


def measure_noise(seconds: float, fast: float) -> list[float]:
    """Sample a real GC-sawtooth process; return its RSS less the median, in bytes."""
    worker = subprocess.Popen(
        [sys.executable, "-c", SAWTOOTH_WORKER], env={**os.environ, **WORKER_ENV}
    )
    try:
        time.sleep(1.0)  # past start-up
        values = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            values.append(process_memory(worker.pid).rss)
            time.sleep(fast)
    finally:
        worker.kill()
        worker.wait()
    centre = statistics.median(values)
    return [v - centre for v in values]


PLOT_SETUP = """
import random, sys
from boundkit.watch import Sample, summarise
MIB = 1024 * 1024
samples = [Sample(5.0 * i, int(200 * MIB + MIB / 12 * i + random.gauss(0, MIB)), 1)
           for i in range(360)]
report = summarise("x", samples, interval=5, ended="duration", limit=512 * MIB,
                   limit_source="x")
"""
WRITE = "from boundkit.watch_plot import write_plot; write_plot(report, OUT + {!r})"
PLOTTERS = {
    "baseline (report, no plot)": "",
    "boundkit SVG (stdlib)": WRITE.format(".svg"),
    "boundkit HTML (stdlib)": WRITE.format(".html"),
    "boundkit PNG (matplotlib)": WRITE.format(".png"),
    "plotly HTML (peer)": (
        "import plotly.graph_objects as go; fig = go.Figure(go.Scatter("
        "x=[s.t for s in samples], y=[s.rss / MIB for s in samples])); "
        "fig.write_html(OUT + '.plotly.html', include_plotlyjs=True)"
    ),
}  # fmt: skip


def plot_costs(repeats: int, directory: str) -> None:
    """Wall time and peak RSS of drawing one 360-sample plot, each way, in fresh interpreters."""
    print(f"\ncost of drawing one 360-sample plot in a fresh interpreter, median of {repeats}")
    print(f"{'way':<28} {'seconds':>8} {'peak RSS':>10} {'file':>10}")
    for name, code in PLOTTERS.items():
        times, peaks = [], []
        out = os.path.join(directory, "plot")
        for _ in range(repeats):
            started = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-c", f"OUT = {out!r}\n{PLOT_SETUP}\n{code}"])
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            times.append(time.perf_counter() - started)
            peaks.append(usage.ru_maxrss / 1024)
        if child.returncode:
            print(f"{name:<28} failed (exit {child.returncode}): is its library installed?")
            continue
        written = [f for f in os.listdir(directory) if f.startswith("plot")]
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in written)
        for f in written:
            os.remove(os.path.join(directory, f))
        print(f"{name:<28} {statistics.median(times):>8.2f} "
              f"{statistics.median(peaks):>6.1f} MiB {size / 1024:>6.0f} KiB")  # fmt: skip


def series(noise: list[float], rnd: random.Random, count: int, rate: float) -> list[float]:
    start = rnd.randrange(len(noise))
    return [200 * MIB + noise[(start + i) % len(noise)] + rate * INTERVAL * i for i in range(count)]


def ols_growing(ts: list[float], ys: list[float], min_rate: float) -> bool:
    """The peer: least squares, growing when the 95% interval's lower bound > min_rate."""
    fit = statistics.linear_regression(ts, ys)
    residuals = [y - fit.intercept - fit.slope * t for t, y in zip(ts, ys, strict=True)]
    mean_t = statistics.fmean(ts)
    spread = sum((t - mean_t) ** 2 for t in ts)
    error = (sum(r * r for r in residuals) / (len(ts) - 2) / spread) ** 0.5
    return fit.slope - 1.96 * error > min_rate


def boundkit_growing(ts: list[float], ys: list[float], min_rate: float) -> bool:
    return judge(ts, ys, min_rate=min_rate).verdict == "growing"


Method = Callable[[list[float], list[float], float], bool]


def verdicts(noise: list[float], runs: int, minutes: float, rate: float, method: Method) -> int:
    """How many of ``runs`` runs of ``minutes`` at ``rate`` ``method`` calls growing."""
    rnd = random.Random(int(minutes * 1000) + (1 if rate else 2))
    count = int(minutes * 60 / INTERVAL)
    ts = [INTERVAL * i for i in range(count)]
    return sum(method(ts, series(noise, rnd, count, rate), DEFAULT_MIN_RATE) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0, help="real sampling time")
    parser.add_argument("--fast", type=float, default=0.05, help="real sampling interval")
    parser.add_argument("--plot", help="write one detection run's plot here (.svg/.png/.html)")
    parser.add_argument("--plot-repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        plot_costs(args.plot_repeats, directory)

    noise = measure_noise(args.seconds, args.fast)
    amplitude = (max(noise) - min(noise)) / MIB
    print(f"real GC-sawtooth process: {len(noise)} samples, peak-to-trough {amplitude:.1f} MiB,")
    floor = DEFAULT_MIN_RATE * 60 / MIB
    print(f"  noise sd {statistics.pstdev(noise) / MIB:.2f} MiB; simulated at a {INTERVAL:g} s "
          f"interval, leak 1 MiB/min, min rate {floor:g} MiB/min")  # fmt: skip
    methods = (("boundkit (Theil-Sen, widened CI)", boundkit_growing),
               ("least squares, textbook CI", ols_growing))  # fmt: skip
    print(f"\nruns called 'growing', of {args.runs} at each run length: leaking / stable")
    print(f"{'minutes':>7}  " + "  ".join(f"{name:>34}" for name, _ in methods))
    detected: dict[str, float] = {}
    for minutes in DURATIONS:
        cells = []
        for name, method in methods:
            hits = verdicts(noise, args.runs, minutes, LEAK, method)
            alarms = verdicts(noise, args.runs, minutes, 0.0, method)
            if hits >= 0.95 * args.runs and alarms <= 0.01 * args.runs:
                detected.setdefault(name, minutes)
            else:
                detected.pop(name, None)  # must hold at every longer run too
            cells.append(f"{hits:>3} / {alarms:<3}")
        print(f"{minutes:>7g}  " + "  ".join(f"{c:>34}" for c in cells))
    print("\ntime to detect (shortest run from which >= 95% of leaking runs are growing and")
    print("<= 1% of stable runs are, at every longer run too):")
    for name, _ in methods:
        when = detected.get(name)
        print(f"  {name:<34} " + (f"{when:g} min" if when else "not within 60 min"))

    if args.plot:
        from boundkit.watch_plot import write_plot

        ys = series(noise, random.Random(3), int(30 * 60 / INTERVAL), LEAK)
        samples = [Sample(INTERVAL * i, int(y), 1) for i, y in enumerate(ys)]
        report = summarise("simulated worker, 1 MiB/min leak", samples, interval=INTERVAL,
                           ended="duration", limit=512 * MIB, limit_source="example")  # fmt: skip
        print(f"\nplot: {write_plot(report, args.plot)} ({report.verdict})")


if __name__ == "__main__":
    main()
