"""Steps per second of `transferkit.training.loop.fit` on one process and on two under torchrun.

    .venv/bin/python benchmarks/bench_ddp.py [--device cpu|cuda] [--repeats 3]

The same training in every run: the MLP of bench_fit.py (64→256→256→10) on the
digits' training split (1,077 images), Adam, the same global batch, epochs and
seed, validation after every epoch. Measured in this run, the median of several
repeats after a warm-up (run after run, not interleaved as in bench_fit.py: the
two processes are a launch of their own):

* ``1 process``            — ``fit`` here, with torch's default threads (the baseline);
* ``1 process, 1 thread``  — the same with one thread, what each torchrun process gets;
* ``2 processes``          — ``torchrun --nproc-per-node 2`` on this machine (gloo on the
                             CPU, nccl with one GPU each on CUDA): the seconds of ``fit``
                             in process 0, timed inside it, so process start-up is not
                             in them (it is printed apart, as the launch's wall time).

Two processes split every mini-batch and add a gradient all-reduce to every step,
so on a 2-core CPU they may well be slower than one: the numbers say which, on
this machine. On CUDA the 2-process run needs two GPUs; with one it is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from transferkit.course.cli import free_port
from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.foundations.device import pick_device, seed_everything
from transferkit.foundations.distributed import current
from transferkit.training.loop import epoch_batches, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit import model  # noqa: E402  (the same MLP)

ROOT = Path(__file__).resolve().parents[1]


def time_fit(args: argparse.Namespace, device: torch.device) -> list[float]:
    """Seconds of ``fit``, ``repeats`` times after one untimed warm-up epoch."""
    x, y = load_digits()
    train, val, _ = train_val_test_split(x, y, seed=0)
    seconds = []
    for repeat in range(args.repeats + 1):
        seed_everything(0)
        net = model()
        start = time.perf_counter()
        fit(net, train, val, epochs=1 if repeat == 0 else args.epochs, batch_size=args.batch_size,
            lr=1e-3, seed=0, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if repeat:
            seconds.append(time.perf_counter() - start)
    return seconds


def two_processes(args: argparse.Namespace) -> tuple[list[float] | None, float]:
    """Run this script under torchrun as the worker; its seconds, and the launch's."""
    command = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "1",
               "--nproc-per-node", "2", "--max-restarts", "0", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "--local-addr", "127.0.0.1", __file__,
               "--worker", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), *(["--device", args.device] if args.device else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)["seconds"], wall
    print(result.stdout[-2000:], result.stderr[-4000:], file=sys.stderr)
    return None, wall


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    device = pick_device(args.device)
    if args.worker:  # one of the torchrun processes
        seconds = time_fit(args, device)
        if current().main:
            print(json.dumps({"seconds": seconds}), flush=True)
        return
    x, _ = load_digits()
    n_train = len(train_val_test_split(x, torch.zeros(len(x), dtype=torch.long), seed=0,
                                       stratify=False).train)
    steps = args.epochs * len(epoch_batches(n_train, args.batch_size))
    threads = torch.get_num_threads()
    times = {"1 process": time_fit(args, device)}
    if device.type == "cpu":
        torch.set_num_threads(1)
        times["1 process, 1 thread"] = time_fit(args, device)
        torch.set_num_threads(threads)
    launch = None
    if device.type == "cpu" or torch.cuda.device_count() >= 2:
        seconds, launch = two_processes(args)
        if seconds:
            times["2 processes"] = seconds
    base = statistics.median(times["1 process"])
    print(f"device={device} cores={os.cpu_count()} threads={threads} torch={torch.__version__} "
          f"epochs={args.epochs} global batch={args.batch_size} steps={steps} "
          f"repeats={args.repeats}")
    print(f"{'run':<21} {'median s':>9} {'steps/s':>8} {'vs 1 process':>13}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<21} {median:9.3f} {steps / median:8.1f} {base / median:12.2f}x")
    if launch is not None:
        print(f"the torchrun launch took {launch:.1f} s in all (start-up, warm-up, "
              f"{args.repeats} timed runs)")
    if "2 processes" not in times:
        print("2 processes: not measured (" + ("it failed, see above" if launch is not None
              else "it needs 2 GPUs") + ")")


if __name__ == "__main__":
    main()
