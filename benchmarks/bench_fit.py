"""How much does `transferkit.training.loop.fit` cost over a hand-written PyTorch loop?

    .venv/bin/python benchmarks/bench_fit.py [--device cpu|cuda] [--repeats 5]

Three ways of training the same MLP on the same digits for the same epochs,
measured in this run, interleaved, the median of several repeats each:

* ``plain``      — the loop a PyTorch tutorial writes: in-memory tensors,
                   randperm, slice, forward, backward, step (the baseline);
* ``plain-fused``— the same loop with ``torch.optim.Adam(..., fused=True)``, the
                   optimizer `fit` builds for ``"adam"`` (`fused_optimizer`): the
                   loop's own cost is ``fit`` against this one;
* ``dataloader`` — the same with ``torch.utils.data.DataLoader`` batching;
* ``fit``        — ``transferkit.training.loop.fit`` (progress bar off, validation
                   each epoch, best-weight tracking on).

Target: ``fit`` within 1.25× of ``plain`` (its extras — a validation pass and
keeping the best weights — are real work, not free). The ratios are printed;
nothing fails, since timings belong here, not in unit tests.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.foundations.device import pick_device, seed_everything
from transferkit.training.loop import fit

TARGET = 1.25


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(runs: Mapping[str, Callable[[], object]], repeats: int, device: torch.device,
                setup: Callable[[str], object] = lambda name: seed_everything(0),
                ) -> dict[str, list[float]]:
    """Seconds of each run, ``repeats`` times, interleaved (A, B, C, A, B, C …) so that
    drift in the machine's speed hits every run alike. ``setup(name)`` runs before each
    run, untimed (by default it seeds everything with 0)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            setup(name)
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def warmed_up(groups: list[Mapping[str, Callable[[], object]]], repeats: int,
              device: torch.device, setup: Callable[[str], object]) -> list[dict[str, list[float]]]:
    """Run every run once untimed (first-call costs: allocator, kernels, imports, cuDNN
    plans), then time each group of runs with `interleaved`."""
    for runs in groups:
        interleaved(runs, 1, device, setup)
    return [interleaved(runs, repeats, device, setup) for runs in groups]


def plain(train, val, epochs, batch, device, fused=False) -> None:
    net = model().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    x, y = train.x.to(device), train.y.to(device)
    xv, yv = val.x.to(device), val.y.to(device)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            nn.functional.cross_entropy(net(xv), yv).item()


def dataloader(train, val, epochs, batch, device) -> None:
    net = model().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train.x, train.y),
                                         batch_size=batch, shuffle=True)
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(net(xb.to(device)), yb.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            nn.functional.cross_entropy(net(val.x.to(device)), val.y.to(device)).item()


def with_fit(train, val, epochs, batch, device) -> None:
    fit(model(), train, val, epochs=epochs, batch_size=batch, lr=1e-3, device=device,
        progress=False)


def parse_arguments(doc: str) -> argparse.Namespace:
    """The options every benchmark takes (the first paragraph of ``doc`` is its help)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments(__doc__)
    device = pick_device(args.device)
    x, y = load_digits()
    train, val, _ = train_val_test_split(x, y, seed=0)
    runs = {"plain": plain, "plain-fused": functools.partial(plain, fused=True),
            "dataloader": dataloader, "fit": with_fit}
    for fn in runs.values():  # warm-up: first-call costs (allocator, kernels, imports)
        fn(train, val, 1, args.batch_size, device)
    times = interleaved({name: functools.partial(fn, train, val, args.epochs, args.batch_size,
                                                 device) for name, fn in runs.items()},
                        args.repeats, device)

    base = statistics.median(times["plain"])
    steps = args.epochs * -(-len(train) // args.batch_size)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"epochs={args.epochs} batch={args.batch_size} steps={steps} repeats={args.repeats}")
    print(f"{'loop':<12} {'median s':>9} {'min s':>7} {'max s':>7} {'ms/step':>8} {'vs plain':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<12} {median:9.3f} {min(values):7.3f} {max(values):7.3f} "
              f"{1e3 * median / steps:8.3f} {median / base:8.2f}x")
    ratio = statistics.median(times["fit"]) / base
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"fit / plain = {ratio:.2f}x ({verdict} the {TARGET}x target); fit / plain-fused = "
          f"{statistics.median(times['fit']) / statistics.median(times['plain-fused']):.2f}x "
          "(the same optimizer: the loop's own cost)")


if __name__ == "__main__":
    main()
