"""Shared test configuration.

Plugins: pytester for the pytest plugin, fix_pg for the database, fix_pdf for
generated PDFs. Under CI a test skipped because an import failed is a failure:
the test extra installs everything, so such a skip means a broken install.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = ["fix_pdf", "fix_pg", "fix_redis", "pytester"]


def _fail_import_skips_under_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    if os.environ.get("CI") and report.skipped and "could not import" in str(report.longrepr):
        report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_import_skips_under_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_import_skips_under_ci(report)
    return report
