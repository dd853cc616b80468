"""transferkit.vision.backbones: backbones described by records, with random, cached or local-file
weights, offline; transferkit.surgery.small_images: their first layer for 8×8 images.

No test downloads anything: "pre-trained" weights are files the tests write themselves,
in the same format as torchvision's downloads.
"""

import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.methods.finetune import clear_feature_cache, extract_features
from transferkit.surgery.freezing import freeze
from transferkit.surgery.heads import find_head, replace_head, without_head
from transferkit.surgery.layer_groups import layer_groups
from transferkit.surgery.small_images import adapt_to_small_images
from transferkit.training.checkpoint import CheckpointError
from transferkit.vision.backbones import (
    BACKBONES,
    FAMILIES,
    Family,
    PretrainedWeights,
    WeightsUnavailableError,
    backbone,
    cached_weights_path,
    online,
    preprocess,
    pretrained_weights,
    save_backbone,
    weights_enum,
)

HEADS = {"resnet18": "fc", "resnet50": "fc", "mobilenet_v3_small": "classifier.3",
         "mobilenet_v3_large": "classifier.3", "efficientnet_b0": "classifier.1",
         "convnext_tiny": "classifier.2", "vgg16": "classifier.6", "vgg11_bn": "classifier.6",
         "densenet121": "classifier", "vit_b_16": "heads.head", "efficientnet_lite0": "classifier"}
