"""Shared fixtures: tests run on the CPU, quietly, with a fixed seed."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFERKIT_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _seeded():
    from transferkit.device import seed_everything

    seed_everything(0)
