"""fit and fine_tune under torchrun: 2 CPU processes (gloo, loopback only) against one.

The launches are real ``torchrun`` runs of tests/ddp_worker.py; each is bounded by a
timeout so that a hang fails the test instead of stalling CI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.course.cli import free_port
from transferkit.foundations import distributed
from transferkit.foundations.distributed import SINGLE, Ranks

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"
LAUNCH_TIMEOUT_S = 240  # a busy 2-core machine needs ~30 s; a hang must not stall CI


def torchrun(out: Path, *scenarios: str) -> tuple[subprocess.CompletedProcess, float]:
    """Launch the worker on 2 CPU processes, bound to 127.0.0.1; return it and its seconds."""
    command = [str(TORCHRUN), "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "0",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "--local-addr", "127.0.0.1", str(WORKER), str(out), *scenarios]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRANSFERKIT_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1", "TRANSFERKIT_DDP_TIMEOUT": "60"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT_S)
    return result, time.perf_counter() - start


def worker_module():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUCCEED = ("equal", "frozen_bn", "adapters", "cli")


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One torchrun launch (starting processes is most of its time on 2 busy cores): the
    scenarios that succeed, then one in which process 1 raises, which must end the run.
    The first scenario's functions run here in one process, for reference."""
    out = tmp_path_factory.mktemp("ddp")
    result, seconds = torchrun(out, *SUCCEED, "fail")
    log = result.stdout + result.stderr
    missing = [f"{s}-rank{r}.pt" for s in SUCCEED for r in (0, 1)
               if not (out / f"{s}-rank{r}.pt").exists()]
    assert not missing, f"{missing} not written:\n{log[-6000:]}"
    ranks = {scenario: [torch.load(out / f"{scenario}-rank{r}.pt") for r in (0, 1)]
             for scenario in SUCCEED}
    reference = out / "one-process"
    reference.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process
    try:
        single = worker_module().equal(reference)
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "ranks": ranks, "single": single, "seconds": seconds,
            "returncode": result.returncode, "log": log}


# --- one process: nothing changes ------------------------------------------------------------


def test_without_torchrun_every_ranks_method_is_the_identity(monkeypatch):
    for variable in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert distributed.join() is SINGLE and distributed.is_main_process()
    model, t = nn.Linear(2, 2), torch.ones(3)
    assert SINGLE.wrap(model, torch.device("cpu")) is model
    assert SINGLE.shard(slice(10, 35)) == slice(10, 35) and SINGLE.weight(slice(10, 35)) == 1.0
    assert SINGLE.sum(t)[0] is t and SINGLE.agree("seed") == "seed"


def test_torchrun_is_recognised_from_its_variables(monkeypatch):
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29500"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.launched_by_torchrun()
    assert distributed.current() == Ranks(1, 2, 1) and not distributed.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: an ordinary run
    assert not distributed.launched_by_torchrun() and distributed.is_main_process()


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("size", [4, 25, 28, 64])
def test_shards_cover_the_batch_and_give_its_gradient(world, size):
    """Uneven shards, each mean loss scaled by W·b_r/B, averaged as DDP does: the
    gradient of the whole batch's mean loss."""
    batch = slice(100, 100 + size)
    shards = [Ranks(r, world).shard(batch) for r in range(world)]
    assert [s.start for s in shards[1:]] == [s.stop for s in shards[:-1]]
    assert shards[0].start == batch.start and shards[-1].stop == batch.stop
    assert max(s.stop - s.start for s in shards) - min(s.stop - s.start for s in shards) <= 1

    x, y = torch.randn(200, 5), torch.randint(0, 3, (200,))
    model = nn.Linear(5, 3)

    def gradient(part: slice, weight: float) -> torch.Tensor:
        model.zero_grad()
        (nn.functional.cross_entropy(model(x[part]), y[part]) * weight).backward()
        return model.weight.grad.clone()

    averaged = sum(gradient(s, Ranks(r, world).weight(batch))
                   for r, s in enumerate(shards)) / world
    torch.testing.assert_close(averaged, gradient(batch, 1.0))


