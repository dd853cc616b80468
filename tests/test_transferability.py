"""transferkit.vision.transfer_studies: the layer-copying experiment (Yosinski et al. 2014), and
ImageNet features against pixels on the digits (EfficientNet-Lite0's installed weights)."""

import pytest
import torch
from torch import nn

from transferkit.foundations.verdicts import compare_methods
from transferkit.surgery.freezing import bn_stats_frozen
from transferkit.training.loop import fit
from transferkit.vision.backbones import backbone
from transferkit.vision.transfer_studies import (
    BASELINE,
    copy_first_groups,
    digit_photos,
    features_vs_pixels,
    frozen_features,
    max_depth,
    parse_method,
    study_methods,
    summarise_transfer,
    transfer_method,
    transferability_study,
)


def test_copy_first_groups_copies_weights_and_statistics_and_freezes_them(tiny_cnn):
    torch.manual_seed(0)
    source, target = tiny_cnn(), tiny_cnn()
    fit(source, (torch.rand(64, 1, 8, 8), torch.randint(0, 5, (64,))), epochs=1,
        progress=False)  # moves the BatchNorm statistics away from their initial values
    assert max_depth(source) == 2
    copy_first_groups(source, target, 1, frozen=True)
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[1].running_mean, source[1].running_mean)
    assert not torch.equal(target[3].weight, source[3].weight)  # group 2 was not copied
    assert not target[0].weight.requires_grad and bn_stats_frozen(target[1])
    assert target[3].weight.requires_grad and target[7].weight.requires_grad


def test_fine_tuned_copy_stays_trainable(tiny_cnn):
    source, target = tiny_cnn(), tiny_cnn()
    copy_first_groups(source, target, 2, frozen=False)
    assert torch.equal(target[3].weight, source[3].weight)
    assert all(p.requires_grad for p in target.parameters())
    assert not bn_stats_frozen(target[1])


def test_copy_refuses_other_shapes_and_depths(tiny_cnn):
    other = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 5))
    with pytest.raises(ValueError, match="same layers below the head"):
        copy_first_groups(tiny_cnn(), other, 1, frozen=True)
    with pytest.raises(ValueError, match="from 0 to 2"):
        copy_first_groups(tiny_cnn(), tiny_cnn(), 3, frozen=True)


def test_frozen_copied_layers_do_not_move_while_the_rest_trains(digit_tasks, tiny_cnn):
    _, target = digit_tasks
    torch.manual_seed(0)
    source = tiny_cnn()
    method = transfer_method(source, tiny_cnn, 1, "frozen", steps=10, lr=1e-2)
    model = method(target.train, target.val, 0)
    assert torch.equal(model[0].weight, source[0].weight)
    assert torch.equal(model[1].running_mean, source[1].running_mean)
    assert not torch.equal(model[3].weight, tiny_cnn()[3].weight)
    fine = transfer_method(source, tiny_cnn, 1, "fine-tuned", steps=10, lr=1e-2)(
        target.train, target.val, 0)
    assert not torch.equal(fine[0].weight, source[0].weight)


def test_a_make_model_that_returns_the_source_is_refused(digit_tasks, tiny_cnn):
    _, target = digit_tasks
    source = tiny_cnn()
    before = source[0].weight.clone()
    with pytest.raises(ValueError, match="shares weights with the source"):
        transfer_method(source, lambda: source, 1, "fine-tuned", steps=5)(target.train, None, 0)
    assert torch.equal(source[0].weight, before)


def test_methods_and_names(tiny_cnn):
    methods = study_methods(tiny_cnn(), tiny_cnn)
    assert list(methods) == [BASELINE, "frozen 1", "fine-tuned 1", "frozen 2", "fine-tuned 2"]
    assert parse_method("fine-tuned 2") == ("fine-tuned", 2)
    assert parse_method(BASELINE) == (BASELINE, 0)
    with pytest.raises(ValueError, match="not a transferability method"):
        parse_method("frozen")
    with pytest.raises(ValueError, match="mode must be one of"):
        transfer_method(tiny_cnn(), tiny_cnn, 1, "thawed")


