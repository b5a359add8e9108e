"""Shared test configuration: pytester for testing the pytest plugin, PDF fixtures."""

pytest_plugins = ["pytester", "fix_pdf"]
