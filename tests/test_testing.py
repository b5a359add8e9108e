"""The growth harness: it flags real leaks, Python and native, and never cries wolf."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import json
import logging
import random
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import cachetools
import pytest

from boundkit import ConfigError, LeakError
from boundkit.testing import (
    GrowthReport,
    aassert_no_growth,
    ameasure_growth,
    assert_no_growth,
    measure_growth,
)

Fn = Callable[[], object]


def bytes_object(total: int) -> bytes:
    """A fresh bytes object whose ``sys.getsizeof`` is ``total``."""
    return b"x" * (total - sys.getsizeof(b""))


def python_leak(per_call: int) -> Fn:
    kept: list[bytes] = []
    return lambda: kept.append(bytes_object(per_call))


def native_leak_1kb() -> Fn:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    return lambda: ctypes.memset(libc.malloc(1024), 1, 1024)  # never freed


def cache_that_plateaus() -> Fn:
    cache: dict[int, bytes] = {}
    counter = iter(range(1 << 62))

    def lookup() -> None:
        key = next(counter) % 128
        if key not in cache:
            cache[key] = bytes_object(1024)

    return lookup


def lru_churning_random_sizes() -> Fn:
    cache: cachetools.LRUCache[int, bytes] = cachetools.LRUCache(maxsize=1 << 20, getsizeof=len)
    counter = iter(range(1 << 62))
    rng = random.Random(2)

    def churn() -> None:
        cache[next(counter)] = b"x" * rng.randrange(16, 16384)

    return churn


@pytest.fixture
def busy_thread() -> Iterator[None]:
    """A background thread allocating and freeing for the whole test."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            junk = [str(i) * 3 for i in range(200)]
            del junk

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


LEAKS = {
    "python 100 B per call": lambda: python_leak(100),
    "python 1 KiB per call": lambda: python_leak(1024),
    "native malloc 1 KiB per call": native_leak_1kb,
}
CLEAN = {
    "no-op": lambda: lambda: None,
    "allocate and free 1 MiB": lambda: lambda: b"x" * (1 << 20),
    "allocate and free many small objects": lambda: (
        lambda: [{"key": i, "value": str(i)} for i in range(200)]
    ),
    "cache that fills during warm-up": cache_that_plateaus,
    "LRU churning random-sized values": lru_churning_random_sizes,
}


@pytest.mark.parametrize("make", LEAKS.values(), ids=LEAKS.keys())
def test_flags_leak(make: Callable[[], Fn]) -> None:
    """Python and native leaks of 100 B to 1 KiB per call are found."""
    report = measure_growth(make(), round_seconds=0.2)
    assert True is report.leaked, str(report)
    assert 2 == len(report.attempts)


@pytest.mark.parametrize("make", CLEAN.values(), ids=CLEAN.keys())
def test_does_not_flag_clean_code(make: Callable[[], Fn]) -> None:
    """Code whose live memory is bounded is never reported as growing."""
    report = measure_growth(make(), round_seconds=0.2)
    assert False is report.leaked, str(report)


@pytest.mark.usefixtures("busy_thread")
def test_does_not_flag_noop_beside_busy_thread() -> None:
    """Another thread allocating and freeing meanwhile is not growth of ``fn``."""
    report = measure_growth(lambda: None, calls=300)
    assert False is report.leaked, str(report)


def test_flags_python_leak_into_free_space_already_held() -> None:
    """A leak that fills free space the heap holds (RSS flat) is found by the blocks count."""
    junk = [bytes_object(100) for _ in range(100_000)]
    holes = junk[::64]  # one survivor in 64 keeps every pool in use, its free slots resident
    del junk
    report = measure_growth(python_leak(100), calls=1000, trace=False)
    assert report.leaked, str(report)
    assert report.attempts[0].median_block_growth >= 1000
    del holes  # kept alive until here, so the free space stayed


