"""Tests of boundkit.metrics: rolling windows, bounded counters, sketches, request stats."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from fractions import Fraction
from http import HTTPStatus

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from boundkit import ConfigError, demo
from boundkit.metrics import BoundedCounter, QuantileSketch, RequestStats, RollingWindow
from boundkit.testing import assert_no_growth
from fakes import FakeTimer

finite = st.floats(allow_nan=False, allow_infinity=False)
BAD_NUMBERS = [math.nan, math.inf, -math.inf, "1.5", None, 10**400]


def reference_percentile(ordered: list[float], q: float) -> tuple[float, float]:
    """The documented rule, written out, and how far the window may be from it.

    Linear interpolation between closest ranks, exact to the float (tolerance 0).
    Where the gap between two huge samples overflows a float, the rule is
    evaluated exactly instead, and the window may differ by its rounding: a
    percentile of finite samples is finite.
    """
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    if rank == low:
        return ordered[low], 0.0
    below, above = ordered[low], ordered[low + 1]
    value = below + (above - below) * (rank - low)
    if math.isfinite(value):
        return value, 0.0
    exact = Fraction(below) + (Fraction(above) - Fraction(below)) * Fraction(rank - low)
    return float(exact), max(abs(below), abs(above)) * 1e-15


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, to expose races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def run_threads(target: Callable[[int], None], threads: int = 4) -> None:
    """Run ``target(i)`` in ``threads`` threads at once and wait for all of them."""
    barrier = threading.Barrier(threads)

    def start(i: int) -> None:
        barrier.wait()
        target(i)

    workers = [threading.Thread(target=start, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_metrics_imports_the_standard_library_only() -> None:
    """Importing boundkit.metrics loads no third-party package."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import boundkit.metrics\n"
        "loaded = {m.partition('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(loaded - set(sys.stdlib_module_names)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "['boundkit']" == result.stdout.strip()


def test_demo_row_shows_the_naive_version_holding_far_more() -> None:
    """The metrics demo row runs both workloads; the append-forever one holds far more."""
    row = next(fn for fn in demo.ROWS if fn.__name__ == "_metrics_row")()
    assert ("metrics", "") == (row.part, row.skipped)
    assert row.naive_growth > 10 * 1024 * 1024
    assert row.naive_growth > 5 * max(row.boundkit_growth, 0)


# RollingWindow


@settings(max_examples=200, deadline=None)
@given(samples=st.lists(finite, max_size=60), maxlen=st.integers(1, 20))
@example(samples=[1.7976931348623157e308, -9.9792015476736e291], maxlen=2)  # the gap overflows
def test_window_percentiles_equal_a_sorted_list_reference(
    samples: list[float], maxlen: int
) -> None:
    """Every percentile is the documented interpolation over the last maxlen samples."""
    window = RollingWindow(maxlen)
    for x in samples:
        window.add(x)
    kept = samples[-maxlen:] if samples else []
    assert kept == window.values()
    assert len(kept) == len(window)
    assert len(samples) == window.count_total
    qs = [0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100]
    ordered = sorted(kept)
    got = window.percentiles(qs)
    if not kept:
        assert [None] * len(qs) == got
    for q, value in zip(qs, got, strict=True):
        if kept:
            expected, tolerance = reference_percentile(ordered, q)
            assert value is not None
            assert abs(value - expected) <= tolerance, (q, expected, value)
    assert (min(kept) if kept else None) == window.min()
    assert (max(kept) if kept else None) == window.max()
    mean = window.mean()
    if kept:
        assert mean is not None
        exact = float(sum(map(Fraction, kept)) / len(kept))
        assert math.isclose(exact, mean, rel_tol=1e-15, abs_tol=max(map(abs, kept)) * 1e-15)
    else:
        assert mean is None


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200))
def test_window_percentiles_match_statistics_inclusive_quantiles(samples: list[float]) -> None:
    """Integer percentiles agree with statistics.quantiles(method="inclusive")."""
    window = RollingWindow(500)
    for x in samples:
        window.add(x)
    expected = statistics.quantiles(samples, n=100, method="inclusive")
    actual = window.percentiles(range(1, 100))
    for want, got in zip(expected, actual, strict=True):
        assert got is not None
        assert math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9)


