"""Make an ImageNet network fit small images (8×8 to 32×32): a new first layer.

ImageNet networks shrink their input 32 times (ResNet: a stride-2 7×7
convolution, then a stride-2 max pool, then three stride-2 stages), so an 8×8
digit would be less than a pixel by the second layer. `adapt_to_small_images`
makes the change explicit, family by family: the first convolution becomes a
3×3 convolution with stride 1 and ResNet's max pool is removed; ``in_channels``
sets the number of input channels (1 for grey images). The new first layer
starts untrained, even with pre-trained weights; everything after it keeps its
weights. ViT cannot be adapted this way (its position embeddings are made for
14×14 patches of 16×16 pixels): resize small images to 224 pixels instead.

`set_in_channels` keeps the first layer but changes how many channels it takes
(for one grey channel its RGB filters are summed, which is exact: grey is
R = G = B). `transferkit.vision.backbones.backbone` calls both (``small_images=True``,
``in_channels=1``).

>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
>>> set_in_channels(net, 1)[0].endswith("(RGB filters summed)"), net[0].weight.shape
(True, torch.Size([4, 1, 3, 3]))
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.surgery.heads import set_submodule


def _stem_conv(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, old.out_channels, kernel_size=3, stride=1, padding=1,
                    bias=old.bias is not None)
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


def adapt_to_small_images(model: nn.Module, in_channels: int = 3) -> list[str]:
    """Make an ImageNet network fit small images (8×8 to 32×32); returns what changed.

    * ResNet: ``conv1`` (7×7, stride 2) becomes a 3×3 convolution with stride 1
      and the max pool is removed, as ResNets for CIFAR do.
    * DenseNet: the same for its stem, ``features.conv0`` and ``features.pool0``.
    * MobileNetV3, EfficientNet (torchvision's and timm's Lite0) and ConvNeXt:
      the first convolution (stride 2, or ConvNeXt's 4×4 "patchify" with
      stride 4) becomes a 3×3 convolution with stride 1.
    * VGG: its first convolution is already 3×3 with stride 1 and is kept (for
      ``in_channels=1`` its RGB filters are summed); of its five 2×2 max pools,
      the first two are removed, so an 8×8 image ends as 1×1 after the last
      three (8 → 4 → 2 → 1); its ``avgpool`` repeats that 1×1 map to the 7×7
      its pre-trained classifier was made for.

    A new first layer takes ``in_channels`` channels and is untrained. ViT is
    refused (resize the images to 224 instead).
    """
    from torchvision.models import (  # heavy; only to tell the families apart
        VGG,
        ConvNeXt,
        DenseNet,
        EfficientNet,
        MobileNetV3,
        ResNet,
        VisionTransformer,
    )

    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}.")
    if isinstance(model, VisionTransformer):
        raise ValueError(
            "a ViT cannot be adapted to small images: it cuts the image into 16×16 patches "
            "and has a position embedding for each patch of a 224×224 image. Resize the "
            "images to 224×224 (model.preprocess does) or choose a CNN such as 'resnet18'."
        )
    if isinstance(model, ResNet):
        old = model.conv1
        model.conv1 = _stem_conv(old, in_channels)
        model.maxpool = nn.Identity()
        return [f"conv1: {old} -> {model.conv1} (untrained)", "maxpool: removed"]
    if isinstance(model, DenseNet):
        old = model.features.conv0
        model.features.conv0 = _stem_conv(old, in_channels)
        model.features.pool0 = nn.Identity()
        return [f"features.conv0: {old} -> {model.features.conv0} (untrained)",
                "features.pool0: MaxPool2d(3, stride 2) removed"]
    if isinstance(model, VGG):
        if in_channels == 3:
            changes = [f"features.0: {model.features[0]} kept (already 3×3 with stride 1)"]
        else:
            changes = set_in_channels(model, in_channels)
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        for i in pools[:2]:
            model.features[i] = nn.Identity()
        return [*changes, f"features.{pools[0]}, features.{pools[1]}: the first two of the "
                "five 2×2 max pools removed (8×8 -> 1×1 after the other three)",
                f"avgpool: {model.avgpool} kept: it repeats a 1×1 map 49 times for the "
                "pre-trained classifier"]
    if isinstance(model, (MobileNetV3, EfficientNet, ConvNeXt)):
        old = model.features[0][0]
        model.features[0][0] = _stem_conv(old, in_channels)
        return [f"features.0.0: {old} -> {model.features[0][0]} (untrained)"]
    if type(model).__module__.startswith("timm.") and hasattr(model, "conv_stem"):
        old = model.conv_stem  # timm's EfficientNet(-Lite): a stride-2 "same"-padded conv
        model.conv_stem = _stem_conv(old, in_channels)
        return [f"conv_stem: {old} -> {model.conv_stem} (untrained)"]
    raise TypeError(f"adapt_to_small_images knows ResNet, DenseNet, VGG, MobileNetV3, "
                    f"EfficientNet and ConvNeXt, not {type(model).__name__}; change its first "
                    "layer by hand.")


def set_in_channels(model: nn.Module, in_channels: int) -> list[str]:
    """Keep the stem but take ``in_channels`` channels: its pre-trained filters are
    summed over RGB for 1 channel (a grey image is R = G = B), else it is rebuilt."""
    name = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    old = model.get_submodule(name)
    # the same class (timm's "same"-padded Conv2dSame stays one), other input channels
    new = type(old)(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    old.dilation, old.groups, old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    set_submodule(model, name, new)
    kept = "RGB filters summed" if in_channels == 1 else "untrained"
    return [f"{name}: {old} -> {new} ({kept})"]


__all__ = ["adapt_to_small_images", "set_in_channels"]
