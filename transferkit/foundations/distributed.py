"""Training on several processes: what `fit` does when `torchrun` starts it.

    torchrun --nproc-per-node 2 train.py          # 2 processes on this machine

starts ``train.py`` twice, each process with environment variables that say
who it is (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). `join` reads them; without them it returns `SINGLE`, one
process, and `transferkit.training.loop.fit` runs exactly as it always did. With them
it starts PyTorch's own machinery: a process group (gloo on the CPU, nccl on
CUDA, one GPU per local rank) and `DistributedDataParallel` (DDP). This module
is only the bookkeeping that makes the run equal to the one-process run:

* **The same mini-batches.** Every process shuffles with the same seed, so all
  see the same order; each global mini-batch of ``B`` examples is cut into
  ``W`` contiguous shards (sizes differ by at most one), and process ``r``
  trains on shard ``r`` of ``b_r`` examples. The number of steps and the
  global batch are those of the one-process run.
* **The same gradient.** DDP *averages* the processes' gradients. A loss that
  is a mean over the batch (cross-entropy, mse) is scaled by ``W · b_r / B``
  on process ``r``, so the average is
  ``(1/W) Σ_r W (b_r/B) ∇mean_r = ∇ (1/B) Σ_i ℓ_i``: the full batch's gradient,
  even when the shards are uneven (`Ranks.weight`).
* **The same numbers.** Losses, accuracies and validation metrics are sums
  over each process's shard, added up across processes (`Ranks.sum`), so every
  process computes the same history and takes the same decisions (best epoch,
  early stop, divergence).
* **The same statistics.** Each process updates BatchNorm's running statistics
  from its own shard; after every epoch they are made process 0's on all
  (`Ranks.broadcast`), as DDP does before every forward pass.
* **One voice.** Only process 0 (`is_main_process`) shows progress, runs the
  callbacks (live plots, early stopping: its decision to stop is sent to all,
  `Ranks.agree`) and writes checkpoints.

DDP hands only parameters with ``requires_grad=True`` to its gradient
reduction: frozen parameters (a frozen backbone, the base of a LoRA model)
are never synchronised, only broadcast once from process 0 when a model is
wrapped. BatchNorm computes its batch statistics on each process's shard
(PyTorch's default), so a network with BatchNorm in training mode is close
to, not equal to, the one-process run (`torch.nn.SyncBatchNorm`, on CUDA,
computes them over the global batch); frozen statistics stay frozen.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_S = 600  # a collective that waits longer fails (TRANSFERKIT_DDP_TIMEOUT overrides)


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return (all(v in os.environ for v in TORCHRUN_VARIABLES)
            and int(os.environ["WORLD_SIZE"]) > 1)


@dataclass(frozen=True)
class Ranks:
    """Which process this is (``rank``) out of how many (``world``).

    With ``world == 1`` every method gives back what it was given, so the
    training loop reads the same for one process and for many. A batch of 25
    on 2 processes: process 1 takes the last 12 examples, and scales its mean
    loss by 2 · 12/25 (process 0: 2 · 13/25):

    >>> Ranks(1, 2).shard(slice(0, 25)), Ranks(1, 2).weight(slice(0, 25))
    (slice(13, 25, None), 0.96)
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank; the CPU stays the CPU."""
        if self.world == 1 or device.type != "cuda":
            return device
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def split(self, n: int) -> slice:
        """This process's contiguous part of ``n`` items (sizes differ by at most 1)."""
        size, extra = divmod(n, self.world)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (self.rank < extra))

    def shard(self, batch: slice) -> slice:
        """This process's shard of one global mini-batch (a slice of the epoch's order)."""
        part = self.split(batch.stop - batch.start)
        return slice(batch.start + part.start, batch.start + part.stop)

    def weight(self, batch: slice) -> float:
        """The factor ``W · b_r / B`` for this process's mean loss, so that DDP's
        average of the gradients is the gradient of the whole batch's mean loss."""
        part = self.split(batch.stop - batch.start)
        return self.world * (part.stop - part.start) / (batch.stop - batch.start)

    def check_batches(self, batches: list[slice]) -> None:
        """Refuse mini-batches smaller than the number of processes (an empty shard)."""
        smallest = min(b.stop - b.start for b in batches)
        if smallest < self.world:
            raise ValueError(
                f"with {self.world} processes every mini-batch needs at least {self.world} "
                f"examples, but one has {smallest}. Use a larger batch_size or fewer processes."
            )

    def sum(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor added up over all processes (every process gets the total)."""
        if self.world == 1:
            return list(tensors)
        stacked = torch.stack([t.detach().float() for t in tensors])
        dist.all_reduce(stacked)
        return list(stacked)

    def agree(self, value: Any) -> Any:
        """Process 0's ``value`` (a picklable object), on every process."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in `DistributedDataParallel`: its trainable parameters (only
        those) get their gradients averaged over the processes; every parameter
        and buffer starts as process 0's. Buffers (BatchNorm statistics) are sent
        from process 0 before each forward pass."""
        if self.world == 1:
            return model
        return DistributedDataParallel(model, device_ids=[device.index]
                                       if device.type == "cuda" else None)

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Make each tensor process 0's, in place: ``model.state_dict().values()``
        for a whole model, ``model.buffers()`` for its BatchNorm statistics."""
        if self.world > 1:
            with torch.no_grad():
                for tensor in tensors:
                    dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        """Wait until every process gets here (if the process group is started)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()


SINGLE = Ranks()


def join(device: torch.device | None = None) -> Ranks:
    """This process's `Ranks`: `SINGLE` unless `torchrun` launched several processes,
    in which case the process group is started (once; gloo on the CPU, nccl on
    CUDA) with a timeout, so a process that dies cannot leave the others waiting
    for ever. A process group you started yourself is used as it is."""
    if not dist.is_available():
        return SINGLE
    if not dist.is_initialized():
        if not launched_by_torchrun():
            return SINGLE
        on_cuda = (device is None or device.type == "cuda") and torch.cuda.is_available()
        if on_cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        timeout = float(os.environ.get("TRANSFERKIT_DDP_TIMEOUT", TIMEOUT_S))
        dist.init_process_group("nccl" if on_cuda else "gloo", timeout=timedelta(seconds=timeout))
        atexit.register(leave)
    return Ranks(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def leave() -> None:
    """End the process group (at exit, once every process is done)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current() -> Ranks:
    """This process's `Ranks` without starting anything: from the process group if
    it is started, else from torchrun's variables, else `SINGLE`."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    if launched_by_torchrun():
        return Ranks(*(int(os.environ[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK")))
    return SINGLE


def is_main_process() -> bool:
    """True in process 0 of a distributed run, and in every ordinary run: the one
    that prints, draws and writes files."""
    return current().main


__all__ = ["Ranks", "SINGLE", "TIMEOUT_S", "current", "is_main_process", "join",
           "launched_by_torchrun", "leave"]
