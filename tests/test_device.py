import random

import numpy as np
import pytest
import torch

from transferkit.foundations.device import ENV_VAR, pick_device, seed_everything


def test_env_var_picks_cpu(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert pick_device() == torch.device("cpu")


def test_argument_beats_env_var(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "nonsense")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", "cpu:zero"])
def test_unknown_device_name_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(ValueError, match=rf"{ENV_VAR}.*not a device name.*'cpu', 'cuda'"):
        pick_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_says_so(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        pick_device()


def test_automatic_choice_without_gpu(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    device = pick_device()
    if expected:
        assert device.type == expected
    else:
        assert device.type in ("mps", "cpu")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3), torch.nn.Linear(4, 2).weight

    seed_everything(7)
    a = draw()
    seed_everything(7)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    seed_everything(8)
    assert not torch.equal(draw()[2], a[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(bad)


def test_seeded_is_reproducible_and_leaves_the_global_random_state_alone():
    from transferkit.foundations.device import seeded

    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    with seeded(7):
        first = torch.nn.Linear(4, 2).weight.detach().clone()
    with seeded(7):
        second = torch.nn.Linear(4, 2).weight.detach().clone()
    assert torch.equal(first, second)
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]
