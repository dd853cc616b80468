"""The ``transferkit`` command line.

* ``transferkit doctor`` — the environment report (versions, device, widgets).
* ``transferkit lab`` — copy the lessons into a working folder (never
  overwriting your edits) and start JupyterLab on it, on 127.0.0.1 with a
  fresh token, printing the address to open. A learner gets the student
  versions (exercises open, checks kept; `transferkit.course.student.solution` shows
  an answer on request); ``--instructor`` gives the full lessons and the
  instructor guide, in a folder of their own. It first writes the course's
  JupyterLab settings into the environment it runs in (`install_lab_settings`:
  no "get notified about news?" question, no update check), never into your
  own JupyterLab settings, and starts JupyterLab with `KERNEL_ENV`
  (OpenMP threads that spin only briefly while they wait, unless you set it) for its kernels.
* ``transferkit student DEST`` — write the student versions of the lessons
  (each answer replaced by ``...``, checks kept) into DEST, as ``transferkit
  lab`` gives them, for an instructor to hand out (or a hub to give each
  student at server start); a student's edits there are never overwritten.
* ``transferkit finetune --model M --data D --strategy S --out model.pt`` —
  fine-tune a network on your data from the shell and write a checkpoint and a
  metrics file; the same command runs on several processes under ``torchrun``
  (``torchrun --nproc-per-node 2 -m transferkit finetune …``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.course.doctor import format_report, report
from transferkit.course.student import prepare_workspace, write_student_versions
from transferkit.course.workspace import FULL, STUDENT, describe
from transferkit.foundations.data import (
    check_finite,
    check_labels,
    load_digits,
    train_val_test_split,
)
from transferkit.foundations.device import pick_device
from transferkit.foundations.distributed import current
from transferkit.methods.finetune import fine_tune
from transferkit.methods.strategies import TABLE, check_strategy
from transferkit.surgery.heads import Classifier
from transferkit.training.checkpoint import CheckpointError, load_error, save_checkpoint
from transferkit.training.loop import evaluate
from transferkit.vision.backbones import FAMILIES, WeightsUnavailableError, backbone, small_cnn

FIRST_LESSON = "00_welcome.ipynb"
# The course's JupyterLab defaults: a first run without distractions, and no requests to the
# internet. JupyterLab otherwise asks "Would you like to get notified about official Jupyter
# news?" (fetchNews "none") and checks for a newer version of itself.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}


def lab_settings_path(prefix: str | Path | None = None) -> Path:
    """The ``overrides.json`` of the JupyterLab in the environment at ``prefix`` (default:
    this Python's): JupyterLab's defaults for everyone using that environment, which a
    learner can still change in Settings. ``$JUPYTERLAB_DIR`` moves it, as it moves JupyterLab."""
    app_dir = os.environ.get("JUPYTERLAB_DIR") or Path(prefix or sys.prefix, "share", "jupyter",
                                                       "lab")
    return Path(app_dir) / "settings" / "overrides.json"


def install_lab_settings(prefix: str | Path | None = None) -> Path:
    """Merge `LAB_SETTINGS` into the environment's ``overrides.json`` (other entries kept);
    the file is only written when something changes. Returns its path."""
    path = lab_settings_path(prefix)
    try:
        current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it.") from None
    merged = {**current, **{plugin: {**current.get(plugin, {}), **values}
                            for plugin, values in LAB_SETTINGS.items()}}
    if merged != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return path


def default_lessons() -> Path:
    """``./lessons`` if there is one, else the lessons beside this package's source."""
    here = Path.cwd() / "lessons"
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "lessons"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# What JupyterLab, and so every kernel it starts, gets unless you set either yourself. OpenMP
# threads that spin while they wait for each other take the core from the thread with work
# when other jobs keep the cores busy (a shared hub, Binder). Measured on the 2-core machine,
# 32 steps of MiniLM full fine-tuning (batches of 16) on two threads: quiet 6.6 s spinning
# (libgomp's default), 7.9 s never spinning (PASSIVE), 7.2 s spinning 3,000 times first;
# beside one busy process 50 s, 12.3 s and 13.1 s. GOMP_SPINCOUNT is libgomp's (PyPI's torch
# on Linux); other OpenMP runtimes read OMP_WAIT_POLICY. course.py and binder/start do the same.
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}


