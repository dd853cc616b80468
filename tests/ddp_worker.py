"""Run by tests/test_distributed.py under ``torchrun``:
``python tests/ddp_worker.py OUT SCENARIO [SCENARIO …]``. Each process writes what
it ended with to ``OUT/SCENARIO-rank{r}.pt``, for the test to compare with the
one-process run of the same function."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from transferkit.course import cli
from transferkit.foundations import distributed
from transferkit.foundations.data import load_digits
from transferkit.foundations.device import seed_everything
from transferkit.foundations.distributed import current
from transferkit.methods.finetune import fine_tune
from transferkit.surgery.freezing import freeze
from transferkit.surgery.lora import add_lora
from transferkit.training.callbacks import Callback
from transferkit.training.checkpoint import save_checkpoint
from transferkit.training.loop import fit


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 10))


def cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 64, 10))


def digits(images: bool = False):
    d = load_digits(images=images)
    # 203 training examples in batches of 25: shards of 13 and 12, a last batch of 28
    return (d.x[:203], d.y[:203]), (d.x[203:304], d.y[203:304])


class StopAfter(Callback):
    """Counts the epochs it sees, and asks to stop after ``epochs``."""

    def __init__(self, epochs: int):
        self.epochs, self.seen = epochs, 0

    def on_epoch_end(self, state) -> None:
        self.seen += 1
        state.stop = self.seen >= self.epochs


def equal(out: Path) -> dict:
    """fit with a frozen first layer, then fine_tune's gradual unfreezing and lp_ft."""
    train, val = digits()
    seed_everything(0)
    model = mlp()
    freeze(model, "0")
    history = fit(model, train, val, epochs=3, optimizer="sgd", lr=0.1, batch_size=25,
                  seed=1, progress=False)
    seed_everything(0)
    gradual = mlp()
    result = fine_tune(gradual, train, val, strategy="gradual", epochs=1, lr=0.05,
                       batch_size=25, seed=2, progress=False)
    seed_everything(0)
    lp_ft = mlp()
    lp_result = fine_tune(lp_ft, train, val, strategy="lp_ft", epochs=1, lr=1e-3,
                          batch_size=25, seed=3, progress=False)
    save_checkpoint(out / "model.pt", model)
    stop = StopAfter(2)  # runs on process 0 only; its decision reaches every process
    stopped = fit(mlp(), train, epochs=5, batch_size=50, callbacks=[stop], progress=False)
    return {"fit": model.state_dict(), "rows": history.rows,
            "stopped": (len(stopped), stop.seen),
            "gradual": gradual.state_dict(), "gradual_rows": result.to_rows(),
            "lp_ft": lp_ft.state_dict(), "lp_ft_rows": lp_result.to_rows()}


def frozen_bn(out: Path) -> dict:
    """The first block frozen with its BatchNorm statistics (bn="freeze")."""
    train, val = digits(images=True)
    seed_everything(current().rank)  # different weights on purpose: process 0's must win
    model = cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fine_tune(model, train, val, strategy="partial", k=2, bn="freeze", epochs=2,
              batch_size=25, progress=False)
    return {"before": before, "after": model.state_dict()}


def fail(out: Path) -> dict:
    """Process 1 raises in its third mini-batch; the run must end with its error."""
    calls = []

    def boom(xb: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if current().rank == 1 and len(calls) == 3:
            raise RuntimeError("process 1 fails on purpose")
        return xb

    train, _ = digits()
    fit(mlp(), train, epochs=2, batch_size=25, progress=False, transform_inputs=boom)
    return {}


class Recording(DistributedDataParallel):
    """DDP that writes down the name of every parameter whose gradient it all-reduces."""

    synchronised: set[str] = set()

    def __init__(self, module: nn.Module, **options):
        super().__init__(module, **options)
        names = {id(p): name for name, p in module.named_parameters()}

        def hook(state, bucket):
            Recording.synchronised.update(names[id(p)] for p in bucket.parameters())
            return allreduce_hook(state, bucket)

        self.register_comm_hook(None, hook)


def adapters(out: Path) -> dict:
    """transferkit.surgery.lora: frozen bases, trainable adapters and head; only those are
    all-reduced."""
    train, val = digits()
    seed_everything(0)
    model = add_lora(mlp(), r=4, targets=["0", "2"])
    distributed.DistributedDataParallel = Recording  # Ranks.wrap builds this one now
    try:
        fit(model, train, val, epochs=1, batch_size=25, seed=4, progress=False)
    finally:
        distributed.DistributedDataParallel = DistributedDataParallel
    return {"synchronised": sorted(Recording.synchronised), "state": model.state_dict()}


def command_line(out: Path) -> dict:
    """The command-line fine-tuner, on every process."""
    status = cli.main(["finetune", "--model", "mlp", "--data", "digits", "--strategy", "full",
                       "--epochs", "1", "--out", str(out / "cli.pt")])
    return {"status": status}


SCENARIOS = {"equal": equal, "frozen_bn": frozen_bn, "adapters": adapters, "cli": command_line,
             "fail": fail}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    for scenario in sys.argv[2:]:
        result = SCENARIOS[scenario](out)
        torch.save(result, out / f"{scenario}-rank{current().rank}.pt")