def test_window_summary_is_json_ready_and_none_when_empty() -> None:
    """summary() has count, mean, min, max, p50, p90, p99; statistics are None when empty."""
    window = RollingWindow(100)
    assert {
        "count": 0,
        "mean": None,
        "min": None,
        "max": None,
        "p50": None,
        "p90": None,
        "p99": None,
    } == window.summary()
    for x in range(1, 101):
        window.add(x)
    summary = window.summary()
    assert summary == json.loads(json.dumps(summary))
    assert (100, 50.5, 1.0, 100.0) == (
        summary["count"],
        summary["mean"],
        summary["min"],
        summary["max"],
    )
    assert [50.5, 90.1, 99.01] == [pytest.approx(summary[k]) for k in ("p50", "p90", "p99")]


def test_window_forgets_samples_older_than_max_age() -> None:
    """With max_age, samples older than max_age seconds leave the window; maxlen still caps."""
    timer = FakeTimer()
    window = RollingWindow(3, max_age=10.0, timer=timer)
    window.add(1.0)
    timer.tick(5)
    window.add(2.0)
    timer.tick(5)  # the first sample is exactly max_age old: kept
    assert [1.0, 2.0] == window.values()
    timer.tick(0.5)
    assert [2.0] == window.values()
    assert 2.0 == window.percentile(50)
    timer.tick(5)
    assert 0 == len(window)
    assert window.mean() is None
    for x in (3.0, 4.0, 5.0, 6.0):
        window.add(x)
    assert [4.0, 5.0, 6.0] == window.values()
    assert 6 == window.count_total


def test_window_expires_while_full() -> None:
    """A full window whose samples all aged out is empty, then refills from the new sample."""
    timer = FakeTimer()
    window = RollingWindow(2, max_age=1.0, timer=timer)
    window.add(1.0)
    window.add(2.0)
    window.add(3.0)
    timer.tick(2)
    window.add(4.0)
    assert [4.0] == window.values()


