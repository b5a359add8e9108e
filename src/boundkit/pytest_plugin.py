"""pytest plugin: ``@pytest.mark.no_growth(...)`` fails a test whose body leaks.

Registered through the ``pytest11`` entry point and inert unless a test carries
the marker. The marker's keyword arguments go to
:func:`boundkit.testing.measure_growth`.
"""

from __future__ import annotations

from typing import Any

import pytest

from .testing import assert_no_growth


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_growth(**options): run the test body repeatedly and fail it if memory grows "
        "(options as boundkit.testing.measure_growth)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    marker = pyfuncitem.get_closest_marker("no_growth")
    if marker is None:
        return None
    if marker.args:
        raise pytest.UsageError("no_growth takes keyword arguments only")
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    test = pyfuncitem.obj
    assert_no_growth(lambda: test(**kwargs), **marker.kwargs)
    return True