def test_a_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(ValueError, match="at least 4 examples, but one has 3"):
        Ranks(0, 4).check_batches([slice(0, 64), slice(64, 67)])


# --- two processes under torchrun ------------------------------------------------------------


def test_two_processes_end_with_the_weights_of_one(launched):
    """fit (uneven shards of 13 and 12, a frozen first layer, SGD), then fine_tune's
    gradual unfreezing (DDP re-wrapped per stage) and lp_ft (a cached linear probe):
    both processes hold the weights of the one-process run, to float tolerance."""
    single, ranks = launched["single"], launched["ranks"]["equal"]
    for key in ("fit", "gradual", "lp_ft"):
        for rank in ranks:
            for name, value in single[key].items():
                torch.testing.assert_close(rank[key][name], value, rtol=1e-5, atol=1e-5,
                                           msg=f"{key}: {name}")
    for rank in ranks:  # every process measured the same history as one process
        for ours, theirs in zip(rank["rows"], single["rows"], strict=True):
            for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
                assert ours[column] == pytest.approx(theirs[column], rel=1e-5)


def test_callbacks_run_on_process_0_and_its_stop_reaches_every_process(launched):
    """A callback that stops after 2 epochs ran on process 0 only; both stopped."""
    first, second = launched["ranks"]["equal"]
    assert first["stopped"] == (2, 2) and second["stopped"] == (2, 0)


def test_frozen_parameters_are_bit_identical_on_every_process(launched):
    first, second = launched["ranks"]["equal"]
    single = launched["single"]
    for name in ("0.weight", "0.bias"):  # frozen before fit
        assert torch.equal(first["fit"][name], second["fit"][name])
        assert torch.equal(first["fit"][name], single["fit"][name])
    for name in first["fit"]:  # and the trained ones agree exactly across processes
        assert torch.equal(first["fit"][name], second["fit"][name])


def test_frozen_batchnorm_statistics_stay_frozen_on_every_process(launched):
    """The processes start from different weights on purpose: process 0's are used.
    Block 0 is frozen with bn="freeze": its weights and BatchNorm statistics end as
    process 0's started; block 1's statistics moved, and are the same everywhere."""
    first, second = launched["ranks"]["frozen_bn"]
    start = first["before"]
    for rank in (first, second):
        for name in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                     "1.running_var", "1.num_batches_tracked"):
            assert torch.equal(rank["after"][name], start[name]), name
    assert not torch.equal(first["after"]["4.running_mean"], start["4.running_mean"])
    for name, value in first["after"].items():
        assert torch.equal(second["after"][name], value), name


def test_only_the_lora_adapters_are_synchronised(launched):
    """A LoRA model (`transferkit.surgery.lora.add_lora`: frozen base weights, trainable low-rank
    adapters and head): DDP all-reduces the gradients of those, and of nothing else."""
    first, second = launched["ranks"]["adapters"]
    trainable = ["0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B", "4.bias", "4.weight"]
    assert first["synchronised"] == second["synchronised"] == trainable
    for name, value in first["state"].items():
        assert torch.equal(second["state"][name], value), name


def test_exactly_one_checkpoint_and_one_metrics_file(launched):
    out = launched["out"]
    assert sorted(p.name for p in out.glob("*.pt") if "rank" not in p.name) == ["cli.pt",
                                                                                 "model.pt"]
    assert not list(out.glob(".*.tmp"))  # no temporary file of a second writer left behind
    assert [r["status"] for r in launched["ranks"]["cli"]] == [0, 0]
    metrics = json.loads((out / "cli.metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["test"]["accuracy"] > 0.5
    assert launched["log"].count("test accuracy") == 1  # process 0 speaks, process 1 does not


def test_a_failing_process_ends_the_run_with_its_error(launched):
    """Process 1 raises in the last scenario: process 0, waiting for it in a collective,
    is stopped by torchrun (--max-restarts 0), and the run fails with process 1's error
    instead of hanging until the timeout."""
    assert launched["returncode"] != 0
    assert "RuntimeError: process 1 fails on purpose" in launched["log"]
    assert not (launched["out"] / "fail-rank0.pt").exists()
    assert launched["seconds"] < LAUNCH_TIMEOUT_S / 2
