"""Shared test configuration: pytester for the pytest plugin, fix_pg for the database,
fix_pdf for generated PDFs."""

pytest_plugins = ["fix_pdf", "fix_pg", "pytester"]
