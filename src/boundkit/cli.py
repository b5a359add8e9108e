"""The ``boundkit`` command: ``snapshot`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._limits import ENV_LIMIT, MemoryLimit
from ._sizes import format_bytes
from .errors import BoundkitError

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundkit", description="Keep a Python process inside a fixed memory budget."
    )
    parser.add_argument("--version", action="version", version=f"boundkit {__version__}")
    commands = parser.add_subparsers(dest="command")
    snapshot = commands.add_parser(
        "snapshot", help="print this process's memory, the dyno's and its share plan"
    )
    snapshot.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands.add_parser("demo", help="run naive workloads beside boundkit's and compare memory")
    from ._watch_cli import add_parsers

    add_parsers(commands)
    return parser


def collect_snapshot(limit: MemoryLimit | None = None) -> dict[str, Any]:
    """What ``boundkit snapshot --json`` prints: :func:`~boundkit.memory_snapshot` and the plans.

    ``plans`` (by arbiter pid) appears when governed gunicorns run on this machine.
    """
    from .dyno import find_states
    from .memory import memory_snapshot

    snap = memory_snapshot(limit=limit)
    plans = {
        state.directory.name.removeprefix("boundkit-"): state.read(state.plan_path)
        for state in find_states()
    }  # governed gunicorns on this machine, by arbiter pid
    if plans:
        snap["plans"] = plans
    return snap


def _snapshot(as_json: bool) -> int:
    from .memory import memory_limit, process_memory

    limit = memory_limit()
    snap = collect_snapshot(limit)
    rss = process_memory().rss
    if limit.bytes < rss:
        hint = "; a bare number is bytes (512M is 512 MiB)" if limit.source == ENV_LIMIT else ""
        print(
            f"boundkit: warning: the limit from {limit.source} ({format_bytes(limit.bytes)}) "
            f"is below this command's own resident memory ({format_bytes(rss)}){hint}",
            file=sys.stderr,
        )
    if as_json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    else:
        from ._report import snapshot_lines

        print("\n".join(snapshot_lines(snap)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Without a command it prints the help. A configuration error (such as a bad
    ``BOUNDKIT_MEMORY_LIMIT``) is printed as one line, with exit status 2.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "snapshot":
            return _snapshot(args.json)
        if args.command in ("watch", "imports"):
            from ._watch_cli import run_imports, run_watch

            return run_watch(args) if args.command == "watch" else run_imports(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(sys.stdout)
    except BoundkitError as exc:
        print(f"boundkit: error: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 0