def test_report_says_where_python_leak_allocates() -> None:
    """A confirmed Python leak's report names the line that allocates."""
    report = measure_growth(python_leak(1024), calls=300)
    assert report.leaked
    assert any(f"{__file__}:" in site and "count=300" in site for site in report.where), str(report)
    assert "top Python allocation sites" in str(report)


def test_report_calls_tracemalloc_blind_growth_native() -> None:
    """Growth that tracemalloc cannot see is reported as likely native."""
    report = measure_growth(native_leak_1kb(), calls=300)
    assert report.leaked
    assert () == report.where
    assert "likely native" in str(report)


def test_report_is_frozen_and_json_ready() -> None:
    """The report is immutable and ``as_dict`` carries every reading, round and verdict."""
    report = measure_growth(lambda: None, calls=100, rounds=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.leaked = True  # type: ignore[misc]
    data = json.loads(json.dumps(report.as_dict()))
    assert "no growth" == data["verdict"]
    assert 100 == data["calls"]
    assert 3 == data["rounds"]
    attempt = data["attempts"][0]
    assert 4 == len(attempt["readings"])
    assert 3 == len(attempt["growth"])
    assert 4 == len(attempt["blocks"])
    assert 3 == len(attempt["block_growth"])
    assert False is attempt["suspicious"]
    assert report.threshold == attempt["threshold"]
    assert {"function", "growth_per_call", "blocks_per_call", "seconds", "where"} <= data.keys()


def test_clean_report_has_no_trace_pass() -> None:
    """No growth, no tracemalloc pass: ``where`` is None and the report says nothing of it."""
    report = measure_growth(lambda: None, calls=100)
    assert report.where is None
    assert "tracemalloc" not in str(report)


@pytest.mark.parametrize("calls", [32, 200])
def test_one_small_object_per_call_is_seen_at_few_calls(calls: int) -> None:
    """A quiet process sees one ~100-byte object per call even at a few dozen calls a round.

    The blocks threshold follows the rounds' own noise, so with no other thread it
    stays low, and the report's sensitivity line says so.
    """
    report = measure_growth(python_leak(100), calls=calls, trace=False)
    assert report.leaked, str(report)
    assert report.attempts[0].block_threshold < calls
    assert f"{report.rounds} rounds of {calls} calls" in report.sensitivity


def test_str_reports_rounds_threshold_and_verdict() -> None:
    """``str(report)`` reads as a report: verdict, function, rounds and threshold."""
    report = measure_growth(python_leak(1024), calls=200, trace=False)
    text = str(report)
    assert text.startswith(
        "memory grew 1.0 KiB and 1.0 Python blocks per call in python_leak.<locals>.<lambda>"
    )
    assert "5 rounds of 200 calls" in text
    assert "attempt 2: 400 calls per round" in text
    assert "suspicious" in text


def test_assert_no_growth_raises_leak_error_with_report() -> None:
    """``assert_no_growth`` raises LeakError, an AssertionError, printing the report."""
    with pytest.raises(AssertionError) as caught:
        assert_no_growth(python_leak(1024), calls=200, rounds=5)
    assert isinstance(caught.value, LeakError)
    assert "memory grew" in str(caught.value)
    assert "attempt 1: 200 calls per round" in str(caught.value)


def test_assert_no_growth_returns_report_when_memory_holds() -> None:
    """Clean code gets its report back from ``assert_no_growth``."""
    report = assert_no_growth(lambda: None, calls=100, rounds=5)
    assert isinstance(report, GrowthReport)
    assert not report.leaked


def test_async_twin_flags_leak_awaited_on_the_loop() -> None:
    """``aassert_no_growth`` awaits ``fn()`` on the running loop and raises LeakError on growth."""
    kept: list[bytes] = []

    async def leak() -> None:
        await asyncio.sleep(0)
        kept.append(bytes_object(1024))

    with pytest.raises(LeakError, match=r"memory grew 1\.0 KiB and 1\.0 Python blocks per call"):
        asyncio.run(aassert_no_growth(leak, calls=200))


def test_async_twin_passes_clean_coroutine() -> None:
    """``ameasure_growth`` finds no growth in a coroutine that frees what it allocates."""

    async def clean() -> None:
        await asyncio.sleep(0)
        junk = [str(i) for i in range(100)]
        del junk

    report = asyncio.run(ameasure_growth(clean, calls=200))
    assert not report.leaked, str(report)
    assert "clean" in report.function


def test_error_in_fn_propagates_and_stops_tracing() -> None:
    """An exception from ``fn`` mid-check propagates and leaves tracemalloc as it was."""
    kept: list[bytes] = []

    def leak_then_fail() -> None:
        kept.append(bytes_object(1024))
        if tracemalloc.is_tracing():
            raise RuntimeError("boom in the trace pass")

    with pytest.raises(RuntimeError, match="boom in the trace pass"):
        measure_growth(leak_then_fail, calls=100)
    assert not tracemalloc.is_tracing()


def test_confirm_false_decides_on_one_attempt() -> None:
    """Without confirmation, one suspicious attempt is the verdict."""
    report = measure_growth(python_leak(1024), calls=200, confirm=False, trace=False)
    assert report.leaked
    assert 1 == len(report.attempts)
    assert report.where is None


def test_auto_calls_fit_round_seconds() -> None:
    """With ``calls=None`` a slow function gets only the calls that fit ``round_seconds``."""
    report = measure_growth(lambda: time.sleep(0.001), round_seconds=0.02, rounds=3)
    # each call sleeps at least 1 ms, so at most 21 fit before the 20 ms deadline
    assert 1 <= report.calls <= 21
    assert report.calls == report.attempts[0].calls


def test_fast_function_gets_at_most_1000_auto_calls() -> None:
    """A fast function's rounds stop at 1000 calls, however fast it is."""
    report = measure_growth(lambda: None, rounds=3, round_seconds=60)
    assert 1000 == report.calls


class KeepingHandler(logging.Handler):
    """Keeps every record, as pytest's log capture does."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def keeping_handler() -> Iterator[KeepingHandler]:
    """A record-keeping handler on the root logger for the test."""
    handler = KeepingHandler()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def test_captured_log_records_are_growth(keeping_handler: KeepingHandler) -> None:
    """A handler that keeps records really grows memory, and the report hints at it."""
    log = logging.getLogger("boundkit.test")
    report = measure_growth(lambda: log.warning("call %d", 1), calls=300)
    assert report.leaked
    assert "detach_logging=True" in str(report)


def test_detach_logging_hides_capture_then_restores_it(keeping_handler: KeepingHandler) -> None:
    """``detach_logging`` swaps the root handlers out during the check, and back after."""
    log = logging.getLogger("boundkit.test")
    handlers = logging.getLogger().handlers[:]
    report = measure_growth(lambda: log.warning("call %d", 1), calls=300, detach_logging=True)
    assert not report.leaked, str(report)
    assert [] == keeping_handler.records
    assert handlers == logging.getLogger().handlers


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("calls", 0),
        ("calls", -5),
        ("calls", 2.5),
        ("calls", True),
        ("rounds", 2),
        ("rounds", "5"),
        ("round_seconds", 0),
        ("round_seconds", float("nan")),
        ("round_seconds", float("inf")),
        ("bytes_per_call", -1),
        ("bytes_per_call", "1Q"),
        ("bytes_per_call", True),
        ("min_pages", 0),
    ],
)
def test_bad_option_raises_config_error_naming_it(option: str, value: object) -> None:
    """A bad option raises ConfigError (a ValueError) naming the option and the value."""
    calls: list[None] = []
    with pytest.raises(ConfigError) as caught:
        measure_growth(lambda: calls.append(None), **{option: value})  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert option in str(caught.value)
    assert repr(value) in str(caught.value)
    assert [] == calls


def test_bytes_per_call_takes_a_size_string() -> None:
    """bytes_per_call="1K" is parsed like every size argument: 1024 bytes per call."""
    report = measure_growth(lambda: None, calls=100, bytes_per_call="1K", min_pages=1)
    assert 100 * 1024 == report.threshold
