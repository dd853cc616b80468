"""What do `fit` and feature caching cost or save on a torchvision CNN (ResNet-18)?

    .venv/bin/python benchmarks/bench_cnn.py [--device cpu|cuda] [--repeats 3] [--epochs 1]
                                             [--size 8] [--batch-size 64]

The model: ``transferkit.vision.backbones.backbone("resnet18", num_classes=10,
small_images=True, in_channels=1)`` (11.2 M weights; the small-image stem of
lesson 05), freshly initialised with seed 0: the time of a step does not depend on
what the weights are. The data: the digits' training split (1,077 images) at
``--size`` pixels (8 is their own size; 32, CIFAR's, upsamples them bilinearly and
gives a GPU enough work per step).

(a) **`fit` against a hand-written PyTorch loop**, every layer trainable: the same
    model, data, Adam (lr 1e-3), batch size, epochs and shuffling (a
    `torch.Generator` seeded with 0), no validation. On CUDA both use the same mixed
    precision (`fit`'s default: autocast to bfloat16 where the GPU supports it, else
    float16 with a gradient scaler); on the CPU both run in float32. Target: ``fit``
    within 1.05× of the plain loop.
(b) **A linear probe on the frozen ResNet-18 with and without cached features**
    (``fine_tune(..., strategy="linear_probe", cache=True/False)``, as in lesson 05):
    with the cache the backbone runs once over the images and the head trains on
    the stored features; without it the backbone runs in every epoch. The cache is
    emptied before every repeat, so the cached time includes computing the features
    once and hashing the weights and images for the cache key.

Every variant is timed in the same run, interleaved, after a warm-up; the table
shows medians of ``--repeats`` repeats. Nothing fails: timings belong here, not in
unit tests.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from bench_finetune import plain_loop, table
from bench_fit import warmed_up
from torch import nn

from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.foundations.device import pick_device, seed_everything
from transferkit.methods.finetune import clear_feature_cache, fine_tune
from transferkit.surgery.heads import replace_head
from transferkit.training.loop import fit
from transferkit.vision.backbones import backbone

TARGET = 1.05


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=8, help="image size in pixels (8 or more)")
    return parser.parse_args()


def resnet(device: torch.device) -> nn.Module:
    seed_everything(0)
    return backbone("resnet18", num_classes=10, small_images=True, in_channels=1).to(device)


def main() -> None:
    args = parse_arguments()
    device = pick_device(args.device)
    amp = device.type == "cuda"
    digits = load_digits(images=True)
    train = train_val_test_split(digits.x, digits.y, seed=0).train
    x = train.x
    if args.size != x.shape[-1]:
        x = F.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False)
    x, y = x.to(device), train.y.to(device)
    models: dict[str, nn.Module] = {}

    def setup(name: str) -> None:  # untimed: a fresh model, an empty cache, the same seed
        clear_feature_cache()
        models[name] = resnet(device)
        if name.startswith("probe"):
            replace_head(models[name], 10)

    loops = {
        "plain PyTorch loop": lambda: plain_loop(models["plain PyTorch loop"], x, y, args.epochs,
                                                 args.batch_size, amp),
        "fit": lambda: fit(models["fit"], (x, y), epochs=args.epochs, lr=1e-3,
                           batch_size=args.batch_size, seed=0, progress=False, device=device),
    }

    def probe(name: str, cache: bool):
        return lambda: fine_tune(models[name], (x, y), strategy="linear_probe", cache=cache,
                                 epochs=5 * args.epochs, batch_size=args.batch_size, seed=0,
                                 progress=False, device=device)

    probes = {"probe, cached features": probe("probe, cached features", True),
              "probe, backbone every epoch": probe("probe, backbone every epoch", False)}
    loop_times, probe_times = warmed_up([loops, probes], args.repeats, device, setup)

    steps = args.epochs * -(-len(x) // args.batch_size)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"model=resnet18 (small-image stem) images={len(x)}x1x{args.size}x{args.size} "
          f"amp={amp} epochs={args.epochs} batch={args.batch_size} steps={steps} "
          f"repeats={args.repeats}")
    table("(a) training every layer", loop_times, "plain PyTorch loop")
    ratios = [f / p for f, p in zip(loop_times["fit"], loop_times["plain PyTorch loop"],
                                    strict=True)]
    ratio = statistics.median(ratios)
    verdict = "within" if ratio <= TARGET else "ABOVE"
    print(f"  fit / plain loop: {ratio:.2f}x (median of per-repeat ratios; {verdict} the "
          f"{TARGET:.2f}x target)")
    table(f"(b) linear probe on the frozen ResNet-18, {5 * args.epochs} epochs", probe_times,
          "probe, cached features")
    speedup = (statistics.median(probe_times["probe, backbone every epoch"])
               / statistics.median(probe_times["probe, cached features"]))
    print(f"  cached features: {speedup:.1f}x faster than running the backbone every epoch")


if __name__ == "__main__":
    main()
