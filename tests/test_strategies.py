"""transferkit.methods.strategies: one table of fine-tuning strategies, read by fine_tune, the
command line and the transformer methods alike (LoRA and the cached bottom included)."""

import copy

import pytest
import torch
import transformers  # a dependency: missing, the tests fail
from torch import nn

from transferkit.methods.finetune import fine_tune
from transferkit.methods.strategies import (
    PROBE,
    STRATEGIES,
    TABLE,
    adapt,
    check_strategy,
    set_trainable,
    strategy_stages,
)
from transferkit.surgery.cached_bottom import CachedBottomClassifier
from transferkit.surgery.freezing import trainable_parameters
from transferkit.surgery.heads import Classifier, TextClassifier
from transferkit.surgery.lora import add_lora, lora_layers
from transferkit.training.loop import fit


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed=0):
    torch.manual_seed(seed)
    return Classifier(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU()),
                      10)


def toy_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    return x, (x[:, :10].argmax(1))


def tiny_bert_classifier(layers=3, seed=0):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32, pad_token_id=0)
    torch.manual_seed(seed)
    return TextClassifier(transformers.BertModel(config), 2)


def test_the_table_knows_every_strategy_and_stages_are_data():
    assert set(STRATEGIES) | {"lora"} == set(TABLE)
    assert "lora" not in STRATEGIES  # the seven that only choose layer groups
    # LP-FT is written once: a linear-probe stage before full fine-tuning's
    assert strategy_stages("lp_ft", 4) == [(PROBE, 3), *strategy_stages("full", 4)]
    assert strategy_stages("linear_probe", 4) == [(PROBE, 3)]
    assert strategy_stages("lora", 4) == [("lora", 0)]
    assert strategy_stages("discriminative", 3, decay=2.0) == [("all groups, lr ÷2 per group", 0)]


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown strategy 'qlora'; choose one of scratch.*lora"):
        check_strategy("qlora")
    with pytest.raises(ValueError, match=r"unknown strategy 'lora'; choose one of .*lp_ft\.$"):
        check_strategy("lora", STRATEGIES)  # a caller that offers fewer names
    assert check_strategy("gradual").head_lr_first


def test_adapt_adds_lora_to_every_linear_but_the_head_and_leaves_others_alone():
    model = mlp()
    assert adapt(model, "full") is model and not lora_layers(model)
    adapt(model, "lora", r=2, alpha=4)
    assert sorted(lora_layers(model)) == ["encoder.0", "encoder.2"]
    assert trainable_parameters(model) == ["encoder.0.lora_A", "encoder.0.lora_B",
                                           "encoder.2.lora_A", "encoder.2.lora_B",
                                           "head.weight", "head.bias"]
    with pytest.raises(ValueError, match="call adapt first"):
        set_trainable(mlp(), "lora")  # the adapters are not there: refused, not trained whole


def test_fine_tune_with_lora_trains_as_add_lora_then_fit_did():
    """The command line used to add the adapters itself and call fit; through the one
    dispatch the run is the same, to the bit."""
    x, y = toy_data()
    train, val = (x[:64], y[:64]), (x[64:], y[64:])
    old = mlp()
    torch.manual_seed(5)
    add_lora(old, r=4, alpha=8, targets=["0", "2"])
    fit(old, train, val, epochs=2, lr=3e-3, batch_size=16, seed=1, progress=False, device="cpu")
    new = mlp()
    torch.manual_seed(5)
    result = fine_tune(new, train, val, strategy="lora", epochs=2, lr=3e-3, batch_size=16, seed=1,
                       progress=False, device="cpu", r=4, alpha=8)
    assert [s.name for s in result.stages] == ["lora"]
    for (name, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(new.encoder[0].base.weight, mlp().encoder[0].weight)  # W stays frozen
    assert result.cost()["trainable_params"] == 4 * (64 + 32) + 4 * (32 + 16) + 16 * 10 + 10


def test_the_cached_bottom_trains_what_partial_trains():
    net = tiny_bert_classifier()
    twin = copy.deepcopy(net)
    wrapped = set_trainable(net, "partial", k=3, cache_bottom=True)  # 2 blocks + the head
    assert isinstance(wrapped, CachedBottomClassifier) and wrapped.k == 2
    assert wrapped.classifier is net
    set_trainable(twin, "partial", k=3)  # the same groups, the bottom run every step
    assert trainable_parameters(net) == trainable_parameters(twin)
    assert trainable_parameters(net)[0].startswith("encoder.encoder.layer.1.")


def test_set_trainable_refuses_a_stage_the_strategy_does_not_have():
    with pytest.raises(ValueError, match="lp_ft has 2 stage"):
        set_trainable(mlp(), "lp_ft", 2)