def test_window_clear_keeps_count_total() -> None:
    """clear() empties the window; count_total still counts every sample ever added."""
    window = RollingWindow(4)
    for x in range(6):
        window.add(x)
    window.clear()
    assert ([], 6) == (window.values(), window.count_total)
    window.add(9)
    assert [9.0] == window.values()


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_window_rejects_non_finite_samples_and_keeps_what_it_holds(bad: object) -> None:
    """NaN, infinities and non-numbers raise ConfigError naming the value; samples survive."""
    window = RollingWindow(3)
    window.add(1.0)
    with pytest.raises(ConfigError, match="sample") as info:
        window.add(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)
    assert ([1.0], 1) == (window.values(), window.count_total)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"maxlen": 0}, "maxlen"),
        ({"maxlen": 2.5}, "maxlen"),
        ({"maxlen": True}, "maxlen"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": -1.0}, "max_age"),
        ({"max_age": math.nan}, "max_age"),
    ],
)
def test_window_rejects_bad_settings(kwargs: dict[str, object], named: str) -> None:
    """Bad maxlen or max_age raises ConfigError (a ValueError) naming setting and value."""
    with pytest.raises(ValueError, match=named) as info:
        RollingWindow(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize("q", [-1, 100.5, math.nan, "50"])
def test_window_rejects_bad_percentiles(q: object) -> None:
    """A percentile outside [0, 100] or not a number raises ConfigError naming it."""
    window = RollingWindow(3)
    window.add(1.0)
    with pytest.raises(ConfigError, match="percentile") as info:
        window.percentile(q)  # type: ignore[arg-type]
    assert repr(q) in str(info.value)


@pytest.mark.parametrize("max_age", [None, 1e9])
def test_window_is_thread_safe(fast_switching: None, max_age: float | None) -> None:
    """Samples added from several threads at once are all counted and none is lost.

    With max_age, the timer is a Python function: a point where threads switch mid-add.
    """
    window = RollingWindow(100_000, max_age=max_age, timer=lambda: time.monotonic())
    run_threads(lambda i: [window.add(float(i)) for _ in range(5000)])
    assert 20_000 == window.count_total == len(window)
    assert [5000] * 4 == [window.values().count(float(i)) for i in range(4)]


def test_window_memory_is_fixed_at_creation() -> None:
    """The samples array is allocated once at 8 bytes a slot and never reallocated."""
    window = RollingWindow(10_000)
    before = sys.getsizeof(window._values)
    for x in range(50_000):
        window.add(x)
    assert before == sys.getsizeof(window._values)
    assert 8 * 10_000 <= before <= 8 * 10_000 + 128


def test_window_holds_no_growth_over_a_million_adds() -> None:
    """A million and more adds to a full window leave memory flat."""
    window = RollingWindow(1000)
    samples = itertools.count()
    assert_no_growth(lambda: window.add(next(samples) * 0.001), calls=200_000, bytes_per_call=4)
    assert window.count_total >= 1_000_000


def test_window_error_path_holds_no_growth() -> None:
    """Rejecting NaN over and over leaks nothing."""
    window = RollingWindow(10)

    def add_nan() -> None:
        with pytest.raises(ConfigError):
            window.add(math.nan)

    assert_no_growth(add_nan, calls=5000)


# BoundedCounter


class LruCounterModel:
    """A plain-Python model of BoundedCounter's contract."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.counts: OrderedDict[str, int] = OrderedDict()
        self.other = 0

    def incr(self, key: str, n: int) -> None:
        if key == "other":
            self.other += n
        elif key in self.counts:
            self.counts[key] += n
            self.counts.move_to_end(key)
        else:
            if len(self.counts) == self.max_keys:
                self.other += self.counts.popitem(last=False)[1]
            self.counts[key] = n


@settings(max_examples=200, deadline=None)
@given(
    max_keys=st.integers(1, 6),
    ops=st.lists(st.tuples(st.sampled_from("abcdefgh") | st.just("other"), st.integers(0, 5))),
)
def test_counter_matches_lru_model(max_keys: int, ops: list[tuple[str, int]]) -> None:
    """The counter equals a model that folds the least recently updated key into other."""
    counter = BoundedCounter(max_keys)
    model = LruCounterModel(max_keys)
    for key, n in ops:
        counter.incr(key, n)
        model.incr(key, n)
    expected = dict(model.counts)
    if model.other:
        expected["other"] = model.other
    assert expected == counter.snapshot()
    assert list(expected) == list(counter.snapshot())
    assert sum(n for _, n in ops) == counter.total()
    assert len(counter) <= max_keys


def test_counter_flood_of_unique_keys_keeps_the_cap_and_exact_totals() -> None:
    """100,000 unique keys into 100 slots: 100 keys held, totals exact, rest in other."""
    counter = BoundedCounter(100)
    for i in range(100_000):
        counter.incr(f"/probe/{i}", 2)
    assert 100 == len(counter)
    assert 200_000 == counter.total() == sum(counter.snapshot().values())
    assert 2 * 99_900 == counter.other
    assert ("/probe/99999", 2) in counter.most_common()


def test_counter_most_common_orders_by_count() -> None:
    """most_common(k) gives the k largest counts, largest first, other included."""
    counter = BoundedCounter(2)
    for key, n in [("a", 5), ("b", 1), ("c", 3), ("d", 2)]:
        counter.incr(key, n)
    assert [("other", 6), ("c", 3)] == counter.most_common(2)
    assert [("other", 6), ("c", 3), ("d", 2)] == counter.most_common()
    assert [] == counter.most_common(0)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", None])
def test_counter_rejects_bad_increments_and_keeps_counts(bad: object) -> None:
    """A negative or non-integer n raises ConfigError naming it; counts are untouched."""
    counter = BoundedCounter(3)
    counter.incr("a")
    with pytest.raises(ConfigError, match="n must be") as info:
        counter.incr("a", bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)
    assert ({"a": 1}, 1) == (counter.snapshot(), counter.total())


def test_counter_rejects_unhashable_keys_and_keeps_counts() -> None:
    """An unhashable key raises ConfigError naming it; the total is untouched."""
    counter = BoundedCounter(3)
    counter.incr("a")
    with pytest.raises(ConfigError, match="hashable") as info:
        counter.incr(["a"])  # type: ignore[arg-type]
    assert "['a']" in str(info.value)
    assert ({"a": 1}, 1) == (counter.snapshot(), counter.total())


@pytest.mark.parametrize("bad", [0, -3, 2.0, None])
def test_counter_rejects_bad_max_keys(bad: object) -> None:
    """max_keys must be a positive int."""
    with pytest.raises(ConfigError, match="max_keys") as info:
        BoundedCounter(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_counter_is_thread_safe(fast_switching: None) -> None:
    """Increments from several threads, with keys folding all the time, sum exactly."""
    counter = BoundedCounter(10)
    run_threads(lambda i: [counter.incr(f"{i}-{j % 50}") for j in range(5000)])
    assert 20_000 == counter.total() == sum(counter.snapshot().values())
    assert 10 == len(counter)


def test_counter_holds_no_growth_over_a_million_unique_keys() -> None:
    """A million and more unique keys leave memory flat once the cap is reached."""
    counter = BoundedCounter(1000)
    keys = itertools.count()
    assert_no_growth(lambda: counter.incr(f"/scan/{next(keys)}"), calls=200_000, bytes_per_call=4)
    assert counter.total() >= 1_000_000
    assert 1000 == len(counter)


# RequestStats


def test_request_stats_caps_routes_into_other() -> None:
    """Routes beyond max_routes share "other"; the first ones keep their own entries."""
    stats = RequestStats(max_routes=2, window=10)
    for route in ["/a", "/b", "/c", "/d", "/a"]:
        stats.observe(route, 0.1, 200)
    stats.observe("/e", 1.0, 404)
    summary = stats.summary()
    assert ["/a", "/b", "other"] == list(summary["routes"])
    other = summary["routes"]["other"]
    assert (3, {"200": 2, "404": 1}) == (other["requests"], other["statuses"])
    assert (6, {"200": 5, "404": 1}) == (summary["requests"], summary["statuses"])
    assert 1.0 == other["seconds"]["max"]


def test_request_stats_summary_is_json_ready() -> None:
    """summary() survives a JSON round trip unchanged."""
    stats = RequestStats(max_routes=5, window=50)
    rng = random.Random(5)
    for _ in range(500):
        stats.observe(rng.choice(["/", "/api", "/login"]), rng.random(), rng.choice([200, 500]))
    summary = stats.summary()
    assert summary == json.loads(json.dumps(summary))
    assert 500 == summary["requests"]
    assert 50 == summary["routes"]["/"]["seconds"]["count"]


def test_request_stats_caps_status_codes_per_route() -> None:
    """Past 32 codes a route folds the least recent into "other"; HTTPStatus counts as its code."""
    stats = RequestStats()
    for code in range(400, 440):
        stats.observe("/", 0.1, code)
    stats.observe("/", 0.1, HTTPStatus.OK)
    statuses = stats.summary()["routes"]["/"]["statuses"]
    assert 33 == len(statuses)
    assert (1, 9) == (statuses["200"], statuses["other"])
    assert 41 == sum(statuses.values())


def test_request_stats_windows_forget_old_requests() -> None:
    """With max_age the latency windows forget old requests; the request counts do not."""
    timer = FakeTimer()
    stats = RequestStats(window=10, max_age=60, timer=timer)
    stats.observe("/", 0.5, 200)
    timer.tick(61)
    stats.observe("/", 0.25, 200)
    route = stats.summary()["routes"]["/"]
    assert (2, 1, 0.25) == (route["requests"], route["seconds"]["count"], route["seconds"]["max"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((b"/", 0.1, 200), "route"),
        (("/", math.nan, 200), "seconds"),
        (("/", -0.1, 200), "seconds"),
        (("/", 0.1, 99), "status"),
        (("/", 0.1, "200"), "status"),
        (("/", 0.1, True), "status"),
    ],
)
def test_request_stats_rejects_bad_observations(args: tuple[object, ...], named: str) -> None:
    """A bad route, duration or status raises ConfigError naming it, recording nothing."""
    stats = RequestStats()
    stats.observe("/", 0.1, 200)
    with pytest.raises(ConfigError, match=named):
        stats.observe(*args)  # type: ignore[arg-type]
    assert 1 == stats.summary()["requests"]


def test_request_stats_is_thread_safe(fast_switching: None) -> None:
    """Observations from several threads over capped routes are all counted."""
    stats = RequestStats(max_routes=3, window=100)
    run_threads(lambda i: [stats.observe(f"/r{j % 7}", 0.01, 200) for j in range(2000)])
    summary = stats.summary()
    assert 8000 == summary["requests"] == summary["statuses"]["200"]
    assert 4 == len(summary["routes"])


def test_request_stats_holds_no_growth_under_random_routes() -> None:
    """A stream of unique routes and random timings leaves memory flat."""
    stats = RequestStats(max_routes=50, window=200)
    rng = random.Random(1)
    paths = itertools.count()

    def observe() -> None:
        stats.observe(f"/probe/{next(paths)}", rng.random(), rng.choice((200, 404, 500)))

    assert_no_growth(observe, calls=50_000, bytes_per_call=8)


# QuantileSketch


def exact_quantile(ordered: list[float], q: float) -> float:
    """The value the sketch approximates: rank floor(q * (n - 1)) of the sorted values."""
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_within_relative_error(sketch: QuantileSketch, values: list[float]) -> None:
    """Every quantile of the sketch is within its relative accuracy of the exact one."""
    ordered = sorted(values)
    bound = sketch.relative_accuracy * (1 + 1e-9)
    for q in [0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1]:
        expected = exact_quantile(ordered, q)
        actual = sketch.quantile(q)
        assert actual is not None
        assert abs(actual - expected) <= bound * abs(expected), (q, expected, actual)


def skewed(name: str, n: int, seed: int = 7) -> list[float]:
    """Lognormal or bimodal (fast cache hits and slow misses) response times."""
    rng = random.Random(seed)
    if name == "lognormal":
        return [rng.lognormvariate(-3, 1.5) for _ in range(n)]
    return [
        abs(rng.gauss(0.002, 0.0005)) if rng.random() < 0.8 else rng.gauss(1.5, 0.3)
        for _ in range(n)
    ]


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
@pytest.mark.parametrize("shape", ["lognormal", "bimodal"])
def test_sketch_quantiles_within_relative_error_on_skewed_data(shape: str, accuracy: float) -> None:
    """On lognormal and bimodal data every quantile is within the stated relative error."""
    values = skewed(shape, 30_000)
    sketch = QuantileSketch(accuracy)
    for x in values:
        sketch.add(x)
    assert 30_000 == sketch.count
    assert_within_relative_error(sketch, values)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.floats(1e-6, 1e6) | st.floats(-1e6, -1e-6) | st.just(0.0), min_size=1, max_size=300
    ),
    accuracy=st.sampled_from([0.001, 0.01, 0.1]),
)
def test_sketch_relative_error_holds_for_any_values(values: list[float], accuracy: float) -> None:
    """Positive, negative and zero values alike stay within the relative error.

    The bins needed are ln(1e6 / 1e-6) / ln(gamma): 13,800 at 0.1%, hence max_bins.
    """
    sketch = QuantileSketch(accuracy, max_bins=14_000)
    for x in values:
        sketch.add(x)
    assert len(values) == sketch.count
    assert_within_relative_error(sketch, values)


def test_sketch_merge_equals_the_sketch_of_the_union() -> None:
    """Merging per-worker sketches gives exactly the sketch of all their values."""
    values = skewed("lognormal", 9000) + skewed("bimodal", 9000) + [0.0, -0.5, -2.0]
    random.Random(3).shuffle(values)
    union = QuantileSketch()
    for x in values:
        union.add(x)
    workers = [QuantileSketch() for _ in range(3)]
    for i, x in enumerate(values):
        workers[i % 3].add(x)
    merged = QuantileSketch()
    for worker in workers:
        merged.merge(worker)
    assert union.as_dict() == merged.as_dict()
    qs = [i / 100 for i in range(101)]
    assert [union.quantile(q) for q in qs] == [merged.quantile(q) for q in qs]


def test_sketch_round_trips_through_json() -> None:
    """as_dict() survives JSON and from_dict() rebuilds a sketch answering the same."""
    sketch = QuantileSketch(0.02, max_bins=512)
    for x in [*skewed("lognormal", 5000), 0.0, -1.0]:
        sketch.add(x)
    data = json.loads(json.dumps(sketch.as_dict()))
    rebuilt = QuantileSketch.from_dict(data)
    assert sketch.as_dict() == rebuilt.as_dict()
    assert (512, 5002) == (rebuilt.max_bins, rebuilt.count)
    assert [sketch.quantile(q / 10) for q in range(11)] == [
        rebuilt.quantile(q / 10) for q in range(11)
    ]


def test_sketch_collapses_lowest_bins_keeping_high_quantiles() -> None:
    """Values spanning more than max_bins bins merge the lowest; high quantiles stay accurate."""
    sketch = QuantileSketch(0.01, max_bins=64)
    values = [10.0**k for k in range(-30, 1)] + skewed("lognormal", 2000)
    values += [100.0 + i for i in range(2000)]
    for x in values:
        sketch.add(x)
    assert len(values) == sketch.count
    assert len(sketch.as_dict()["positive"]["counts"]) <= 64
    ordered = sorted(values)
    for q in (0.9, 0.99, 1.0):
        expected = exact_quantile(ordered, q)
        assert abs(sketch.quantile(q) - expected) <= 0.01 * expected  # type: ignore[operator]
    low = sketch.quantile(0.0)
    assert low is not None
    assert low > 1e-30  # collapsed upwards: the lowest quantile is overestimated


def test_sketch_empty_answers_none() -> None:
    """An empty sketch counts zero and has no quantiles."""
    sketch = QuantileSketch()
    assert (0, None) == (sketch.count, sketch.quantile(0.5))


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_sketch_rejects_non_finite_values_and_keeps_its_counts(bad: object) -> None:
    """NaN, infinities and non-numbers raise ConfigError naming the value; counts survive."""
    sketch = QuantileSketch()
    sketch.add(2.0)
    with pytest.raises(ConfigError, match="value") as info:
        sketch.add(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)
    assert (1, pytest.approx(2.0, rel=0.01)) == (sketch.count, sketch.quantile(0.5))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"relative_accuracy": 0}, "relative_accuracy"),
        ({"relative_accuracy": 1}, "relative_accuracy"),
        ({"relative_accuracy": math.nan}, "relative_accuracy"),
        ({"max_bins": 0}, "max_bins"),
        ({"max_bins": 10.5}, "max_bins"),
    ],
)
def test_sketch_rejects_bad_settings(kwargs: dict[str, object], named: str) -> None:
    """Bad accuracy or bin counts raise ConfigError naming setting and value."""
    with pytest.raises(ConfigError, match=named) as info:
        QuantileSketch(**kwargs)  # type: ignore[arg-type]
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan])
def test_sketch_rejects_bad_quantiles(q: float) -> None:
    """A quantile outside [0, 1] raises ConfigError naming it."""
    sketch = QuantileSketch()
    sketch.add(1.0)
    with pytest.raises(ConfigError, match="quantile") as info:
        sketch.quantile(q)
    assert repr(q) in str(info.value)


def test_sketch_refuses_to_merge_a_different_accuracy_and_stays_intact() -> None:
    """Merging sketches of different accuracy raises ConfigError and changes nothing."""
    sketch, other = QuantileSketch(0.01), QuantileSketch(0.02)
    sketch.add(1.0)
    other.add(5.0)
    before = sketch.as_dict()
    with pytest.raises(ConfigError, match=r"0\.02"):
        sketch.merge(other)
    assert before == sketch.as_dict()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.pop("zero_count"),
        lambda d: d.update(max_bins=-1),
        lambda d: d["positive"].update(counts=[1, -2]),
        lambda d: d["positive"].update(counts=[1] * 5000),
        lambda d: d["negative"].update(min_key="low"),
    ],
)
def test_sketch_from_dict_rejects_malformed_data(mangle: Callable[[dict], object]) -> None:
    """Malformed serialised sketches raise ConfigError instead of building a wrong sketch."""
    sketch = QuantileSketch()
    sketch.add(3.0)
    data = sketch.as_dict()
    mangle(data)
    with pytest.raises(ConfigError):
        QuantileSketch.from_dict(data)


def test_sketch_is_thread_safe(fast_switching: None) -> None:
    """Values added from several threads at once are all counted."""
    sketch = QuantileSketch()
    run_threads(lambda i: [sketch.add(10.0**i + j) for j in range(5000)])
    assert 20_000 == sketch.count


def test_sketch_holds_no_growth_over_a_million_adds() -> None:
    """A million and more adds over a wide range of values leave memory flat."""
    sketch = QuantileSketch()
    rng = random.Random(2)
    assert_no_growth(lambda: sketch.add(rng.lognormvariate(0, 3)), calls=200_000, bytes_per_call=4)
    assert sketch.count >= 1_000_000


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: RollingWindow(10).add(True), "sample must be a finite number, got True"),
        (lambda: QuantileSketch().add(True), "value must be a finite number, got True"),
        (lambda: RollingWindow(10).percentile(True), "must be a finite number, got True"),
        (lambda: QuantileSketch().quantile(True), "quantile must be a finite number, got True"),
        (lambda: RollingWindow(10, max_age=True), "max_age must be a finite number, got True"),
        (lambda: RequestStats(max_age=True), "max_age must be a finite number, got True"),
        (lambda: RequestStats().observe("/", True, 200), "seconds must be a finite number"),
        (lambda: RollingWindow(sys.maxsize + 1), f"maxlen must be at most {sys.maxsize}"),
        (lambda: BoundedCounter(2**70), f"max_keys must be at most {sys.maxsize}"),
        (lambda: RequestStats(window=2**70), f"window must be at most {sys.maxsize}"),
    ],
)
def test_bools_and_oversized_counts_are_config_errors(
    call: Callable[[], object], message: str
) -> None:
    """True is not a sample, a quantile or an age; a count beyond sys.maxsize is refused."""
    with pytest.raises(ConfigError, match=message):
        call()
