"""Lesson 07's self-checks: the right answers, computed here from a real MiniLM
classifier, pass; the usual wrong ones get their hints; a better prompt must beat the
default prompts on the validation snippets."""

import copy

import pytest
import torch

from transferkit.course.checks import Result, check, names
from transferkit.course.text_checks import DEFAULT_PROMPTS, prompt_accuracy
from transferkit.surgery.heads import TextClassifier
from transferkit.surgery.lora import add_lora, lora_parameter_count


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """No user's embedding cache; one for the module, so the validation snippets are
    encoded once; one thread (a busy machine: README)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    from transferkit.text.model import load_text_model

    return load_text_model(device="cpu")


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lesson_07_checks_are_registered():
    assert {"07.lora_parameters", "07.top_two_trainable", "07.better_prompt"} <= set(names())


def test_lora_parameters(minilm):
    model = add_lora(TextClassifier(copy.deepcopy(minilm.model), 2), r=4)
    right = lora_parameter_count(model)
    head = sum(p.numel() for p in model.head.parameters())
    assert trainable(model) == right + head
    ok = check("07.lora_parameters", right)
    assert isinstance(ok, Result) and ok and str(ok).startswith("PASS")
    assert check("07.lora_parameters", torch.tensor(right))  # a count from .numel() sums
    with_head = check("07.lora_parameters", right + head)
    assert not with_head and "head" in with_head.message
    half = check("07.lora_parameters", right // 2)  # only A (or B), or only query
    assert not half and "two matrices" in half.message and "query and value" in half.message
    for wrong in (right // 12, 2 * right, right + 1):  # one projection; r = 8; off by one
        result = check("07.lora_parameters", wrong)
        assert not result and "6 layers" in result.message and str(right) not in result.message


def test_top_two_trainable(minilm):
    model = TextClassifier(copy.deepcopy(minilm.model), 2)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    for layer in model.encoder.encoder.layer[4:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    right = trainable(model)
    head = sum(p.numel() for p in model.head.parameters())
    one_layer = sum(p.numel() for p in model.encoder.encoder.layer[5].parameters())
    assert check("07.top_two_trainable", right)
    assert check("07.top_two_trainable", float(right))
    no_head = check("07.top_two_trainable", right - head)
    assert not no_head and "head" in no_head.message
    one = check("07.top_two_trainable", one_layer + head)
    assert not one and "one layer" in one.message
    everything = check("07.top_two_trainable", sum(p.numel() for p in model.parameters()))
    assert not everything and "freeze" in everything.message
    assert "could not read" in check("07.top_two_trainable", "many").message


def test_better_prompt():
    better = {"rotten": ["a bad movie", "a boring, badly made film", "I hated this film"],
              "fresh": ["a good movie", "a moving, brilliantly made film", "I loved this film"]}
    result = check("07.better_prompt", better)
    assert result, result.message
    assert prompt_accuracy(better) > prompt_accuracy(DEFAULT_PROMPTS)
    same = check("07.better_prompt", dict(DEFAULT_PROMPTS))
    assert not same and "not above" in same.message
    for malformed in (["negative review", "positive review"],
                      {"fresh": "positive review", "rotten": "negative review"},
                      {"bad": "negative review", "good": "positive review"}):
        wrong = check("07.better_prompt", malformed)
        assert not wrong and "rotten" in wrong.message and "fresh" in wrong.message
    assert "no answer yet" in check("07.better_prompt", ...).message
