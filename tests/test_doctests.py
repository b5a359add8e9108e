"""The examples in boundkit's docstrings hold: every module's doctests run here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import boundkit

# Import every module first: some classes are re-exported with their __module__
# set to the public module, and doctest finds their examples there.
MODULES = {
    info.name: importlib.import_module(info.name)
    for info in pkgutil.iter_modules(boundkit.__path__, "boundkit.")
    if info.name != "boundkit.__main__"
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples(name: str) -> None:
    """Each module's doctests pass."""
    assert 0 == doctest.testmod(MODULES[name], optionflags=doctest.ELLIPSIS).failed


def test_every_example_in_the_sources_runs() -> None:
    """Doctest runs as many examples as the source files show, so none is silently skipped."""
    # Python sources only: the C accelerator (boundkit._speedups) has no examples
    sources = [module for module in MODULES.values() if str(module.__file__).endswith(".py")]
    parser = doctest.DocTestParser()
    shown = sum(len(parser.get_examples(Path(str(m.__file__)).read_text())) for m in sources)
    finder = doctest.DocTestFinder()
    found = sum(len(test.examples) for module in sources for test in finder.find(module))
    assert shown > 0
    assert shown == found
