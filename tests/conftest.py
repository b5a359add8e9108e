"""Shared test configuration: pytester for the pytest plugin, fix_pg for the database."""

pytest_plugins = ["fix_pg", "pytester"]