def kernel_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with `KERNEL_ENV`'s settings added, unless it sets one of them itself
    (then it is yours: e.g. ``OMP_WAIT_POLICY=ACTIVE`` alone keeps libgomp spinning)."""
    if KERNEL_ENV.keys() & environ.keys():
        return dict(environ)
    return {**KERNEL_ENV, **environ}


def lab_command(workdir: Path, port: int, token: str, open_browser: bool) -> list[str]:
    """The command that starts JupyterLab on ``workdir``, bound to loopback."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0  # containers, CI: Jupyter refuses
    return [
        sys.executable, "-m", "jupyter", "lab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={workdir}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={open_browser}",
        *(["--ServerApp.allow_root=True"] if as_root else []),
    ]


def _headless() -> bool:
    return sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    facts = report()
    print(format_report(facts))
    return 1 if facts["problems"] else 0


def copy_note(kind: str, workdir: Path, instructor: bool) -> str:
    """What the folder ``workdir`` of ``kind`` holds, in a sentence for the terminal."""
    if kind == STUDENT:
        return ("Your copy: the exercises are open (replace each ... with your answer; its check "
                "says PASS or NOT YET). After a real try, solution(\"NN.name\") from "
                "transferkit.course.student shows the course's answer. Instructors: --instructor, "
                "with a --workdir of its own, gives the full lessons.")
    if instructor:
        return "The full lessons, answers filled in, and the instructor guide (INSTRUCTORS.md)."
    return (f"{workdir} holds the full lessons, answers filled in, as earlier versions of the "
            "course copied them; it keeps them (updated by the same rules). For the student "
            f"versions, with the exercises open, use a new folder: --workdir "
            f"{workdir.with_name(workdir.name + '-' + STUDENT)}")


def cmd_lab(args: argparse.Namespace) -> int:
    lessons = Path(args.lessons) if args.lessons else default_lessons()
    workdir = Path(args.workdir).resolve()
    try:
        kind, actions = prepare_workspace(lessons, workdir, FULL if args.instructor else None)
    except (OSError, ValueError) as err:
        print(f"transferkit lab: {err}", file=sys.stderr)
        return 2
    print(f"Lessons in {workdir}: {describe(actions)}")
    print(copy_note(kind, workdir, args.instructor))
    try:
        install_lab_settings()
    except OSError as err:  # a read-only environment: JupyterLab still works, with its pop-ups
        print(f"transferkit lab: could not write the course's JupyterLab settings ({err})",
              file=sys.stderr)
    port = args.port or free_port()
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/lab/tree/{FIRST_LESSON}?token={token}"
    print(f"\nOpen the course at:\n\n    {url}\n\nStop the server with Ctrl-C (twice).\n",
          flush=True)
    if args.dry_run:
        return 0
    open_browser = not (args.no_browser or _headless())
    command = lab_command(workdir, port, token, open_browser)
    os.environ.update(kernel_environment(os.environ))  # JupyterLab's kernels inherit it
    os.chdir(workdir)
    if os.name == "posix":  # become JupyterLab: Ctrl-C and kill reach it directly
        os.execv(command[0], command)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def cmd_student(args: argparse.Namespace) -> int:
    lessons = Path(args.lessons) if args.lessons else default_lessons()
    dest = Path(args.dest).resolve()
    try:
        actions = write_student_versions(lessons, dest)
    except (OSError, ValueError) as err:
        print(f"transferkit student: {err}", file=sys.stderr)
        return 2
    print(f"Student versions in {dest}: {describe(actions)}")
    return 0


# --- transferkit finetune ---------------------------------------------------------------

MODELS = ("small_cnn", "mlp", *FAMILIES)
DATASETS = ("digits",)  # or a .pt file


