"""The examples in the library's docstrings run, and give what they say."""

import doctest
import importlib
import pkgutil

import pytest

import transferkit

MODULES = sorted(m.name for m in pkgutil.iter_modules(transferkit.__path__))
# Modules whose docstrings show examples: a test that finds none there has lost them.
WITH_EXAMPLES = {"autoencoder", "data", "device", "distributed", "efficientnet_lite", "experiments",
                 "finetune", "freezing", "gd", "heads", "imagenet", "layers", "lora", "metrics",
                 "model_files", "models", "modes", "small_images", "stats", "strategies", "student",
                 "text", "text_data", "train", "transferability"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"transferkit.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"no docstring examples found in {name}"
