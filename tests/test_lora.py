"""transferkit.surgery.lora: W x + (α/r)·B A x, checked by hand and against peft."""

import copy

import peft  # a dependency: missing, the tests fail
import pytest
import torch
import transformers  # a dependency: missing, the tests fail
from torch import nn

from transferkit.surgery.lora import (
    LoRALinear,
    add_lora,
    linear_names,
    lora_layers,
    lora_parameter_count,
    merge_lora,
    unmerge_lora,
)


def tiny_bert(seed=0, **overrides):
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config).eval()


def batch(seed=1, n=4, length=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, length), generator=g)
    ids[1, 6:] = 0  # padding
    return ids, (ids != 0).long()


def test_the_layer_is_the_formula():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 5), r=3, alpha=6)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(7, 6)
    W, b, A, B = layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B
    assert torch.allclose(layer(x), x @ W.T + b + (6 / 3) * x @ A.T @ B.T, atol=1e-6)
    assert torch.allclose(layer.delta_weight(), 2.0 * B @ A)
    assert not layer.base.weight.requires_grad and layer.lora_A.requires_grad


def test_b_starts_at_zero_so_training_starts_from_the_pretrained_function():
    model = tiny_bert()
    ids, mask = batch()
    before = model(input_ids=ids, attention_mask=mask).logits
    add_lora(model)
    assert all(torch.count_nonzero(m.lora_B) == 0 for m in lora_layers(model).values())
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)


def test_only_lora_and_the_head_train():
    model = add_lora(tiny_bert(), r=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if "lora_" in n or n.startswith("classifier.")}
    assert set(lora_layers(model)) == {f"bert.encoder.layer.{i}.attention.self.{t}"
                                       for i in range(2) for t in ("query", "value")}
    assert lora_parameter_count(model) == 2 * 2 * 4 * (32 + 32)
    assert "pooler" not in " ".join(lora_layers(model))


def test_unknown_targets_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="called \\['qeury'\\].*valid targets are: .*query"):
        add_lora(tiny_bert(), targets=("qeury", "value"))
    assert "key" in linear_names(tiny_bert())
    model = add_lora(tiny_bert())
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model)


def test_merged_outputs_equal_unmerged():
    model = add_lora(tiny_bert(), r=4)
    for m in lora_layers(model).values():
        nn.init.normal_(m.lora_B, std=0.5)
    ids, mask = batch()
    weight = model.bert.encoder.layer[0].attention.self.query.base.weight.clone()
    unmerged = model(input_ids=ids, attention_mask=mask).logits
    merge_lora(model)
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, unmerged, atol=1e-5)
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.base.weight, weight)
    unmerge_lora(model)
    assert torch.allclose(model.bert.encoder.layer[0].attention.self.query.base.weight, weight,
                          atol=1e-6)
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, unmerged, atol=1e-5)


def peft_twin(ours, base, r, alpha):
    """peft's LoRA on a copy of the same base model, with our A and B copied in."""
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["query", "value"],
                             lora_dropout=0.0, modules_to_save=["classifier"])
    twin = peft.get_peft_model(copy.deepcopy(base), config)
    for name, layer in lora_layers(ours).items():
        theirs = twin.base_model.model.get_submodule(name)
        theirs.lora_A["default"].weight.data.copy_(layer.lora_A)
        theirs.lora_B["default"].weight.data.copy_(layer.lora_B)
    return twin


def test_same_outputs_gradients_and_counts_as_peft():
    base = tiny_bert(seed=3)
    ours = add_lora(copy.deepcopy(base), r=8, alpha=16)
    for m in lora_layers(ours).values():
        nn.init.normal_(m.lora_B, std=0.2)  # non-zero B: a real test of the update
    twin = peft_twin(ours, base, r=8, alpha=16)
    ids, mask = batch()
    y = torch.tensor([0, 1, 1, 0])
    out_ours = ours(input_ids=ids, attention_mask=mask).logits
    out_peft = twin(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(out_ours, out_peft, atol=1e-5)
    nn.functional.cross_entropy(out_ours, y).backward()
    nn.functional.cross_entropy(out_peft, y).backward()
    for name, layer in lora_layers(ours).items():
        theirs = twin.base_model.model.get_submodule(name)
        assert torch.allclose(layer.lora_A.grad, theirs.lora_A["default"].weight.grad, atol=1e-6)
        assert torch.allclose(layer.lora_B.grad, theirs.lora_B["default"].weight.grad, atol=1e-6)
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(ours) == count(twin)
    # merged, as peft's merge_and_unload
    merged_peft = twin.merge_and_unload()
    merge_lora(ours)
    with torch.no_grad():
        assert torch.allclose(ours(input_ids=ids, attention_mask=mask).logits,
                              merged_peft(input_ids=ids, attention_mask=mask).logits, atol=1e-5)


def test_a_bare_encoder_has_no_head_to_keep():
    encoder = transformers.BertModel(tiny_bert().config)
    add_lora(encoder, targets=["query"])
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == {
        f"encoder.layer.{i}.attention.self.query.lora_{m}" for i in range(2) for m in "AB"}