def load_data(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``digits`` (images), or a ``.pt`` file holding ``(x, y)`` or ``{"x": …, "y": …}``,
    read with ``weights_only=True`` (tensors only: a data file cannot run code). The
    inputs must be finite (`check_finite`) and the labels the classes 0 … C−1, each
    present (`check_labels`): a NaN or a stray label is refused here, before any work."""
    if spec == "digits":
        digits = load_digits(images=True)
        return digits.x, digits.y
    path = Path(spec).expanduser()
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"--data must be one of {', '.join(DATASETS)} or a .pt file holding "
                         f"(x, y) tensors; got {spec!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(load_error(path, err, "tensor file", "Save the data as tensors: "
                                    "torch.save((torch.as_tensor(x), torch.as_tensor(y)), "
                                    "path).")) from None
    pair = (obj.get("x"), obj.get("y")) if isinstance(obj, dict) else obj
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(t, torch.Tensor) for t in pair)):
        raise ValueError(f"{path} must hold (x, y) tensors or {{'x': x, 'y': y}}.")
    x, y = pair
    if len(x) != len(y) or y.ndim != 1 or y.dtype.is_floating_point:
        raise ValueError(f"{path}: y must be integer class labels, one per row of x "
                         f"(x has {len(x)} rows, y has shape {tuple(y.shape)}, {y.dtype}).")
    check_finite(f"{path}: x", x)
    check_labels(y, f"{path}: y")
    return x.float(), y.long()


def check_weights_option(name: str, weights: str | None) -> None:
    """Refuse pre-trained weights for a model that has none (rather than ignore them)."""
    if weights is not None and name in ("mlp", "small_cnn"):
        raise ValueError(f"--weights {weights}: {name} has no pre-trained weights (it always "
                         "starts from random ones); leave --weights out, or choose a backbone "
                         "such as resnet18.")


def build_model(name: str, x: torch.Tensor, num_classes: int, weights: str | None) -> nn.Module:
    """A network for inputs like ``x`` with ``num_classes`` outputs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    check_weights_option(name, weights)
    if name == "mlp":
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 256), nn.ReLU(),
                                nn.Linear(256, 128), nn.ReLU())
        return Classifier(encoder, num_classes)
    if x.ndim != 4:
        raise ValueError(f"{name} needs images (N, C, H, W), but x has shape "
                         f"{tuple(x.shape)}; use --model mlp for flat inputs.")
    if name == "small_cnn":
        return small_cnn(num_classes, in_channels=x.shape[1])
    return backbone(name, weights, num_classes=num_classes, small_images=x.shape[-1] <= 32,
                    in_channels=x.shape[1], progress=False)


