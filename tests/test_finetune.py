"""transferkit.methods.finetune: freezing that holds on any nn.Module, and the strategies
built on it.

The first five sections are the pitfalls the module must rule out; each test there
fails on the naive code (shown in its docstring).
"""

import copy
import functools
import warnings

import pytest
import torch
from torch import nn

from transferkit.course import plots
from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.methods.finetune import (
    clear_feature_cache,
    extract_features,
    feature_drift,
    fine_tune,
    finetune_method,
)
from transferkit.methods.strategies import STRATEGIES
from transferkit.surgery.freezing import (
    bn_stats_frozen,
    freeze,
    freeze_to,
    group_learning_rates,
    param_groups,
    trainable_parameters,
    trainable_report,
    unfreeze,
)
from transferkit.surgery.heads import (
    Classifier,
    feature_size,
    find_head,
    replace_head,
    without_head,
)
from transferkit.surgery.layer_groups import layer_groups
from transferkit.training.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from transferkit.training.loop import fit
from transferkit.training.optimizers import untrained_parameters


def bn_net(seed=0):
    """A small MLP with BatchNorm: body (two Linear+BN+ReLU blocks) and a head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 10),
    )


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_identical(before, module, keys=None):
    after = module.state_dict()
    for k in keys or before:
        assert torch.equal(before[k], after[k]), f"{k} changed"


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits()
    return train_val_test_split(x, y, seed=0)


@pytest.fixture
def small(digits):
    return digits.train.x[:200], digits.train.y[:200]


# --- 1. frozen parameters do not move at all -------------------------------------------


@pytest.mark.parametrize("make_opt", [
    functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-2),
    functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=1e-2),
], ids=["sgd-momentum-wd", "adamw"])
def test_frozen_mid_training_is_bit_identical_under_momentum_and_weight_decay(small, make_opt):
    """Naive: ``p.requires_grad = False`` mid-training leaves the old ``.grad``; a loop that
    zeroes gradients in place (set_to_none=False) then keeps stepping the parameter through
    its momentum and weight decay."""
    x, y = small
    model = bn_net()
    opt = make_opt(model.parameters())
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()  # momentum and Adam state now exist for every parameter
    freeze(model, [0, 1], bn="freeze")  # the body, mid-training
    body = snapshot(model)
    head_before = model[6].weight.detach().clone()
    for _ in range(5):
        step()
    assert_identical(body, model, [k for k in body if not k.startswith("6.")])
    assert not torch.equal(head_before, model[6].weight)  # the head did train


def test_fit_leaves_frozen_groups_bit_identical(small):
    model = bn_net()
    freeze_to(model, -1, bn="freeze")
    body = {k: v for k, v in snapshot(model).items() if not k.startswith("6.")}
    fit(model, small, epochs=3, optimizer="sgd", lr=0.1, weight_decay=1e-2, progress=False,
        seed=0)
    assert_identical(body, model)


# --- 2. BatchNorm statistics stay frozen, even through model.train() -----------------------


def test_frozen_batchnorm_statistics_survive_model_train_and_fit(small):
    """Naive: ``bn.eval()`` plus requires_grad=False; fit (like any loop) calls model.train()
    every epoch, which switches BatchNorm back and its running statistics drift."""
    model = bn_net()
    freeze(model, [0, 1], bn="freeze")
    stats = {k: v for k, v in snapshot(model).items() if "running" in k or "num_batches" in k}
    model.train()
    assert not model[1].training and not model[4].training
    fit(model, small, epochs=2, progress=False, seed=0)
    assert_identical(stats, model)
    assert bn_stats_frozen(model[1]) and not model[1].training


def test_naive_bn_eval_drifts_which_is_what_the_policy_prevents(small):
    model = bn_net()
    for p in model[:6].parameters():
        p.requires_grad_(False)
    model[1].eval()
    before = model[1].running_mean.clone()
    fit(model, small, epochs=1, progress=False, seed=0)
    assert not torch.equal(before, model[1].running_mean)


def test_default_bn_policy_keeps_batchnorm_training_as_fastai(small):
    model = bn_net()
    freeze(model)  # bn="train"
    assert trainable_parameters(model) == ["1.weight", "1.bias", "4.weight", "4.bias"]
    before = model[1].running_mean.clone()
    fit(model, small, epochs=1, progress=False, seed=0)
    assert not torch.equal(before, model[1].running_mean)  # statistics adapt
    unfreeze(model)
    assert len(trainable_parameters(model)) == len(list(model.parameters()))


def test_train_policy_releases_statistics_frozen_before():
    model = bn_net()
    freeze(model, bn="freeze")
    freeze(model, bn="train")
    assert not bn_stats_frozen(model[1])
    model.train()
    assert model[1].training


def test_unfreeze_releases_batchnorm_statistics():
    model = bn_net()
    freeze(model, bn="freeze")
    unfreeze(model)
    model.train()
    assert model[1].training and not bn_stats_frozen(model[1])


def test_frozen_statistics_survive_deepcopy():
    model = bn_net()
    freeze(model, bn="freeze")
    twin = copy.deepcopy(model)
    twin.train()
    assert not twin[1].training and bn_stats_frozen(twin[1])
    model[1].running_mean.add_(1)  # the copy has its own buffers
    assert not torch.equal(model[1].running_mean, twin[1].running_mean)


def test_a_model_with_frozen_statistics_saves_whole_and_loads_still_frozen(tmp_path):
    """Naive: a method bound onto each BatchNorm (``types.MethodType``); pickle then
    fails to load the whole model (``AttributeError: _stay_in_eval``)."""
    model = bn_net()
    freeze(model, [0], bn="freeze")
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    stats = {k: v for k, v in snapshot(loaded).items() if k.startswith("1.")}
    loaded.train()
    assert bn_stats_frozen(loaded[1]) and not loaded[1].training
    assert loaded[4].training and not bn_stats_frozen(loaded[4])
    loaded(torch.randn(8, 64))  # a batch in training mode moves only the unfrozen statistics
    assert_identical(stats, loaded)
    assert loaded[1].train.bn is loaded[1]  # held in eval mode: the loaded layer, not the old
    unfreeze(loaded)
    loaded.train()
    assert loaded[1].training and not bn_stats_frozen(loaded[1])


def test_freezing_statistics_leaves_the_architecture_and_its_cache_key_alone():
    from transferkit.surgery.layer_groups import architecture

    model = bn_net()
    before = architecture(model)
    freeze(model, bn="freeze")
    assert architecture(model) == before


# --- 3. parameters unfrozen later are trained ------------------------------------------------


def test_param_groups_optimizer_trains_parameters_unfrozen_later(small):
    """Naive: the optimizer is built from the trainable parameters only; a layer unfrozen
    later gets gradients but never a step."""
    model = bn_net()
    freeze_to(model, -1)
    opt = torch.optim.Adam(param_groups(model, 1e-2))
    fit(model, small, epochs=1, optimizer=opt, progress=False, seed=0)
    first = model[0].weight.detach().clone()
    unfreeze(model)
    fit(model, small, epochs=1, optimizer=opt, progress=False, seed=0)
    assert not torch.equal(first, model[0].weight)


def test_fit_warns_about_trainable_parameters_missing_from_the_optimizer(small):
    model = bn_net()
    freeze_to(model, -1)
    naive = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    unfreeze(model)
    first = model[0].weight.detach().clone()
    assert "0.weight" in untrained_parameters(model, naive)
    assert "not in optimizer" in str(trainable_report(model, naive))
    with pytest.warns(UserWarning, match="not in the optimizer.*0.weight"):
        fit(model, small, epochs=1, optimizer=naive, progress=False, seed=0)
    assert torch.equal(first, model[0].weight)  # the naive case, made visible


# --- 4. no weight decay on norm and bias parameters ----------------------------------------


def test_param_groups_put_no_weight_decay_on_norms_and_biases():
    """Naive: ``SGD(model.parameters(), weight_decay=...)`` shrinks biases and BN scales."""
    model = bn_net()
    opt = torch.optim.SGD(param_groups(model, 0.1, weight_decay=0.5), lr=0.1)
    before = snapshot(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # only weight decay acts
    opt.step()
    after = model.state_dict()
    for name, _ in model.named_parameters():
        moved = not torch.equal(before[name], after[name])
        decays = name.endswith("weight") and name not in ("1.weight", "4.weight")
        assert moved == decays, name
    for group in opt.param_groups:
        if group["weight_decay"]:
            assert all(p.ndim == 2 for p in group["params"])


# --- 5. checkpoints keep the freeze state and refuse a mismatched head -----------------------


def test_checkpoint_keeps_frozen_parameters_and_batchnorm_statistics(tmp_path):
    """Naive: torch.save(model.state_dict()) forgets requires_grad and the BatchNorm policy."""
    model = bn_net()
    freeze(model, [0], bn="freeze")
    path = save_checkpoint(tmp_path / "ft.pt", model)
    fresh = bn_net(seed=1)
    load_checkpoint(path, fresh)
    assert trainable_parameters(fresh) == trainable_parameters(model)
    fresh.train()
    assert bn_stats_frozen(fresh[1]) and not fresh[1].training
    assert fresh[4].training and not bn_stats_frozen(fresh[4])
    assert_identical(snapshot(model), fresh)


def test_checkpoint_with_another_head_is_refused_or_named(tmp_path):
    encoder = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
    path = save_checkpoint(tmp_path / "ten.pt", Classifier(encoder, 10))
    five = Classifier(copy.deepcopy(encoder), 5)
    head = five.head.weight.detach().clone()
    with pytest.raises(CheckpointMismatchError, match=r"head.weight: file has shape \(10, 16\)"):
        load_checkpoint(path, five)
    with pytest.warns(UserWarning, match="(?s)skipped.*head.weight"):
        ckpt = load_checkpoint(path, five, strict=False)
    assert "head.weight" in ckpt["skipped"]["shapes"]
    assert torch.equal(head, five.head.weight)  # the new head is kept, the encoder loaded


# --- Classifier, heads ------------------------------------------------------------------------


def test_classifier_measures_the_encoder_where_the_article_code_fails():
    encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with pytest.raises(AttributeError):
        encoder.out_features  # noqa: B018  (the article's nn.Linear(encoder.out_features, …))
    model = Classifier(encoder, 10)
    assert model.features == 8 and model(torch.zeros(3, 64)).shape == (3, 10)


def test_classifier_flattens_a_conv_feature_map_and_needs_the_input_shape():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        Classifier(conv, 10)
    stats = snapshot(conv)
    model = Classifier(conv, 10, input_shape=(1, 8, 8))
    assert_identical(stats, conv)  # the dry run left BatchNorm alone
    assert conv.training  # and its mode
    assert model.features == 4 * 8 * 8 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="could not process inputs of shape"):
        feature_size(conv, (3, 8, 8))
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(conv, 1, input_shape=(1, 8, 8))


def test_find_and_replace_head_on_torchvision_families():
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(weights=None)
    mobilenet = torchvision.models.mobilenet_v3_small(weights=None)
    assert find_head(resnet) == "fc" and find_head(mobilenet) == "classifier.3"
    for model in (resnet, mobilenet):
        new = replace_head(model, 7)
        assert model.get_submodule(find_head(model)) is new
        with torch.no_grad():
            assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    groups = layer_groups(resnet)
    assert [g.name for g in groups] == ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert len(layer_groups(mobilenet)) > 3  # its one big `features` body is split


def test_replace_head_refuses_what_is_not_a_linear():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match="not a Linear"):
        replace_head(model, 3, name="1")
    with pytest.raises(ValueError, match="no Linear layer"):
        find_head(nn.Sequential(nn.ReLU()))


def test_without_head_gives_features_and_puts_the_head_back():
    model = Classifier(nn.Sequential(nn.Linear(64, 8), nn.ReLU()), 10)
    head = model.head
    with without_head(model):
        assert model(torch.zeros(2, 64)).shape == (2, 8)
    assert model.head is head


# --- layer groups, freeze by name and index ----------------------------------------------


def test_layer_groups_join_norms_and_activations_to_their_layer():
    groups = layer_groups(bn_net())
    assert [(g.name, g.layer_names()) for g in groups] == [
        ("0", "Linear, BatchNorm1d, ReLU"), ("3", "Linear, BatchNorm1d, ReLU"), ("6", "Linear")]


def test_head_group_comes_last_even_when_registered_first():
    class HeadFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)
            self.body = nn.Linear(4, 8)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.fc(self.norm(self.body(x)))

    assert [g.name for g in layer_groups(HeadFirst())] == ["body", "fc"]


def test_custom_split_must_cover_every_parameter():
    model = bn_net()
    groups = layer_groups(model, split=[["0", "1"], ["3", "4"], "6"])
    assert [g.name for g in groups] == ["0", "3", "6"]
    with pytest.raises(ValueError, match="in no layer group: 6.weight"):
        layer_groups(model, split=[["0", "1"], ["3", "4"]])
    with pytest.raises(ValueError, match="no module 'nope'"):
        layer_groups(model, split=["nope"])


def test_classifier_groups_are_the_encoder_layers_then_the_head():
    encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU())
    names = [g.name for g in layer_groups(Classifier(encoder, 10))]
    assert names == ["encoder.0", "encoder.2", "head"]
    from transferkit.methods.autoencoder import Autoencoder

    wrapped = Autoencoder([64, 32, 8]).encoder  # its layers sit in one Sequential
    names = [g.name for g in layer_groups(Classifier(wrapped, 10))]
    assert names == ["encoder.layers.0", "encoder.layers.2", "head"]


def test_freeze_by_pattern_and_a_clear_error_for_unknown_names():
    model = Classifier(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)), 10)
    freeze(model, "encoder")
    assert trainable_parameters(model) == ["head.weight", "head.bias"]
    unfreeze(model, "*.bias")
    assert trainable_parameters(model) == ["encoder.0.bias", "encoder.2.bias", "head.weight",
                                           "head.bias"]
    with pytest.raises(ValueError, match=r"matches 'encodr'.*\['encoder.0', 'encoder.2', "
                                         r"'head'\].*top-level modules \['encoder', 'head'\]"):
        freeze(model, "encodr")
    with pytest.raises(ValueError, match="not a layer group"):
        freeze(model, 5)
    with pytest.raises(ValueError, match="bn must be one of"):
        freeze(model, bn="eval")


def test_freeze_to_follows_fastai():
    model = bn_net()
    freeze_to(model, -1)
    assert [n for n in trainable_parameters(model) if not n.startswith(("1.", "4."))] == [
        "6.weight", "6.bias"]
    freeze_to(model, 1, bn="freeze")
    assert trainable_parameters(model) == ["3.weight", "3.bias", "4.weight", "4.bias",
                                           "6.weight", "6.bias"]
    freeze_to(model, 0)
    assert len(trainable_parameters(model)) == 10
    with pytest.raises(ValueError, match="from -3 to 3"):
        freeze_to(model, 4)


# --- learning rates and the report ---------------------------------------------------------


def test_discriminative_learning_rates():
    assert group_learning_rates(3, 1e-3, decay=2.6) == pytest.approx(
        [1e-3 / 2.6**2, 1e-3 / 2.6, 1e-3])
    assert group_learning_rates(3, (1e-5, 1e-3)) == pytest.approx([1e-5, 1e-4, 1e-3])
    assert group_learning_rates(2, 1e-3) == [1e-3, 1e-3]
    with pytest.raises(ValueError, match="either lr=.*or decay"):
        group_learning_rates(3, (1e-5, 1e-3), decay=2.6)
    with pytest.raises(ValueError, match="≥ 1"):
        group_learning_rates(3, 1e-3, decay=0.5)
    model = bn_net()
    freeze(model)
    groups = param_groups(model, 1e-3, decay=2.6)
    held = sum(p.numel() for g in groups for p in g["params"])
    assert held == sum(p.numel() for p in model.parameters())  # frozen ones included
    assert {g["group"]: g["lr"] for g in groups}["6"] == 1e-3


def test_trainable_report_text_and_html():
    model = bn_net()
    freeze_to(model, -1, bn="freeze")
    report = trainable_report(model, torch.optim.Adam(param_groups(model, 1e-3, decay=2.6)))
    rows = report.to_rows()
    assert [r["trainable"] for r in rows] == [0, 0, 170]
    assert [r["batchnorm"] for r in rows] == ["frozen stats", "frozen stats", "—"]
    assert rows[2]["lr"] == "0.001" and rows[1]["lr"] == "0.000385"
    text = str(report)
    assert "frozen stats" in text and "total" in text and "2,874" in text
    assert "<table" in report._repr_html_() and "<td>170</td>" in report._repr_html_()


# --- features -------------------------------------------------------------------------------


def test_extract_features_caches_by_contents_and_reruns_when_weights_change():
    clear_feature_cache()
    backbone = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU())
    calls = []
    backbone.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(300, 64)
    stats = snapshot(backbone)
    first = extract_features(backbone, x, batch_size=128)
    assert len(calls) == 3 and first.shape == (300, 8)
    assert_identical(stats, backbone)  # eval mode: statistics untouched
    assert backbone.training  # and its mode given back
    again = extract_features(backbone, x.clone(), batch_size=128)
    assert len(calls) == 3 and torch.equal(first, again)
    again.zero_()  # the caller's copy; the cache keeps its own
    assert torch.equal(first, extract_features(backbone, x))
    with torch.no_grad():
        backbone[0].weight.add_(0.1)
    changed = extract_features(backbone, x, batch_size=128)
    assert len(calls) == 6 and not torch.equal(first, changed)
    extract_features(backbone, x, batch_size=128, cache=False)
    assert len(calls) == 9


def test_the_feature_cache_tells_apart_networks_with_the_same_weights():
    """Layers without weights (an activation, a pooling) and buffers left out of the
    state dict change what a network computes: the cache must key on them too."""
    clear_feature_cache()
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    x = torch.randn(40, 16)
    relu = nn.Sequential(linear, nn.ReLU())
    tanh = nn.Sequential(copy.deepcopy(linear), nn.Tanh())  # the same weights, bytes and all
    assert torch.equal(extract_features(relu, x), relu(x).detach())
    assert torch.equal(extract_features(tanh, x), tanh(x).detach())  # not relu's features
    conv = nn.Conv2d(1, 4, 3)
    images = torch.randn(10, 1, 6, 6)
    mean = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    top = nn.Sequential(copy.deepcopy(conv), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    assert torch.equal(extract_features(mean, images), mean(images).detach())
    assert torch.equal(extract_features(top, images), top(images).detach())

    class Shift(nn.Module):  # a buffer that is not saved with the weights
        def __init__(self, by):
            super().__init__()
            self.register_buffer("by", torch.tensor(float(by)), persistent=False)

        def forward(self, t):
            return t + self.by

    one, two = nn.Sequential(linear, Shift(1)), nn.Sequential(linear, Shift(2))
    assert one.state_dict().keys() == two.state_dict().keys()
    assert torch.allclose(extract_features(two, x) - extract_features(one, x),
                          torch.ones(40, 8))


def test_fine_tune_refuses_a_nan_in_the_data_before_any_work():
    torch.manual_seed(0)
    x, y = torch.randn(40, 8), torch.arange(40) % 2
    x[7, 3] = float("nan")
    model = Classifier(nn.Sequential(nn.Linear(8, 4), nn.ReLU()), 2)
    before = copy.deepcopy(model.state_dict())
    for strategy in ("linear_probe", "full"):
        with pytest.raises(ValueError, match=r"train x \(the inputs\) holds 1 NaN .*row 7"):
            fine_tune(model, (x, y), (x[:10].nan_to_num(), y[:10]), strategy=strategy,
                      epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"val x \(the inputs\) holds 1 NaN"):
        fine_tune(model, (x.nan_to_num(), y), (x[:10], y[:10]), epochs=1, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_feature_drift():
    f = torch.randn(10, 4)
    assert feature_drift(f, f) == 0.0
    assert feature_drift(f, 2 * f) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        feature_drift(f, f[:5])


# --- strategies -------------------------------------------------------------------------------


def pretrained_classifier(seed=0):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                            nn.Linear(32, 16), nn.ReLU())
    return Classifier(encoder, 10)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_learns_and_reports_its_stages(digits, strategy):
    model = pretrained_classifier()
    result = fine_tune(model, digits.train, digits.val, strategy=strategy, epochs=3, lr=3e-3,
                       progress=False)
    expected_stages = {"lp_ft": 2, "gradual": len(layer_groups(model))}.get(strategy, 1)
    assert len(result.stages) == expected_stages
    assert result.last()["val_accuracy"] > 0.5
    assert len(result.to_rows()) == 3 * expected_stages
    fig = plots.history_figure(result)
    assert len(fig.data) >= 2
    # a dotted line where each stage but the last ends (in every panel)
    assert result.stage_ends() == [3 * i for i in range(1, expected_stages)]
    assert {shape.x0 for shape in fig.layout.shapes} == {e + 0.5 for e in result.stage_ends()}
    assert (result.feature_drift is None) == (strategy == "scratch")


def test_linear_probe_leaves_the_backbone_bit_identical_and_caching_changes_nothing(digits):
    model = pretrained_classifier()
    twin = copy.deepcopy(model)
    encoder = snapshot(model.encoder)
    cached = fine_tune(model, digits.train, digits.val, strategy="linear_probe", epochs=4,
                       lr=3e-3, progress=False)
    assert_identical(encoder, model.encoder)
    assert cached.feature_drift == 0.0
    plain = fine_tune(twin, digits.train, digits.val, strategy="linear_probe", epochs=4,
                      lr=3e-3, cache=False, progress=False)
    assert torch.allclose(model.head.weight, twin.head.weight, atol=1e-5)
    assert plain.last()["val_accuracy"] == pytest.approx(cached.last()["val_accuracy"], abs=0.01)


def test_lp_ft_starts_full_fine_tuning_from_the_probed_head(digits):
    model = pretrained_classifier()
    result = fine_tune(model, digits.train, digits.val, strategy="lp_ft", epochs=3, lr=1e-3,
                       progress=False)
    probe, full = result.stages
    assert probe.name == "linear probe" and full.trainable[0] == "encoder.0"
    # the fine-tuning stage begins where the probe ended, not from a fresh head
    assert full.history["val_loss"][0] < probe.history["val_loss"][0]
    assert result.feature_drift > 0


def test_partial_and_gradual_train_only_the_groups_they_say(digits):
    model = pretrained_classifier()
    first = snapshot(model.encoder)["0.weight"]
    result = fine_tune(model, digits.train, strategy="partial", k=2, epochs=2, progress=False,
                       bn="freeze")
    assert result.stages[0].trainable == ["encoder.3", "head"]
    assert torch.equal(first, model.encoder[0].weight)
    gradual = fine_tune(pretrained_classifier(), digits.train, strategy="gradual", epochs=1,
                        progress=False)
    assert [s.trainable for s in gradual.stages] == [
        ["head"], ["encoder.3", "head"], ["encoder.0", "encoder.3", "head"]]


def test_scratch_forgets_the_pretrained_weights(digits):
    # two different "pre-trained" models end up identical: nothing of their weights is left
    a, b = pretrained_classifier(seed=0), pretrained_classifier(seed=1)
    a.encoder[1].running_mean.add_(1.0)  # statistics are reset too
    for model in (a, b):
        fine_tune(model, digits.train, strategy="scratch", epochs=1, seed=3, progress=False)
    assert_identical(snapshot(a), b)


def test_fine_tune_rejects_bad_settings(digits):
    model = pretrained_classifier()
    with pytest.raises(ValueError, match="unknown strategy 'lpft'.*lp_ft"):
        fine_tune(model, digits.train, strategy="lpft")
    with pytest.raises(ValueError, match="k must be 1 … 3"):
        fine_tune(model, digits.train, strategy="partial", k=0)
    with pytest.raises(TypeError, match="not an optimizer instance"):
        fine_tune(model, digits.train, optimizer=torch.optim.Adam(model.parameters()))


def test_finetune_method_in_a_label_budget_study(digits):
    from transferkit.methods.label_budget import label_budget_study, summarise

    encoder = pretrained_classifier().encoder
    methods = {s: finetune_method(lambda: Classifier(copy.deepcopy(encoder), 10), s, steps=30,
                                  lr=3e-3) for s in ("linear_probe", "full")}
    shifted = type(digits.test)(digits.test.x.roll(1, dims=1), digits.test.y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = label_budget_study(methods, digits, budgets=(3,), seeds=(0, 1),
                                  also_test={"shifted": shifted}, progress=False)
    assert {"shifted_accuracy", "feature_drift"} <= set(rows[0])
    drift = {r["method"]: r["mean"] for r in summarise(rows, "feature_drift")}
    assert drift["linear_probe"] == 0.0 and drift["full"] > 0
    assert encoder[0].weight.grad is None  # the shared pre-trained encoder never trained


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_linear_probe_keeps_head_and_backbone_on_one_device(digits):
    model = pretrained_classifier()
    fine_tune(model, digits.train, digits.val, strategy="linear_probe", epochs=1, progress=False,
              device="cuda")  # the tests set TRANSFERKIT_DEVICE=cpu: ask for the GPU
    assert {p.device.type for p in model.parameters()} == {"cuda"}


def test_finetune_method_accepts_partial_and_refuses_unknown_strategies(digits):
    encoder = pretrained_classifier().encoder
    method = finetune_method(lambda: Classifier(copy.deepcopy(encoder), 10), "partial", steps=5,
                             k=2)
    model = method(digits.train, digits.val, 0)  # built before the fix, "partial" was refused
    assert torch.equal(model.encoder[0].weight, encoder[0].weight)  # below the top 2: frozen
    assert not torch.equal(model.encoder[3].weight, encoder[3].weight)  # in the top 2: trained
    with pytest.raises(ValueError, match="unknown strategy 'lpft'"):
        finetune_method(lambda: None, "lpft")


# --- lesson 06: what a strategy costs, and fine-tuning without watching validation ----------


def _count_trainable_when_fit_runs(monkeypatch):
    """Record, at every `fit` call inside fine_tune, how many parameters could train."""
    import transferkit.methods.finetune as ft

    counts, real_fit = [], ft.fit

    def counting_fit(model, *args, **kwargs):
        counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(ft, "fit", counting_fit)
    return counts


def test_gradual_stage_params_grow_and_are_what_really_trained(monkeypatch, tiny_cnn,
                                                               digit_tasks):
    train = digit_tasks[1].train
    counts = _count_trainable_when_fit_runs(monkeypatch)
    model = tiny_cnn()
    result = fine_tune(model, (train.x[:64], train.y[:64]), strategy="gradual", epochs=1,
                       progress=False)
    params = [stage.params for stage in result.stages]
    assert len(params) == 3 and params == counts
    assert params == sorted(set(params))  # strictly more every stage
    assert params[-1] == sum(p.numel() for p in model.parameters())
    head = model[7]
    assert params[0] > head.weight.numel() + head.bias.numel()  # bn="train": BN trains too


@pytest.mark.parametrize("cache", [True, False])
def test_linear_probe_stage_params_are_the_heads(monkeypatch, tiny_cnn, digit_tasks, cache):
    train = digit_tasks[1].train
    counts = _count_trainable_when_fit_runs(monkeypatch)
    model = tiny_cnn()
    result = fine_tune(model, (train.x[:64], train.y[:64]), strategy="linear_probe",
                       epochs=1, cache=cache, progress=False)
    (stage,) = result.stages
    assert stage.params == 8 * 64 * 5 + 5 == counts[0]
    assert result.cost()["trainable_params"] == stage.params


def test_cost_sums_epochs_over_stages(digits):
    model = pretrained_classifier()
    result = fine_tune(model, (digits.train.x[:128], digits.train.y[:128]), strategy="lp_ft",
                       epochs=2, probe_epochs=3, progress=False)
    cost = result.cost()
    assert cost["epochs"] == 5 == len(result.to_rows())
    seconds = [row["seconds"] for row in result.to_rows()]
    assert cost["seconds"] == pytest.approx(sum(seconds)) and cost["seconds"] > 0
    assert cost["seconds_per_epoch"] == pytest.approx(sum(seconds) / 5)
    probe, full = result.stages
    assert probe.params == 16 * 10 + 10 and full.params == sum(
        p.numel() for p in model.parameters())
    assert cost["trainable_params"] == full.params  # the most any stage trained


def _spy_on_fine_tune(monkeypatch):
    import transferkit.methods.finetune as ft

    calls, real = [], ft.fine_tune

    def spy(model, train, val=None, **kwargs):
        calls.append({"val": val, "result": real(model, train, val, **kwargs)})
        return calls[-1]["result"]

    monkeypatch.setattr(ft, "fine_tune", spy)
    return calls


def test_finetune_method_without_val_trains_blind(monkeypatch, tiny_cnn, digit_tasks):
    _, target = digit_tasks
    calls = _spy_on_fine_tune(monkeypatch)
    labelled = type(target.train)(target.train.x[:50], target.train.y[:50])
    val = target.val
    method = finetune_method(tiny_cnn, "full", steps=4, lr=1e-3, use_val=False)
    model = method(labelled, val, 0)
    (call,) = calls
    result = call["result"]
    assert call["val"] is None  # fine_tune never saw the validation set
    assert result.feature_drift is None and model.measurements["feature_drift"] is None
    (stage,) = result.stages
    assert not any(column.startswith("val") for column in stage.history.columns)
    assert stage.history.best_epoch is None  # nothing restored: the last epoch's weights
    assert len(stage.history) == 4  # one batch of 50 per epoch, 4 steps
    cost = result.cost()
    assert model.measurements["trainable_params"] == cost["trainable_params"] == sum(
        p.numel() for p in model.parameters())
    assert model.measurements["seconds_per_epoch"] == cost["seconds_per_epoch"] > 0


def test_finetune_method_watches_val_by_default(monkeypatch, tiny_cnn, digit_tasks):
    _, target = digit_tasks
    calls = _spy_on_fine_tune(monkeypatch)
    labelled = type(target.train)(target.train.x[:50], target.train.y[:50])
    val = target.val
    model = finetune_method(tiny_cnn, "full", steps=4, lr=1e-3)(labelled, val, 0)
    (call,) = calls
    assert call["val"] is val
    history = call["result"].stages[0].history
    assert {"val_loss", "val_accuracy"} <= set(history.columns)
    assert history.best_epoch is not None
    drift = model.measurements["feature_drift"]
    assert drift == call["result"].feature_drift and drift > 0
