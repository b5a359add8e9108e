"""``boundkit watch`` and ``boundkit imports``: their arguments, live output and summary."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import IO, Any

from ._sizes import format_bytes, parse_bytes
from ._window import check_seconds
from .errors import BoundkitError

__all__ = ["add_parsers", "run_imports", "run_watch"]

_MB = 1024 * 1024
_SPARKS = "▁▂▃▄▅▆▇█"


def add_parsers(commands: Any) -> None:
    """Add the ``watch`` and ``imports`` subcommands to ``commands`` (argparse subparsers)."""
    watch = commands.add_parser(
        "watch",
        help="follow a process's memory over time and judge whether it grows",
        description="Sample a pid, a command (after --) or a boundkit /health URL; at the end "
        "print min/max/mean, the growth rate with its 95% interval, a verdict and the time to "
        "the limit. Exit status: 0 stable, 3 plateau, 4 growing, 5 too few samples, 1 error.",
    )
    target = watch.add_mutually_exclusive_group()
    target.add_argument("--pid", type=int, help="watch this process and its children")
    target.add_argument("--url", help="poll this boundkit health route (e.g. .../health)")
    watch.add_argument(
        "--interval", type=float, default=5.0, help="seconds between samples (default 5)"
    )
    watch.add_argument("--duration", type=float, help="seconds to watch (default: until it ends)")
    watch.add_argument("--limit", help="memory limit, e.g. 512M (default: the container's)")
    watch.add_argument("--warmup", type=float, help="seconds left out of the fit (default: 10%%)")
    watch.add_argument(
        "--min-rate",
        type=float,
        default=0.1,
        help="growth below this many MiB/min is never a leak (default 0.1)",
    )
    watch.add_argument("--json", action="store_true", help="print the report as JSON")
    watch.add_argument("--csv", metavar="FILE", help="write the samples to FILE as they come")
    watch.add_argument("--plot", metavar="FILE", help="draw FILE.png, FILE.svg or FILE.html")
    watch.add_argument("--quiet", action="store_true", help="no live output, verdict line only")
    watch.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="run CMD and watch it"
    )

    imports = commands.add_parser(
        "imports",
        help="measure what importing each module costs, each in a fresh interpreter",
    )
    imports.add_argument("modules", nargs="*", metavar="MODULE")
    imports.add_argument(
        "--requirements", metavar="FILE", help="the modules of a requirements file"
    )
    imports.add_argument("--installed", action="store_true", help="every installed distribution")
    imports.add_argument("--json", action="store_true", help="print JSON instead of a table")
    imports.add_argument("--quiet", action="store_true", help="no progress on stderr")


class _Live:
    """Shows each sample: a line per sample when piped, one rewritten line on a terminal."""

    def __init__(self, stream: IO[str], *, quiet: bool, csv_file: IO[str] | None) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.values: list[float] = []
        self.csv = csv.writer(csv_file) if csv_file is not None else None
        self.csv_file = csv_file
        if self.csv is not None:
            self.csv.writerow(["t_s", "rss_mb", "processes"])

    def __call__(self, sample: Any) -> None:
        mb = sample.rss / _MB
        self.values.append(mb)
        if self.csv is not None and self.csv_file is not None:
            self.csv.writerow([sample.t, round(mb, 3), sample.processes])
            self.csv_file.flush()
        if self.quiet:
            return
        if not self.tty:
            print(
                f"t={sample.t:.1f}s rss={mb:.1f}MiB processes={sample.processes}",
                file=self.stream,
                flush=True,
            )
            return
        recent = self.values[-40:]
        low, high = min(recent), max(recent)
        spark = "".join(
            _SPARKS[int((v - low) / (high - low) * 7) if high > low else 0] for v in recent
        )
        self.stream.write(
            f"\r{sample.t:7.0f}s  {mb:8.1f} MiB  min {min(self.values):.1f}  "
            f"max {max(self.values):.1f}  {spark}\x1b[K"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and not self.quiet and self.values:
            self.stream.write("\n")


def _describe(report: Any) -> str:
    data = report.as_dict()
    lines = [
        f"target     {data['target']}  ({data['count']} samples over {data['duration_s']:.0f} s, "
        f"ended: {data['ended']})",
        f"memory     min {data['min_mb']} MiB  max {data['max_mb']} MiB  "
        f"mean {data['mean_mb']} MiB",
        f"limit      {data['limit_mb']} MiB ({data['limit_source']})",
    ]
    if data["rate_mb_per_min"] is not None:
        low, high = data["rate_ci95_mb_per_min"]
        lines.append(
            f"growth     {data['rate_mb_per_min']:+.3f} MiB/min after {data['warmup_s']:.0f} s "
            f"warm-up (95% CI {low:+.3f} to {high:+.3f})"
        )
    if data["time_to_limit_s"] is not None:
        lines.append(f"to limit   {data['time_to_limit_s'] / 60:.1f} min at that rate")
    lines.append(f"verdict    {data['verdict']} (exit {data['exit_code']})")
    return "\n".join(lines)


def run_watch(args: argparse.Namespace) -> int:
    """Run ``boundkit watch``; return the verdict's exit status (1 on a target error)."""
    from .memory import memory_limit
    from .watch import CommandTarget, HealthTarget, ProcessTarget, Target, summarise, watch

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    chosen = sum(x is not None and x != [] for x in (args.pid, args.url, command or None))
    try:
        if chosen != 1:
            raise BoundkitError("watch needs exactly one of --pid PID, --url URL or -- CMD ARGS")
        check_seconds("--interval", args.interval)  # before starting a command, not after
        if args.duration is not None:
            check_seconds("--duration", args.duration)
        if args.warmup is not None:
            check_seconds("--warmup", args.warmup, allow_zero=True)
        limit = parse_bytes(args.limit, name="--limit") if args.limit else None
        if args.plot:  # before watching for minutes, not after
            from .watch_plot import check_plot_path

            check_plot_path(args.plot)
        target: Target
        if args.pid is not None:
            target = ProcessTarget(args.pid)
        elif args.url is not None:
            target = HealthTarget(args.url, token=os.environ.get("BOUNDKIT_HEALTH_TOKEN"))
        else:
            target = CommandTarget(command, stdout=2 if args.json else None)
    except BoundkitError as exc:
        print(f"boundkit watch: {exc}", file=sys.stderr)
        return 1
    out = sys.stderr if args.json else sys.stdout
    csv_file = open(args.csv, "w", newline="", encoding="utf-8") if args.csv else None  # noqa: SIM115
    live = _Live(out, quiet=args.quiet, csv_file=csv_file)
    try:
        samples, ended = watch(
            target, interval=args.interval, duration=args.duration, on_sample=live
        )
    except BoundkitError as exc:
        print(f"boundkit watch: {exc}", file=sys.stderr)
        return 1
    finally:
        live.finish()
        target.close()
        if csv_file is not None:
            csv_file.close()
    if limit is not None:
        source = "--limit"
    elif target.limit() is not None:
        limit, source = target.limit(), "health"
    else:
        found = memory_limit()
        limit, source = found.bytes, found.source
    assert limit is not None
    report = summarise(
        target.description,
        samples,
        interval=args.interval,
        ended=ended,
        limit=limit,
        limit_source=source,
        min_rate=args.min_rate * _MB / 60,
        warmup=args.warmup,
    )
    if args.plot:
        from .watch_plot import write_plot

        try:
            write_plot(report, args.plot)
        except BoundkitError as exc:
            print(f"boundkit watch: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif args.quiet:
        print(f"{report.verdict} {format_bytes(report.rate * 60) if report.rate else '0 B'}/min")
    else:
        print(_describe(report))
    return report.exit_code


def run_imports(args: argparse.Namespace) -> int:
    """Run ``boundkit imports``; exit 1 if a module failed to import."""
    from .imports_cost import installed_modules, measure_imports, modules_from_requirements

    modules = list(args.modules)
    try:
        if args.requirements:
            modules += modules_from_requirements(args.requirements)
        if args.installed:
            modules += installed_modules()
        if not modules:
            raise BoundkitError("imports needs MODULE names, --requirements FILE or --installed")
    except (BoundkitError, OSError) as exc:
        print(f"boundkit imports: {exc}", file=sys.stderr)
        return 1
    progress = None if args.quiet or args.json else sys.stderr
    costs = measure_imports(dict.fromkeys(modules), progress=progress)
    if args.json:
        print(
            json.dumps(
                {"schema": "boundkit.imports/1", "modules": [c.as_dict() for c in costs]}, indent=2
            )
        )
    else:
        print(f"{'module':<28} {'rss':>10} {'time':>9}  heavy imports")
        for cost in costs:
            if cost.error:
                print(f"{cost.module:<28} {'failed':>10} {'':>9}  {cost.error}")
                continue
            heavy = ", ".join(f"{d['module']} {d['rss_mb']:.1f}M" for d in cost.heavy[:4])
            print(
                f"{cost.module:<28} {cost.rss_mb:>6.1f} MiB {cost.seconds * 1000:>6.0f} ms  {heavy}"
            )
    return 1 if any(c.error for c in costs) else 0
