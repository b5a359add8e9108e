"""The ``no_growth`` marker, run through pytester in inner pytest sessions."""

from __future__ import annotations

import pytest

HEADER = """
import logging
import pytest

KEPT = []
SIZE = 4096  # a name, so the compiler does not fold b"x" * SIZE into one constant
COUNTS = {"setup": 0, "body": 0}


@pytest.fixture
def thing():
    COUNTS["setup"] += 1
    return object()
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(HEADER + body)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "error", *args)


def test_leaking_marked_test_fails_with_report(pytester: pytest.Pytester) -> None:
    """A marked test whose body keeps 4 KiB per run fails with the growth report alone.

    The plugin's own frames (its hook's source) are hidden from the failure.
    """
    result = run(
        pytester,
        """
@pytest.mark.no_growth(calls=200)
def test_leaks():
    KEPT.append(b"x" * SIZE)
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*LeakError: memory grew * per call in test_leaks*", "*attempt 2: 400 calls per round*"]
    )
    output = result.stdout.str()
    for plugin_line in ("def pytest_pyfunc_call", "return (yield)", "def repeated"):
        assert plugin_line not in output


@pytest.mark.parametrize("calls", [50, 200, 500])
def test_marker_catches_one_small_object_per_call(pytester: pytest.Pytester, calls: int) -> None:
    """One ~300-byte string kept per call is caught at the calls the docs show, and below.

    In a pytest process the heap has free space, so resident memory does not move: only
    the blocks count sees this leak, one block per call.
    """
    result = run(
        pytester,
        f"""
SMALL = 251  # + 49 bytes of str header: 300 bytes

@pytest.mark.no_growth(calls={calls})
def test_keeps_a_string():
    KEPT.append("x" * SMALL)
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LeakError: memory grew * 1.0 Python blocks per call*"])


def test_verbose_says_what_a_passing_check_could_see(pytester: pytest.Pytester) -> None:
    """With -v, each passing marked test is listed with its rounds, calls and sensitivity."""
    body = """
@pytest.mark.no_growth(calls=200, rounds=3)
def test_clean():
    assert 10 == len([str(i) for i in range(10)])
"""
    result = run(pytester, body, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*no_growth: what each passing check could see*",
            "test_*.py::test_clean: 3 rounds of 200 calls after a warm-up round; "
            "sees leaks from * B or 0.5 Python blocks per call",
        ]
    )
    quiet = run(pytester, body)
    assert "sees leaks from" not in quiet.stdout.str()


def test_clean_marked_test_passes(pytester: pytest.Pytester) -> None:
    """A marked test whose body frees what it allocates passes."""
    result = run(
        pytester,
        """
@pytest.mark.no_growth(calls=200, rounds=3)
def test_clean():
    data = [str(i) for i in range(100)]
    assert 100 == len(data)
""",
    )
    result.assert_outcomes(passed=1)


def test_fixtures_set_up_once_and_unmarked_tests_run_once(pytester: pytest.Pytester) -> None:
    """The marked body runs many times on one fixture value; unmarked tests run once."""
    result = run(
        pytester,
        """
SEEN = set()

@pytest.mark.no_growth(calls=50, rounds=3)
def test_marked(thing):
    COUNTS["body"] += 1
    SEEN.add(id(thing))

def test_unmarked(thing):
    COUNTS["unmarked"] = COUNTS.get("unmarked", 0) + 1

def test_zz_counts():
    # warm-up round plus three rounds of 50 calls
    assert COUNTS["body"] >= 200
    assert 1 == len(SEEN)
    assert 2 == COUNTS["setup"]
    assert 1 == COUNTS["unmarked"]
""",
    )
    result.assert_outcomes(passed=3)


def test_log_capture_is_detached_unless_asked(pytester: pytest.Pytester) -> None:
    """pytest's log capture is detached by default; kept, it really grows and fails."""
    result = run(
        pytester,
        """
log = logging.getLogger("inner")

@pytest.mark.no_growth(calls=300)
def test_logs_detached():
    log.warning("a warning each call")

@pytest.mark.no_growth(calls=300, detach_logging=False)
def test_logs_captured():
    log.warning("a warning each call")
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED*test_logs_captured*"])


def test_unknown_option_fails_naming_it(pytester: pytest.Pytester) -> None:
    """A misspelt marker option fails the test with ConfigError naming it."""
    result = run(
        pytester,
        """
@pytest.mark.no_growth(cals=10)
def test_typo():
    pass
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConfigError: no_growth got unknown options [[]'cals'[]]*"])


def test_positional_option_fails(pytester: pytest.Pytester) -> None:
    """The marker takes keywords only; a positional value is named in the error."""
    result = run(
        pytester,
        """
@pytest.mark.no_growth(100)
def test_positional():
    pass
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConfigError: no_growth takes keyword arguments only*(100,)*"])


def test_async_tests_run_in_the_async_plugins_loop(pytester: pytest.Pytester) -> None:
    """Under anyio, a leaking async marked test fails with the report; a clean one passes."""
    result = run(
        pytester,
        """
import anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
@pytest.mark.no_growth(calls=200)
async def test_async_leaks():
    await anyio.sleep(0)
    KEPT.append(b"x" * SIZE)

@pytest.mark.anyio
@pytest.mark.no_growth(calls=200, rounds=3)
async def test_async_clean(thing):
    await anyio.sleep(0)
    COUNTS["body"] += 1
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LeakError: memory grew * per call in test_async_leaks*"])


def test_async_test_without_async_plugin_fails_as_pytest_says(pytester: pytest.Pytester) -> None:
    """With no plugin to run async tests, pytest's own failure is kept, nothing is checked."""
    pytester.makepyfile(
        """
import pytest

@pytest.mark.no_growth()
async def test_async():
    pass
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:anyio")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    """``pytest --markers`` lists no_growth, so ``--strict-markers`` accepts it."""
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.no_growth(**options):*"])
