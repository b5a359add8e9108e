"""Run Django's own ``BaseCacheTests`` against boundkit's backend (a subprocess of
tests/test_django_cache.py).

Usage: ``python django_cache_suite.py <sdist>/tests``. Prints one JSON line:
the tests run, and the ids of the failures, errors and skips.
"""

from __future__ import annotations

import json
import sys
import unittest

import django
from django.conf import settings

#: Django tests this backend skips, with the reason (docs/django.md lists them too).
SKIPPED = {
    "test_cull": "evicts the least recently used entries one at a time down to MAX_ENTRIES "
    "(30 kept), instead of culling a third of the keys at once (29 kept)",
    "test_zero_cull": "CULL_FREQUENCY=0 would clear the whole cache when full; the backend "
    "evicts only the least recently used entry instead (30 kept, not 19)",
}


def main(tests_dir: str) -> int:
    sys.path.insert(0, tests_dir)
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-cache-suite",
        INSTALLED_APPS=["django.contrib.contenttypes", "cache"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        USE_TZ=False,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from cache.tests import BaseCacheTests, caches_setting_for_tests
    from django.test import TestCase, override_settings
    from django.test.utils import get_runner

    @override_settings(
        CACHES=caches_setting_for_tests(BACKEND="boundkit.django.BoundedCacheBackend")
    )
    class BoundedCacheBackendTests(BaseCacheTests, TestCase):  # type: ignore[misc]
        """Django's BaseCacheTests mixin, as LocMemCacheTests uses it."""

    for name, reason in SKIPPED.items():
        setattr(
            BoundedCacheBackendTests, name, unittest.skip(reason)(getattr(BaseCacheTests, name))
        )

    runner = get_runner(settings)(verbosity=0, interactive=False)
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(BoundedCacheBackendTests)
    runner.setup_test_environment()
    old_config = runner.setup_databases()
    try:
        result = runner.run_suite(suite)
    finally:
        runner.teardown_databases(old_config)
        runner.teardown_test_environment()
    print(
        json.dumps(
            {
                "run": result.testsRun,
                "failures": [[str(test), text] for test, text in result.failures],
                "errors": [[str(test), text] for test, text in result.errors],
                "skipped": [test.id().rsplit(".", 1)[-1] for test, _ in result.skipped],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
