"""pytest plugin: ``@pytest.mark.no_growth(...)`` fails a test whose body leaks.

Registered through the ``pytest11`` entry point and inert unless a test carries
the marker. The marked test's fixtures are set up once; its body then runs
repeatedly under :func:`boundkit.testing.assert_no_growth`, which takes the
marker's keyword arguments. The root logger's handlers (pytest's log capture)
are detached during the check unless the marker says ``detach_logging=False``.
An async test runs under :func:`boundkit.testing.aassert_no_growth` inside the
event loop of whichever plugin runs async tests (anyio, pytest-asyncio).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from typing import Any

import pytest

from .errors import ConfigError
from .testing import GrowthReport, aassert_no_growth, assert_no_growth

_OPTIONS = frozenset(inspect.signature(assert_no_growth).parameters) - {"fn"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_growth(**options): run the test body repeatedly and fail it if memory grows "
        "(options as boundkit.testing.assert_no_growth)",
    )


def _options(marker: pytest.Mark) -> dict[str, Any]:
    if marker.args:
        raise ConfigError(f"no_growth takes keyword arguments only, got {marker.args!r}")
    unknown = sorted(set(marker.kwargs) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"no_growth got unknown options {unknown!r}; it takes {sorted(_OPTIONS)!r}"
        )
    return {"detach_logging": True, **marker.kwargs}


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    __tracebackhide__ = True  # a failure shows the report, not this hook's source
    marker = pyfuncitem.get_closest_marker("no_growth")
    if marker is None:
        return (yield)
    options = _options(marker)
    test = pyfuncitem.obj

    @functools.wraps(test)
    def repeated(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True

        def body() -> None:
            test(*args, **kwargs)

        body.__qualname__ = test.__qualname__
        _record(pyfuncitem, assert_no_growth(body, **options))

    @functools.wraps(test)
    async def arepeated(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True

        async def body() -> None:
            await test(*args, **kwargs)

        body.__qualname__ = test.__qualname__
        _record(pyfuncitem, await aassert_no_growth(body, **options))

    pyfuncitem.obj = arepeated if inspect.iscoroutinefunction(test) else repeated
    try:
        return (yield)
    finally:
        # plugins that rerun the hook (rerunfailures) must see the original test
        pyfuncitem.obj = test


def _record(item: pytest.Function, report: GrowthReport) -> None:
    """Keep a passing check's sensitivity with the test (JUnit XML shows it too)."""
    item.user_properties.append(("no_growth", report.sensitivity))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """With ``-v``, say for each passing ``no_growth`` test how small a leak it could see."""
    if terminalreporter.config.get_verbosity() < 1:
        return
    lines = [
        f"{report.nodeid}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", ())
        if name == "no_growth"
    ]
    if lines:
        terminalreporter.write_sep("-", "no_growth: what each passing check could see")
        for line in lines:
            terminalreporter.write_line(line)
