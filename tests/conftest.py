"""Shared test configuration: pytester for testing the pytest plugin."""

pytest_plugins = ["pytester"]
