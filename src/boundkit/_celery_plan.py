"""What a Celery worker decides as it starts: its pool, and where prefork children retire.

Public through :mod:`boundkit.celery`; Celery is imported only for its pool aliases.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ._sizes import format_bytes
from .memory import memory_limit, process_memory
from .share import SharePlan, plan_shares

__all__ = ["WorkerStart", "pool_name", "worker_start"]


@dataclass(frozen=True)
class WorkerStart:
    """The worker's ``pool`` alias and ``concurrency``, the children's ``recycle_at`` (bytes,
    None outside prefork), the ``plan`` it came from, and ``notes``: (level, message) to log."""

    pool: str
    concurrency: int
    recycle_at: int | None = None
    plan: SharePlan | None = None
    notes: tuple[tuple[int, str], ...] = field(default=())


def pool_name(pool: Any) -> str:
    """The -P alias (``prefork``, ``threads``, ``solo``...) of a pool class or name."""
    if isinstance(pool, str):
        return pool
    from celery.concurrency import ALIASES  # type: ignore[import-untyped]

    path = f"{pool.__module__}:{pool.__qualname__}"
    return next((alias for alias, target in ALIASES.items() if target == path), path)


def worker_start(
    conf: Any, options: dict[str, Any], *, share: int | None, peak_resets: bool
) -> WorkerStart:
    """Decide from ``celeryd_init``'s ``conf`` and ``options`` (the command line's).

    ``recycle_at`` is, first found: ``--max-memory-per-child`` (Celery reads it
    before the configuration), ``share``, else the plan's ``recycle`` for the
    dyno's limit, the concurrency (``--autoscale``'s maximum, ``auto`` as the
    CPU count) and this process's RSS as the footprint of a fresh child.
    """
    # the -P class: "pool_cls" up to Celery 5.5, "pool" since
    pool = pool_name(
        options.get("pool_cls") or options.get("pool") or conf.worker_pool or "prefork"
    )
    autoscale = options.get("autoscale")  # (max, min) children
    wanted = max(autoscale) if autoscale else None
    wanted = wanted or options.get("concurrency") or conf.worker_concurrency
    concurrency = wanted if isinstance(wanted, int) else os.cpu_count() or 1
    if pool != "prefork":
        note = (logging.INFO, f"{pool} pool: per-task memory and cleanup, no recycling")
        return WorkerStart(pool, concurrency, notes=(note,))
    notes = []
    plan = None
    explicit = options.get("max_memory_per_child")
    if explicit:
        recycle_at, source = int(explicit) * 1024, "--max-memory-per-child"
    elif share is not None:
        recycle_at, source = share, "share="
    else:
        limit, footprint = memory_limit(), process_memory().rss
        plan = plan_shares(limit.bytes, workers=concurrency, footprint=footprint, arbiter=footprint)
        recycle_at = plan.recycle
        source = (
            f"the share plan of {concurrency} children in {format_bytes(limit.bytes)} "
            f"from {limit.source}, footprint {format_bytes(footprint)}"
        )
        if not plan.fits:
            notes.append(
                (
                    logging.WARNING,
                    f"{concurrency} children do not fit in {format_bytes(limit.bytes)} "
                    f"beside a {format_bytes(footprint)} worker; {plan.max_workers} would",
                )
            )
    notes.append(
        (
            logging.INFO,
            f"prefork children retire after a task when they hold more than "
            f"{format_bytes(recycle_at)} ({source})",
        )
    )
    if not peak_resets:
        notes.append(
            (
                logging.WARNING,
                "/proc/self/clear_refs cannot be written here, so the kernel's peak cannot be "
                "reset: billiard compares each child's lifetime peak, and a child whose task "
                "spiked and freed is retired too",
            )
        )
    return WorkerStart(pool, concurrency, recycle_at, plan, tuple(notes))
