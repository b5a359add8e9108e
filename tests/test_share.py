"""Tests of boundkit.share: the share plan, and the guard and recycler that follow it."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from boundkit import BoundedCache, ConfigError, MemoryGuard
from boundkit.gunicorn import WorkerRecycler
from boundkit.share import SharePlan, plan_shares

MB = 1024 * 1024


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(128 * MB, 8192 * MB),
    workers=st.integers(1, 16),
    footprint=st.integers(10 * MB, 400 * MB),
    arbiter=st.integers(10 * MB, 120 * MB),
    largest_request=st.integers(0, 300 * MB),
    seed=st.integers(0, 2**32 - 1),
)
@example(  # a share just over the need: the recycler once sat a few bytes too high
    limit=128 * MB, workers=1, footprint=10 * MB, arbiter=65022989, largest_request=0, seed=0
)
def test_worst_case_fits_under_the_limit(
    limit: int, workers: int, footprint: int, arbiter: int, largest_request: int, seed: int
) -> None:
    """Every worker at the threshold its real recycler drew, plus the largest request, fits.

    Whenever the plan says it fits; when it does not, it names fewer workers that would.

    The thresholds come from WorkerRecycler and MemoryGuard objects that took the plan, so a
    recycler drawing above the plan or a guard acting after the recycler fails this.
    """
    plan = plan_shares(
        limit,
        workers=workers,
        footprint=footprint,
        arbiter=arbiter,
        largest_request=largest_request,
    )
    rng = random.Random(seed)
    total = plan.arbiter
    for _ in range(workers):
        recycler = WorkerRecycler(max_worker_memory="1G", rng=rng)
        recycler.take_share(plan)
        # a worker just under its threshold serves one more request, the largest seen
        total += recycler.threshold + max(largest_request, plan.largest_request)
        if plan.fits:
            guard = MemoryGuard(limit="1G", timer=lambda: 0.0)
            guard.take_share(plan)
            warning, critical = guard._bounds[2], guard._bounds[0]
            # (+1: the guard holds fractions of the share, exact to a byte)
            assert footprint + plan.cache_budget + plan.pdf_budget <= warning + 1
            assert warning < critical
            assert critical < recycler.threshold  # cleanup always comes before retirement
    if plan.fits:
        assert total <= plan.limit - plan.headroom
        assert plan.worst_case <= plan.limit - plan.headroom
    else:  # the plan says so, and how many workers would fit
        assert plan.max_workers < workers
    assert plan.retire_at < plan.stop_at < plan.limit
    assert plan.limit - plan.headroom < plan.retire_at


@given(
    footprint=st.integers(10 * MB, 200 * MB),
    largest_request=st.integers(0, 100 * MB),
)
def test_max_workers_is_how_many_fit(footprint: int, largest_request: int) -> None:
    """A plan for max_workers workers fits; one for a worker more does not."""
    plan = plan_shares(
        "512M", workers=1, footprint=footprint, arbiter="30M", largest_request=largest_request
    )
    if plan.max_workers >= 1:
        assert plan_shares(
            "512M",
            workers=plan.max_workers,
            footprint=footprint,
            arbiter="30M",
            largest_request=largest_request,
        ).fits
    assert not plan_shares(
        "512M",
        workers=plan.max_workers + 1,
        footprint=footprint,
        arbiter="30M",
        largest_request=largest_request,
    ).fits


def test_plan_round_trips_and_shows_a_table() -> None:
    """as_dict()/from_dict() round-trip; the table names every part in MiB."""
    plan = plan_shares("512M", workers=2, footprint="60M", arbiter="30M", largest_request="40M")
    assert plan == SharePlan.from_dict(plan.as_dict())
    parts = {row[0]: row[1] for row in plan.table()}
    assert 512.0 == parts["limit"]
    assert round(plan.share / MB, 1) == parts["share"]
    assert {"cache budget", "pdf budget", "guard critical", "recycle", "headroom"} <= set(parts)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0, "workers": 2, "footprint": 1},
        {"limit": "512M", "workers": 0, "footprint": 1},
        {"limit": "512M", "workers": 2, "footprint": "lots"},
        {"limit": "512M", "workers": True, "footprint": 1},
    ],
)
def test_bad_inputs_raise_config_error(kwargs: dict[str, object]) -> None:
    """A limit, worker count or size that makes no sense raises ConfigError."""
    with pytest.raises(ConfigError):
        plan_shares(**kwargs)  # type: ignore[arg-type]


def test_guard_takes_its_share_and_caps_a_cache_configured_larger() -> None:
    """take_share(): limit = share, thresholds from the plan, a cache too large is cut down."""
    plan = plan_shares("512M", workers=2, footprint="60M", arbiter="30M", largest_request="40M")
    guard = MemoryGuard(limit="4G")
    big = BoundedCache(max_bytes=400 * MB)
    small = BoundedCache(max_bytes=1 * MB)
    guard.register_cache(big, name="big")
    guard.register_cache(small, name="small")
    guard.take_share(plan)
    assert plan.share == guard.status()["limit"]
    assert plan.guard_critical == pytest.approx(guard.critical * plan.share)
    assert plan.cache_budget // 2 == big.max_bytes
    assert 1 * MB == small.max_bytes  # never raised above what it was configured with
    late = BoundedCache(maxsize=10)
    guard.register_cache(late, name="late")  # registered after the plan: fitted at once
    assert late.max_bytes == plan.cache_budget // 3


def test_guard_with_explicit_settings_does_not_follow_plans() -> None:
    """A guard given a limit or thresholds keeps them; only MemoryGuard() follows the plan."""
    assert MemoryGuard().follows_plan
    assert not MemoryGuard(limit="1G").follows_plan
    assert not MemoryGuard(critical=0.95).follows_plan
