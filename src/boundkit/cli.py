"""The ``boundkit`` command: ``snapshot`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundkit", description="Keep a Python process inside a fixed memory budget."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    snapshot = commands.add_parser(
        "snapshot", help="print this process's memory, the dyno's and its share plan"
    )
    snapshot.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands.add_parser("demo", help="run naive workloads beside boundkit's and compare memory")
    return parser


def _snapshot(as_json: bool) -> int:
    from .memory import memory_snapshot

    snap = memory_snapshot()
    from .dyno import find_states

    plans = {
        state.directory.name.removeprefix("boundkit-"): state.read(state.plan_path)
        for state in find_states()
    }  # governed gunicorns on this machine, by arbiter pid
    if plans:
        snap["plans"] = plans
    if as_json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    else:
        from ._report import snapshot_lines

        print("\n".join(snapshot_lines(snap)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "snapshot":
        return _snapshot(args.json)
    from .demo import run_demo

    return run_demo(sys.stdout)
