"""Sphinx configuration: MyST Markdown pages, furo theme, API from docstrings."""

import boundkit

project = "boundkit"
author = "boundkit developers"
release = boundkit.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
myst_heading_anchors = 3
nitpicky = False