def check_output(path: Path, option: str) -> None:
    """Refuse an output path before any work, not after: one that exists (nothing is
    overwritten), or one that cannot be written (its folder is a file, or not writable;
    tried with a temporary file there)."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path} already exists; it is never overwritten. Choose "
                              "another name.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # made when the run writes
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: {folder} is a file, not a folder. Choose another "
                         "path.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write in {folder} ({err.strerror or err}). "
                         "Choose a folder you can write to.") from None


def write_outputs(out: Path, metrics: Path, model: nn.Module, meta: dict, rows: list[dict],
                  summary: dict) -> None:
    """The checkpoint and the metrics, both or neither: each is written to a temporary
    file in its folder, and both are renamed into place only when both are complete."""
    written: list[tuple[Path, Path]] = []
    try:
        for final in (out, metrics):
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
            written.append((partial, final))
            if final == out:
                save_checkpoint(partial, model, meta=meta)
            else:
                write_metrics(partial, rows, summary, final.suffix)
        for _, final in written:
            if final.exists():
                raise FileExistsError(f"{final} appeared while training; it is never "
                                      "overwritten. Choose another name.")
        for partial, final in written:
            os.replace(partial, final)
    except BaseException:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
        raise


def write_metrics(path: Path, rows: list[dict], summary: dict, suffix: str | None = None
                  ) -> None:
    """The epochs' rows as CSV, or everything as JSON (by ``suffix``, default the file's)."""
    if (suffix or path.suffix) == ".csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("x", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        with path.open("x") as f:
            json.dump({**summary, "epochs": rows}, f, indent=1)


class RunFailed(Exception):
    """A run that finished but diverged, or whose weights are not finite (exit status 3)."""


def failed_run(histories: list, model: nn.Module, test: dict) -> str:
    """Why a finished run must not count as a model: "" when nothing is wrong, else what
    diverged or is not finite (a weight, the test loss)."""
    for history in histories:
        if history.diverged:
            row = history.rows[-1]
            return (f"training diverged: the training loss became {row['loss']:.3g} in epoch "
                    f"{row['epoch']}. Lower --lr")
    broken = [name for name, t in model.state_dict().items()
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        return (f"the trained weights hold NaN or infinite values ({', '.join(broken[:3])}"
                f"{' …' if len(broken) > 3 else ''}). Lower --lr")
    if not math.isfinite(test.get("loss", 0.0)):
        return f"the test loss is {test['loss']}. Lower --lr"
    return ""


def cmd_finetune(args: argparse.Namespace) -> int:
    """Every check that can be made before training is made first (the outputs, the names,
    the device, the data), so a run fails in seconds, not after its work; the outputs are
    written only for a run that did not diverge, both or neither (`write_outputs`)."""
    out = Path(args.out).expanduser()
    metrics = Path(args.metrics).expanduser() if args.metrics else out.with_suffix(
        ".metrics.json")
    try:
        if metrics.suffix not in (".json", ".csv"):
            raise ValueError(f"--metrics must end in .json or .csv, got {metrics.name}.")
        if metrics.resolve() == out.resolve():
            raise ValueError(f"--out and --metrics are the same file, {out}; give two names.")
        for path, option in ((out, "--out"), (metrics, "--metrics")):
            check_output(path, option)
        check_strategy(args.strategy)  # every strategy of transferkit.methods.strategies, lora too
        if args.model not in MODELS:
            raise ValueError(f"unknown model {args.model!r}; choose one of {', '.join(MODELS)}.")
        weights = None if (args.weights or "none").lower() == "none" else args.weights
        check_weights_option(args.model, weights)
        try:  # a GPU that is not here: now, not after the data is read
            pick_device(args.device)
        except (RuntimeError, ValueError) as err:
            if args.device is None:  # $TRANSFERKIT_DEVICE: the message names it
                raise ValueError(str(err)) from None
            why = str(err).partition(", but ")[2].partition(". ")[0] or "not a device name"
            raise ValueError(f"--device {args.device} cannot be used: {why}. Use --device cpu, "
                             "or leave --device out for the best device there is.") from None
        x, y = load_data(args.data)
        splits = train_val_test_split(x, y, val=args.val, test=args.test, seed=args.seed)
        num_classes = int(y.max()) + 1
        torch.manual_seed(args.seed)  # the new head: the same on every process
        model = build_model(args.model, x, num_classes, weights)
        result = fine_tune(model, splits.train, splits.val, strategy=args.strategy,
                           epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           seed=args.seed, device=args.device, progress=current().main,
                           r=args.lora_r, alpha=args.lora_alpha,  # lora's: the others ignore them
                           targets=args.lora_targets.split(",") if args.lora_targets else None)
        histories, rows = [stage.history for stage in result.stages], result.to_rows()
        test = evaluate(model, splits.test)
        failure = failed_run(histories, model, test)
        summary = {"model": args.model, "data": args.data, "strategy": args.strategy,
                   "processes": current().world, "classes": num_classes,
                   "examples": {"train": len(splits.train), "val": len(splits.val),
                                "test": len(splits.test)}, "test": test,
                   **({"diverged": failure} if failure else {})}
        if failure and not args.save_diverged:
            raise RunFailed(f"{failure} (it was {args.lr:g}), or pass --save-diverged to keep "
                            "the run anyway. Nothing was written.")
        if current().main:
            try:
                write_outputs(out, metrics, model,
                              {k: v for k, v in summary.items() if k != "test"}, rows, summary)
            except OSError as err:  # a full disk, a folder removed meanwhile …
                raise ValueError(f"could not write the outputs ({err.strerror or err}); nothing "
                                 "was written.") from None
            print(f"test accuracy {test.get('accuracy', float('nan')):.4f}; wrote {out} and "
                  f"{metrics}{' (a diverged run: --save-diverged)' if failure else ''}")
        if failure:
            raise RunFailed(f"{failure} (it was {args.lr:g}); the files were written because "
                            "of --save-diverged.")
    except RunFailed as err:
        print(f"transferkit finetune: {err}", file=sys.stderr)
        return 3
    except (OSError, ValueError, TypeError, CheckpointError, WeightsUnavailableError) as err:
        print(f"transferkit finetune: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


def add_finetune_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a network on your data; writes a checkpoint and metrics",
        description="Fine-tune a network and write a checkpoint "
        "(transferkit.training.checkpoint) and "
        "a metrics file. Runs in one process, or on several under torchrun: "
        "torchrun --nproc-per-node 2 -m transferkit finetune ...")
    p.add_argument("--model", required=True, metavar="NAME",
                   help=f"the network: {', '.join(MODELS)} (torchvision backbones get a "
                   "new head; 'mlp' for flat inputs)")
    p.add_argument("--weights", default=None, metavar="W",
                   help="a backbone's starting weights: none (random, the default), DEFAULT "
                   "(torchvision's pre-trained, cached or downloaded), or a file")
    p.add_argument("--data", required=True, metavar="DATA",
                   help="'digits' (scikit-learn's 8x8 digits, offline) or a .pt file holding "
                   "(x, y) tensors or {'x': x, 'y': y}: x images (N, C, H, W) or rows (N, D), "
                   "y integer labels 0..K-1; read with weights_only=True")
    p.add_argument("--strategy", default="lp_ft", metavar="S",
                   help=f"one of {', '.join(TABLE)} (default lp_ft); lora wraps "
                   "Linear layers in transferkit.surgery.lora's adapters and trains only those and "
                   "the head")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA's rank r (default 8)")
    p.add_argument("--lora-alpha", type=float, default=16, help="LoRA's alpha (default 16)")
    p.add_argument("--lora-targets", default=None, metavar="NAMES",
                   help="comma-separated Linear layer names for LoRA, matched at the end of "
                   "each name as peft's target_modules (default: every Linear but the head)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per stage (default 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="the global mini-batch, split across processes (default 64)")
    p.add_argument("--val", type=float, default=0.2,
                   help="fraction of the data held out for validation (default 0.2)")
    p.add_argument("--test", type=float, default=0.2,
                   help="fraction held out for the final test (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, head and shuffling")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the checkpoint to write (never overwritten)")
    p.add_argument("--metrics", default=None, metavar="PATH",
                   help="per-epoch metrics, .json (with the test score) or .csv "
                   "(default: OUT with the suffix .metrics.json; never overwritten)")
    p.add_argument("--save-diverged", action="store_true",
                   help="write the checkpoint and metrics of a run that diverged or ended "
                   "with weights that are not finite (by default nothing is written; the exit "
                   "status is 3 either way)")
    p.set_defaults(run=cmd_finetune)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transferkit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="print the environment report")
    p.set_defaults(run=cmd_doctor)
    p = sub.add_parser("lab", help="copy the lessons to a working folder and open JupyterLab")
    p.add_argument("--workdir", default="my-lessons",
                   help="your working copy of the lessons (default: ./my-lessons)")
    p.add_argument("--lessons", help="the course's lessons folder (default: ./lessons)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--instructor", action="store_true",
                   help="the full lessons, answers filled in, and the instructor guide, "
                   "instead of the student versions (a folder keeps the copy it was made with: "
                   "give this one a --workdir of its own)")
    p.add_argument("--dry-run", action="store_true",
                   help="sync the lessons and print the address, but do not start JupyterLab")
    p.set_defaults(run=cmd_lab)
    p = sub.add_parser("student", help="write the student versions of the lessons (no answers)")
    p.add_argument("dest", help="the folder to write them to (outside the lessons folder)")
    p.add_argument("--lessons", help="the course's lessons folder (default: ./lessons)")
    p.set_defaults(run=cmd_student)
    add_finetune_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
