"""Shared fixtures: tests run on the CPU, quietly, with a fixed seed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFERKIT_DEVICE", "cpu")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded():
    from transferkit.foundations.device import seed_everything

    seed_everything(0)


@pytest.fixture
def course_script():
    """course.py's names, read without running its command line (it cannot import
    transferkit: it runs before the course's environment exists)."""
    namespace = {"__name__": "course_under_test", "__file__": str(ROOT / "course.py")}
    exec(compile((ROOT / "course.py").read_text(), "course.py", "exec"), namespace)
    return namespace


# --- lesson 05: a source task, a target task, and a CNN small enough to train in a test ---


def _tiny_cnn(num_classes: int = 5):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 64, num_classes),
    )


@pytest.fixture
def tiny_cnn():
    """Builds CNNs for 8×8 digits: two conv layer groups ([0..2], [3..5]) and a head ([7])."""
    return _tiny_cnn


@pytest.fixture(scope="session")
def digit_tasks():
    """(source, target) splits: digits 0-4 and 5-9, each as train / val / test."""
    from transferkit.foundations.data import load_digits, split_classes, train_val_test_split

    digits = load_digits(images=True)
    source, target = split_classes(digits.x, digits.y, source=[0, 1, 2, 3, 4])
    return (train_val_test_split(source.x, source.y, seed=0),
            train_val_test_split(target.x, target.y, seed=0))


# --- label-budget studies and strategy searches: the digits and a method with no training ---


@pytest.fixture(scope="session")
def splits():
    """All of the digits (flat, 64 features) as train / val / test, seed 0."""
    from transferkit.foundations.data import load_digits, train_val_test_split

    return train_val_test_split(*load_digits(), seed=0)


def _nearest_class_mean(train, val, seed):
    import torch

    means = torch.stack([train.x[train.y == c].mean(0) for c in range(10)])
    return lambda x: torch.cdist(x, means).argmin(dim=1)


@pytest.fixture
def nearest_class_mean():
    """A tiny deterministic method (train, val, seed) -> model: predict the class whose
    mean image is nearest."""
    return _nearest_class_mean
