"""Plain-text tables for ``boundkit snapshot``: the process, the dyno and the share plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["snapshot_lines", "table"]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Return ``rows`` under ``header`` as aligned text lines (numbers right-aligned)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def snapshot_lines(snap: Mapping[str, Any]) -> list[str]:
    """Render :func:`~boundkit.memory_snapshot` (plus ``plans`` by arbiter and
    ``admission`` by file) as text lines.

    The flat keys come first as ``key  value`` lines; then the dyno's
    processes and the share plan as tables, then each reservation table. Sizes are MiB.
    """
    flat = {k: v for k, v in snap.items() if not isinstance(v, Mapping)}
    width = max(map(len, flat), default=0)
    lines = [f"{key:<{width}}  {value}" for key, value in flat.items()]
    dyno = snap.get("dyno")
    if isinstance(dyno, Mapping):
        lines += [
            "",
            f"dyno: {dyno['used_mb']} of {dyno['limit_mb']} MiB "
            f"({dyno['percent_of_limit']}%), from {dyno['source']}",
        ]
        lines += [
            f"  anon {dyno['anon_mb']} MiB, page cache {dyno['page_cache_mb']} MiB "
            f"({dyno['reclaimable_mb']} reclaimable, not counted), swap {dyno['swap_mb']} MiB"
        ]
        rows = [(p["pid"], p["name"], p["rss_mb"], p["rss_anon_mb"]) for p in dyno["processes"]]
        lines += ["  " + line for line in table(("pid", "name", "rss_mb", "rss_anon_mb"), rows)]
    for arbiter, plan in (snap.get("plans") or {}).items():
        lines += ["", f"share plan of the gunicorn arbiter {arbiter} (MiB):"]
        lines += ["  " + line for line in table(("part", "MiB", "what"), plan["table"])]
    for path, admission in (snap.get("admission") or {}).items():
        lines += [
            "",
            f"reservations in {path}: {admission['held_mb']} of {admission['budget_mb']} MiB held "
            f"by {admission['holders']}, {admission['waiters']} waiting",
        ]
    return lines