CNNS = [name for name in FAMILIES if name != "vit_b_16"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, and an empty torch cache of our own."""
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def _images(name, n=2, size=64, channels=3):
    size = 224 if name == "vit_b_16" else size  # a ViT takes only the size it was built for
    return torch.rand(n, channels, size, size)


def test_families_cover_the_issue():
    assert {"resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
            "vit_b_16", "vgg16", "vgg11_bn", "densenet121", "efficientnet_lite0"} <= set(FAMILIES)
    assert set(HEADS) == set(FAMILIES) == set(BACKBONES)
    assert {name: BACKBONES[name].head for name in FAMILIES} == HEADS  # the records say it


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_builds_finds_its_head_and_takes_a_new_one(name):
    torch.manual_seed(0)
    model = backbone(name)  # weights=None: random, offline
    assert find_head(model) == HEADS[name]
    assert model.get_submodule(HEADS[name]).out_features == 1000
    new = replace_head(model, 7)
    assert model.get_submodule(HEADS[name]) is new
    model.eval()
    with torch.no_grad():
        assert model(_images(name)).shape == (2, 7)
    groups = layer_groups(model)  # the head is its own, last group; every parameter is grouped
    head_group = [m for _, top in groups[-1].modules for m in top.modules()]
    assert any(m is new for m in head_group)
    assert sum(p.numel() for g in groups for p in g.parameters()) == sum(
        p.numel() for p in model.parameters())
    assert backbone(name, num_classes=3).get_submodule(HEADS[name]).out_features == 3


@pytest.mark.parametrize("name", CNNS)
def test_small_image_adaptation_runs_8x8_grey_digits(name):
    model = backbone(name, num_classes=5, small_images=True, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 8, 8)).shape == (3, 5)
    info = model.backbone_info
    assert info.small_images and info.in_channels == 1
    assert info.changes and "stride=(1, 1)" in info.changes[0]
    assert isinstance(info.preprocess, nn.Identity)  # small inputs are used as they are


def test_unadapted_resnet_collapses_8x8_images_that_the_adapted_one_keeps():
    plain, small = backbone("resnet18").eval(), backbone("resnet18", small_images=True).eval()
    with torch.no_grad():  # after the stem: 8x8 -> 2x2 with the ImageNet stem, 8x8 kept
        assert plain.maxpool(plain.conv1(torch.rand(1, 3, 8, 8))).shape[-1] == 2
        assert small.maxpool(small.conv1(torch.rand(1, 3, 8, 8))).shape[-1] == 8


def test_vit_refuses_small_image_adaptation_with_the_fix():
    with pytest.raises(ValueError, match="Resize the images to 224"):
        backbone("vit_b_16", small_images=True)


def test_adapt_refuses_an_unknown_network():
    with pytest.raises(TypeError, match="by hand"):
        adapt_to_small_images(nn.Sequential(nn.Conv2d(3, 8, 3)))


def _cache_imagenet_weights(name="resnet18", seed=2):
    """Write random weights where torch keeps downloaded ImageNet weights (an offline stand-in)."""
    torch.manual_seed(seed)
    reference = backbone(name)
    cached = cached_weights_path(weights_enum(name, "DEFAULT"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), cached)
    return reference, cached


def test_one_channel_stem_keeps_pretrained_filters_for_grey_images(offline):
    _cache_imagenet_weights()
    rgb = backbone("resnet18", weights="DEFAULT").eval()
    grey = backbone("resnet18", weights="DEFAULT", in_channels=1).eval()
    assert "RGB filters summed" in grey.backbone_info.changes[0]
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():  # a grey image is R = G = B, so summing the RGB filters is exact
        assert torch.allclose(grey(image), rgb(image.expand(-1, 3, -1, -1)), atol=1e-4)


# --- families and weights as records -------------------------------------------------------


def _toy_family(loads):
    """A family of our own, with one set of installed weights: only records, no branch."""
    def build(num_classes):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))

    def load(progress):
        loads.append(progress)
        model = build(3)
        nn.init.constant_(model[3].bias, 1.0)
        return model

    weights = PretrainedWeights(name="toy weights (toy.pt)", file="toy/toy.pt", sha256=None,
                                load=load, transforms=lambda: nn.Identity(), mean=(0.5,) * 3,
                                std=(0.25,) * 3, categories=lambda: ["a", "b", "c"])
    return Family("toy", build, "3", installed={"DEFAULT": weights})


def test_a_family_is_a_record_that_backbone_reads(monkeypatch):
    """A new family needs a record and nothing else: its network, head, weights, transform,
    pixel scaling and class names all come from it."""
    import transferkit.vision.backbones as models

    loads = []
    monkeypatch.setitem(models.BACKBONES, "toy", _toy_family(loads))
    monkeypatch.setattr(models, "FAMILIES", (*FAMILIES, "toy"))
    model = backbone("toy", weights="DEFAULT", progress=False)
    assert loads == [False] and torch.equal(model[3].bias, torch.ones(3))
    info = model.backbone_info
    assert info.weights == "toy weights (toy.pt)" and info.categories == ["a", "b", "c"]
    assert isinstance(info.preprocess, nn.Identity)
    assert torch.allclose(info.normalise(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))
    assert backbone("toy", weights="DEFAULT", num_classes=5)[3].out_features == 5  # head "3"
    random = backbone("toy").backbone_info  # random weights, the default weights' transform
    assert random.weights is None and random.categories is None and len(loads) == 2
    assert isinstance(random.preprocess, nn.Identity) and random.normalise is not None
    with pytest.raises(ValueError, match="toy takes weights='DEFAULT'"):
        backbone("toy", weights="IMAGENET1K_V1")


def test_torchvision_weights_become_the_same_records():
    record = pretrained_weights("resnet18", "IMAGENET1K_V1")
    assert record.name == "ResNet18_Weights.IMAGENET1K_V1"
    assert record.file == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert len(record.categories()) == 1000 and record.categories()[0] == "tench"
    assert record.mean == [0.485, 0.456, 0.406] and record.std == [0.229, 0.224, 0.225]
    images = torch.rand(2, 3, 5, 5)
    mean, std = torch.tensor(record.mean)[:, None, None], torch.tensor(record.std)[:, None, None]
    assert torch.equal(record.normalise(images), (images - mean) / std)
    assert repr(record.transforms()) == repr(preprocess("resnet18"))
    assert pretrained_weights("resnet50").name == "ResNet50_Weights.IMAGENET1K_V2"  # DEFAULT


# --- weights from files -------------------------------------------------------------------


def test_local_file_round_trip_rebuilds_the_same_network(tmp_path):
    torch.manual_seed(0)
    source = backbone("resnet18", num_classes=5, small_images=True, in_channels=1)
    path = save_backbone(source, tmp_path / "source.pt")
    loaded = backbone("resnet18", weights=path)  # the file says: small images, 1 channel, 5 classes
    assert loaded.backbone_info.small_images and loaded.backbone_info.in_channels == 1
    assert loaded.backbone_info.weights == str(path)
    for (key, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(),
                                strict=True):
        assert torch.equal(a, b), key
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), loaded.eval()(x))


def test_local_file_with_a_new_head_keeps_the_body(tmp_path):
    torch.manual_seed(0)
    source = backbone("mobilenet_v3_small", num_classes=5, small_images=True, in_channels=1)
    path = save_backbone(source, tmp_path / "source.pt")
    target = backbone("mobilenet_v3_small", weights=str(path), num_classes=3)
    assert target.classifier[3].out_features == 3
    assert torch.equal(target.features[0][0].weight, source.features[0][0].weight)
    assert torch.equal(target.classifier[0].weight, source.classifier[0].weight)


def test_save_backbone_never_overwrites(tmp_path):
    model = backbone("resnet18", num_classes=2, small_images=True)
    path = save_backbone(model, tmp_path / "m.pt")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_backbone(backbone("resnet18", num_classes=2, small_images=True), path)
    assert path.read_bytes() == before


def test_save_backbone_refuses_a_model_it_cannot_rebuild(tmp_path):
    with pytest.raises(ValueError, match="save_checkpoint"):
        save_backbone(nn.Linear(2, 2), tmp_path / "m.pt")


def test_a_file_of_another_family_is_refused(tmp_path):
    path = save_backbone(backbone("resnet18", num_classes=2), tmp_path / "r.pt")
    with pytest.raises(ValueError, match="call backbone\\('resnet18'"):
        backbone("resnet50", weights=path)


def test_plain_imagenet_state_dict_file_loads_then_adapts(tmp_path):
    """A file like torchvision's download (a bare state dict): loaded into the ImageNet
    network first; the small-image stem is then new, everything else is the file's."""
    torch.manual_seed(1)
    imagenet = backbone("resnet18")
    torch.save(imagenet.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    model = backbone("resnet18", weights=tmp_path / "resnet18-f37072fd.pth", small_images=True,
                     in_channels=1, num_classes=5)
    assert torch.equal(model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert model.conv1.weight.shape == (64, 1, 3, 3) and model.fc.out_features == 5


def test_corrupt_or_missing_file_gives_a_clear_error(tmp_path):
    path = save_backbone(backbone("resnet18", num_classes=2), tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        backbone("resnet18", weights=path)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        backbone("resnet18", weights=tmp_path / "absent.pt")


def test_a_file_that_does_not_fit_names_the_keys(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(backbone("resnet18", small_images=True).state_dict(), path)  # no options stored
    with pytest.raises(CheckpointError, match="conv1.weight"):
        backbone("resnet18", weights=path)


# --- downloadable weights, offline ---------------------------------------------------------


def test_offline_request_for_download_fails_fast_and_says_how_to_supply_a_file(offline):
    with pytest.raises(WeightsUnavailableError) as caught:
        backbone("resnet18", weights="DEFAULT")
    message = str(caught.value)
    assert "resnet18-f37072fd.pth" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(offline / "torch-home") in message  # where to put the file
    assert "weights='path/to/" in message and "weights=None" in message


def test_cached_weights_are_used_offline(offline):
    """Weights already in torch's cache load without any network."""
    reference, cached = _cache_imagenet_weights()
    assert str(offline) in str(cached)
    model = backbone("resnet18", weights="IMAGENET1K_V1", num_classes=10)
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert model.fc.out_features == 10
    assert model.backbone_info.weights == "ResNet18_Weights.IMAGENET1K_V1"
    transform = model.backbone_info.preprocess  # the weights' own: resize, crop 224, normalise
    assert transform(torch.rand(3, 300, 260)).shape == (3, 224, 224)


def test_a_corrupt_cached_file_is_named_with_the_fix(offline):
    _, cached = _cache_imagenet_weights()
    cached.write_bytes(cached.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="Delete it and call backbone again"):
        backbone("resnet18", weights="DEFAULT")


class _Marker:
    """Unpickling this writes a file: the stand-in for code a pickled file could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


def test_a_cached_weights_file_holding_pickled_code_is_refused_unrun(offline):
    """torchvision reads torch's cache with weights_only=False: backbone reads it safely first."""
    _, cached = _cache_imagenet_weights()
    marker = offline / "ran.txt"
    torch.save({"fc.weight": torch.zeros(2), "payload": _Marker(marker)}, cached)
    with pytest.raises(CheckpointError, match=r"(?s)cannot be read safely.*holds a Python "
                       r"object.*could run code.*Delete it and call backbone again"):
        backbone("resnet18", weights="DEFAULT")
    assert not marker.exists(), "the pickled code ran"


def test_a_saved_description_is_checked_against_its_weights_before_building(tmp_path,
                                                                              monkeypatch):
    """A save_backbone file whose options ask for another stem than its weights hold is
    refused before that stem is built (with in_channels=10**6 it would take 2.3 GB): what
    the file describes is built on the meta device and compared first."""
    torch.manual_seed(0)
    path = save_backbone(backbone("resnet18", num_classes=2, small_images=True, in_channels=1),
                         tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"]["backbone"]["in_channels"] = 10**4
    torch.save(ckpt, path)
    built = []
    real_init = nn.Conv2d.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append((self.in_channels, self.weight.device.type))

    monkeypatch.setattr(nn.Conv2d, "__init__", spy)
    with pytest.raises(CheckpointError, match=r"conv1.weight: file has shape \(64, 1, 3, 3\), "
                       r"model has \(64, 10000, 3, 3\)"):
        backbone("resnet18", weights=path)
    assert (10**4, "meta") in built and (10**4, "cpu") not in built, built


def test_online_asks_the_network_unless_told_it_is_offline(monkeypatch):
    import contextlib

    monkeypatch.delenv("TRANSFERKIT_OFFLINE", raising=False)
    calls = []

    def connect(address, timeout):
        calls.append(address)
        return contextlib.nullcontext()

    monkeypatch.setattr(socket, "create_connection", connect)
    assert online() is True and calls == [("download.pytorch.org", 443)]
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")  # reachable, but we said offline
    assert online() is False and len(calls) == 1

    def refuse(address, timeout):
        raise OSError("no route to host")

    monkeypatch.delenv("TRANSFERKIT_OFFLINE")
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert online() is False


def test_a_failed_download_gives_the_same_clear_error(offline, monkeypatch):
    import transferkit.vision.backbones as models

    monkeypatch.setattr(models, "online", lambda *a, **k: True)

    def broken(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", broken)
    with pytest.raises(WeightsUnavailableError, match="the download failed"):
        backbone("mobilenet_v3_small", weights="DEFAULT")


def test_unknown_names_and_weights_are_explained():
    with pytest.raises(ValueError, match="choose one of resnet18"):
        backbone("resnet19")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        backbone("resnet18", weights="IMAGENET9K")
    with pytest.raises(ValueError, match="pretrained=True is now weights='DEFAULT'"):
        backbone("resnet18", weights=True)
    from torchvision.models import ResNet50_Weights

    with pytest.raises(ValueError, match="another network"):
        backbone("resnet18", weights=ResNet50_Weights.DEFAULT)


# --- frozen backbones and the feature cache ------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny"])
def test_cached_features_equal_the_backbone_output(name):
    clear_feature_cache()
    torch.manual_seed(0)
    model = backbone(name, num_classes=4, small_images=True, in_channels=1)
    freeze(model, bn="freeze")
    x = torch.rand(6, 1, 8, 8)
    with without_head(model):
        features = extract_features(model, x)
        again = extract_features(model, x)  # from the cache
        with torch.no_grad():
            direct = model.eval()(x)
    assert features.shape == (6, model.get_submodule(find_head(model)).in_features)
    assert torch.allclose(features, direct, atol=1e-6)
    assert torch.equal(again, features)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # changed weights are computed afresh
    with without_head(model):
        assert not torch.allclose(extract_features(model, x), features)


def test_small_cnn_has_four_conv_groups_below_its_head():
    from transferkit.vision.backbones import small_cnn

    net = small_cnn(5, width=8)
    assert [g.name for g in layer_groups(net)] == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert find_head(net) == "head.2" and net.head[2].out_features == 5
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 5)
    assert net.conv4[0].out_channels == 4 * 8


# --- VGG and DenseNet ----------------------------------------------------------------------


def test_vgg_small_images_drops_two_max_pools_and_keeps_its_first_conv():
    model = backbone("vgg11_bn", num_classes=4, small_images=True).eval()
    changes = model.backbone_info.changes
    assert "kept (already 3×3 with stride 1)" in changes[0]
    assert "features.3, features.7" in changes[1] and "avgpool" in changes[2]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # five in ImageNet's VGG
    with torch.no_grad():
        assert model.features(torch.rand(2, 3, 8, 8)).shape == (2, 512, 1, 1)
        assert model(torch.rand(2, 3, 8, 8)).shape == (2, 4)


def test_densenet_small_images_gets_a_stride_1_stem_without_max_pool():
    model = backbone("densenet121", num_classes=4, small_images=True, in_channels=1).eval()
    assert model.features.conv0.stride == (1, 1) and model.features.conv0.in_channels == 1
    assert isinstance(model.features.pool0, nn.Identity)
    assert "features.pool0" in model.backbone_info.changes[1]
    with torch.no_grad():  # 8 -> 8 (stem) -> 4 -> 2 -> 1 (three transitions)
        assert model.features(torch.rand(2, 1, 8, 8)).shape[-2:] == (1, 1)


@pytest.mark.parametrize("name", ["densenet121", "vgg11_bn"])
def test_cached_imagenet_weights_load_offline_for_vgg_and_densenet(offline, name):
    torch.manual_seed(3)
    reference = backbone(name)
    cached = cached_weights_path(weights_enum(name, "DEFAULT"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v  # half: a smaller file to write
                for k, v in reference.state_dict().items()}, cached)
    model = backbone(name, weights="DEFAULT", num_classes=3)
    last_conv = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)][-1]
    ref_conv = [m for m in reference.features.modules() if isinstance(m, nn.Conv2d)][-1]
    assert torch.equal(last_conv.weight, ref_conv.weight.half().float())
    assert model.get_submodule(HEADS[name]).out_features == 3
    assert model.backbone_info.categories is None  # a new head has no ImageNet names
    cached.unlink()
    with pytest.raises(WeightsUnavailableError, match=cached.name):
        backbone(name, weights="DEFAULT")


@pytest.mark.parametrize("name", ["vgg11_bn", "densenet121", "efficientnet_lite0"])
def test_every_strategy_fine_tunes_vgg_densenet_and_lite0_on_tiny_images(name):
    from transferkit.methods.finetune import fine_tune
    from transferkit.methods.strategies import STRATEGIES

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 2
    model = backbone(name, num_classes=2, small_images=True, in_channels=1)
    for strategy in STRATEGIES:  # plain SGD, no validation: these networks are big for a test
        result = fine_tune(model, (x, y), strategy=strategy, epochs=1, batch_size=8, k=2,
                           optimizer="sgd", seed=0, progress=False)
        assert result.stages and result.strategy == strategy
        assert all(len(stage.history.rows) == 1 for stage in result.stages), strategy
    with torch.no_grad():
        assert model.eval()(x).shape == (8, 2)