def test_study_rows_and_summary(digit_tasks, tiny_cnn):
    source_task, target = digit_tasks
    torch.manual_seed(0)
    source = tiny_cnn()
    fit(source, source_task.train, epochs=5, lr=1e-2, progress=False)
    rows = transferability_study(source, tiny_cnn, target, depths=[2], budgets=(5,),
                                 seeds=(0, 1), steps=20, lr=1e-2, progress=False)
    assert {(r["mode"], r["n"]) for r in rows} == {(BASELINE, 0), ("frozen", 2),
                                                   ("fine-tuned", 2)}
    assert len(rows) == 3 * 2
    summary = summarise_transfer(rows)
    assert len(summary) == 3 and all(s["n_seeds"] == 2 for s in summary)
    for s in summary:
        values = [r["test_accuracy"] for r in rows if r["method"] == (
            BASELINE if s["mode"] == BASELINE else f"{s['mode']} {s['n']}")]
        assert s["mean"] == pytest.approx(sum(values) / 2)
    with pytest.raises(ValueError, match="no rows"):
        summarise_transfer([])


# --- ImageNet features on the digits -------------------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    return backbone("efficientnet_lite0", weights="DEFAULT")  # installed: no download


def test_digit_photos_are_dark_ink_on_light_paper_in_rgb():
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 3:5, :] = 1.0  # a bright stroke on black, as load_digits gives
    photos = digit_photos(x, size=32)
    assert photos.shape == (2, 3, 32, 32)
    assert photos[0, 0, 0, 0] == 1.0 and photos[0, 0, 16, 16] < 0.1  # paper light, ink dark
    assert torch.equal(photos[:, 0], photos[:, 2])
    with pytest.raises(ValueError, match="grey images"):
        digit_photos(torch.rand(2, 8, 8))


def test_features_vs_pixels_measures_both_on_the_same_draws(lite0):
    from transferkit.foundations.data import load_digits, train_val_test_split

    digits = load_digits(images=True)
    keep = torch.arange(0, len(digits.y), 12)  # 150 digits: a quick run
    splits = train_val_test_split(digits.x[keep], digits.y[keep], seed=0)
    rows = features_vs_pixels(lite0, splits, budgets=(2,), seeds=(0, 1), size=32)
    assert sorted({r["method"] for r in rows}) == ["ImageNet features, 32 px",
                                                   "logistic regression (pixels)"]
    assert len(rows) == 4 and all(0 <= r["test_accuracy"] <= 1 for r in rows)
    # the same test digits, as pixels and as features: comparable image by image
    assert len({r["test_fingerprint"] for r in rows}) == 1
    [record] = compare_methods(rows, "ImageNet features, 32 px", "logistic regression (pixels)")
    assert record["source"] == "seeds and items"
    assert frozen_features(lite0, digit_photos(splits.test.x[:3], 32)).shape == (3, 1280)


def test_frozen_features_scale_pixels_as_the_weights_expect(lite0):
    """The record's scaling alone: TF-Lite's (pixel − 127) / 128 on 0–255 values."""
    images = digit_photos(torch.rand(3, 1, 8, 8), 32)
    expected = frozen_features(lite0, (images * 255 - 127) / 128, normalise=False)
    assert torch.equal(frozen_features(lite0, images), expected)
    assert not torch.allclose(frozen_features(lite0, images, normalise=False), expected)


def test_frozen_features_refuse_a_small_image_network_whose_scaling_is_unknown():
    model = backbone("resnet18", small_images=True)  # its inputs are used as they are
    with pytest.raises(ValueError, match="cannot tell how Identity scales pixels.*normalise=False"):
        frozen_features(model, torch.rand(2, 3, 8, 8))
    assert frozen_features(model, torch.rand(2, 3, 8, 8), normalise=False).shape == (2, 512)
