"""pytest plugin: ``@pytest.mark.no_growth(...)`` fails a test whose body leaks.

Registered through the ``pytest11`` entry point and inert unless a test carries
the marker. The marked test's fixtures are set up once; its body then runs
repeatedly under :func:`boundkit.testing.assert_no_growth`, which takes the
marker's keyword arguments. The root logger's handlers (pytest's log capture)
are detached during the check unless the marker says ``detach_logging=False``.
Async test functions are refused with a clear error.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from typing import Any

import pytest

from .errors import ConfigError
from .testing import assert_no_growth

_OPTIONS = frozenset(inspect.signature(assert_no_growth).parameters) - {"fn"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_growth(**options): run the test body repeatedly and fail it if memory grows "
        "(options as boundkit.testing.assert_no_growth)",
    )


def _options(item: pytest.Function, marker: pytest.Mark) -> dict[str, Any]:
    if marker.args:
        raise ConfigError(f"no_growth takes keyword arguments only, got {marker.args!r}")
    unknown = sorted(set(marker.kwargs) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"no_growth got unknown options {unknown!r}; it takes {sorted(_OPTIONS)!r}"
        )
    if inspect.iscoroutinefunction(item.obj):
        raise ConfigError(
            f"no_growth cannot run async test {item.name!r}: call assert_no_growth "
            "on a function that runs one iteration on your event loop instead"
        )
    return {"detach_logging": True, **marker.kwargs}


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    marker = pyfuncitem.get_closest_marker("no_growth")
    if marker is None:
        return (yield)
    options = _options(pyfuncitem, marker)
    test = pyfuncitem.obj

    @functools.wraps(test)
    def repeated(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True

        def body() -> None:
            test(*args, **kwargs)

        body.__qualname__ = test.__qualname__
        assert_no_growth(body, **options)

    pyfuncitem.obj = repeated
    try:
        return (yield)
    finally:
        # plugins that rerun the hook (rerunfailures) must see the original test
        pyfuncitem.obj = test
