"""What do feature caching and `fit` cost or save when fine-tuning?

    .venv/bin/python benchmarks/bench_finetune.py [--device cpu|cuda] [--repeats 5]

The model: `transferkit.surgery.heads.Classifier` (a new 10-class head) on an MLP encoder
64→512→512→256 (ReLU after each layer; 426k weights), trained on the digits'
training split (1,077 images) and measured on its validation split (360). The
encoder is freshly initialised with seed 0 rather than pre-trained: the time of a
step does not depend on what the weights are, and the benchmark stays self-contained.
It is large enough that running the encoder dominates a linear probe's epoch, yet
small enough that the whole benchmark runs in well under a minute on 2 CPU cores.

(a) **A linear probe with and without cached features.** ``fine_tune(model, train,
    val, strategy="linear_probe", cache=True/False)``: with the cache the frozen
    encoder runs once over the inputs (`extract_features`) and the head trains on the
    stored features; without it the encoder runs in every epoch, for every batch and
    every validation pass. The feature cache is emptied before every repeat, so the
    cached time includes computing the features once (and hashing the weights and
    inputs for the cache key). Both include the feature-drift measurement. The two
    heads are compared at the end: the cache must change the time, not the result.
    A cached epoch still costs what the head's own steps cost (fit's loop and Adam
    on one small layer), so the speed-up grows with the encoder's size and the epochs.
(b) **`fit` against a hand-written PyTorch loop** on the whole model (every layer
    trainable): the same model, data, Adam (lr 1e-3, one parameter group), batch
    size, epochs and shuffling (a `torch.Generator` seeded with 0), no validation;
    on CUDA both in `fit`'s mixed precision. ``fine_tune(strategy="full")`` is
    listed too: it is `fit` with the optimizer built by `param_groups` (two groups
    per layer group: weights, and biases without weight decay).

Every variant is timed in the same run, interleaved, after a warm-up; the table
shows medians of ``--repeats`` repeats, and fit / plain is the median of the
ratios of each repeat's fit run to the plain run just before it. Target: ``fit``
within 1.05× of the plain loop (without validation and best-weight tracking,
fit's extras are a shape check before training and summing the loss and correct
predictions per batch: about 15 µs a step on one CPU thread, against several ms
for the step). Nothing fails: timings belong here, not in unit tests.
"""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F
from bench_fit import parse_arguments, warmed_up
from torch import nn

from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.foundations.device import pick_device, seed_everything
from transferkit.methods.finetune import clear_feature_cache, fine_tune
from transferkit.surgery.heads import Classifier
from transferkit.training.loop import fit
from transferkit.training.precision import MixedPrecision

TARGET = 1.05
WIDTHS = (64, 512, 512, 256)


def encoder(device: torch.device) -> nn.Module:
    seed_everything(0)
    layers: list[nn.Module] = []
    for a, b in zip(WIDTHS, WIDTHS[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers).to(device)


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int,
               batch: int, amp: bool = False) -> None:
    """The loop a PyTorch tutorial writes: randperm, slice, forward, backward, step; with
    ``amp`` (CUDA), the tutorial's mixed precision in the dtype `fit` picks."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    precision = MixedPrecision(amp)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            with precision.autocast():
                loss = F.cross_entropy(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            precision.backward(loss, opt)
            precision.step(opt)


def table(title: str, times: dict[str, list[float]], base: str) -> None:
    reference = statistics.median(times[base])
    print(title)
    print(f"  {'run':<34} {'median s':>9} {'min s':>7} {'max s':>7} {'vs ' + base:>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<34} {median:9.3f} {min(values):7.3f} {max(values):7.3f} "
              f"{median / reference:15.2f}x")


def main() -> None:
    args = parse_arguments(__doc__)
    device = pick_device(args.device)
    splits = train_val_test_split(*load_digits(), seed=0)
    train, val = splits.train, splits.val
    x, y = train.x.to(device), train.y.to(device)
    backbone = encoder(device)
    models: dict[str, nn.Module] = {}

    def setup(name: str) -> None:  # untimed: a fresh model, an empty cache, the same seed
        clear_feature_cache()
        seed_everything(0)
        models[name] = Classifier(copy.deepcopy(backbone), 10)

    def probe(name: str, cache: bool):
        return lambda: fine_tune(models[name], train, val, strategy="linear_probe",
                                 cache=cache, epochs=args.epochs, batch_size=args.batch_size,
                                 seed=0, progress=False, device=device)

    probes = {"cached features": probe("cached features", True),
              "encoder run every epoch": probe("encoder run every epoch", False)}
    loops = {
        "plain PyTorch loop": lambda: plain_loop(models["plain PyTorch loop"], x, y,
                                                 args.epochs, args.batch_size,
                                                 amp=device.type == "cuda"),
        "fit": lambda: fit(models["fit"], (x, y), epochs=args.epochs, lr=1e-3,
                           batch_size=args.batch_size, seed=0, progress=False, device=device),
        "fine_tune(strategy='full')": lambda: fine_tune(
            models["fine_tune(strategy='full')"], (x, y), strategy="full",
            epochs=args.epochs, batch_size=args.batch_size, seed=0, progress=False,
            device=device),
    }
    probe_times, loop_times = warmed_up([probes, loops], args.repeats, device, setup)

    steps = args.epochs * -(-len(train) // args.batch_size)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"encoder={'-'.join(map(str, WIDTHS))} train={len(train)} val={len(val)} "
          f"epochs={args.epochs} batch={args.batch_size} steps={steps} repeats={args.repeats}")
    table("(a) linear probe (fine_tune, strategy='linear_probe')", probe_times,
          "cached features")
    speedup = (statistics.median(probe_times["encoder run every epoch"])
               / statistics.median(probe_times["cached features"]))
    print(f"  cached features: {speedup:.1f}x faster than running the encoder every epoch")
    heads = [models[name].head.weight.detach() for name in probes]
    gap = float((heads[0] - heads[1]).abs().max())
    print(f"  the two heads (same seed) differ by at most {gap:.2g} (the cache changes the time, "
          "not the result)")
    table("(b) the whole model trainable, no validation", loop_times, "plain PyTorch loop")
    # Each fit run against the plain run just before it: a pair shares the machine's
    # state, so the median of the pair ratios resists drift better than a ratio of medians.
    pairs = sorted(f / p for f, p in zip(loop_times["fit"], loop_times["plain PyTorch loop"],
                                         strict=True))
    ratio = statistics.median(pairs)
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"  fit / plain = {ratio:.2f}x, median of {len(pairs)} paired repeats (range "
          f"{pairs[0]:.2f}-{pairs[-1]:.2f}x; {verdict} the {TARGET}x target)")


if __name__ == "__main__":
    main()
