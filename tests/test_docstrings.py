"""The examples in the library's docstrings run, and give what they say."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import transferkit

MODULES = sorted(m.name for m in pkgutil.walk_packages(transferkit.__path__, "transferkit.")
                 if not m.ispkg)
# An example doctest runs (not marked +SKIP): a module that has one must run it.
EXAMPLE = re.compile(r"^ *>>> (?!.*doctest: \+SKIP)", re.M)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if EXAMPLE.search(Path(module.__file__).read_text(encoding="utf-8")):  # none lost
        assert result.attempted > 0, f"no docstring examples found in {name}"
