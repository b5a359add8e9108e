"""The examples in boundkit's docstrings hold: every module's doctests run here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import boundkit

MODULES = sorted(
    info.name
    for info in pkgutil.iter_modules(boundkit.__path__, "boundkit.")
    if info.name != "boundkit.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """Each module's doctests pass, and a module whose source shows examples runs some."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert 0 == result.failed
    if ">>> " in Path(str(module.__file__)).read_text():
        assert result.attempted > 0, f"{name} shows examples that doctest does not find"
