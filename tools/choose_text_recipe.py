"""Choose how to fine-tune MiniLM on the review snippets, on the validation split only.

    .venv/bin/python tools/choose_text_recipe.py            # the search (tens of minutes
                                                            # on 2 CPU cores; minutes on a GPU)
    .venv/bin/python tools/choose_text_recipe.py --check    # RECIPES == the stored choice?

For each strategy of `transferkit.text.finetune.transformer_method` (full, partial,
LoRA) it trains candidates on labelled draws from the *training* split and scores them
on a fixed subsample of the *validation* split; the test split is never loaded. It
searches in stages, each starting from the best of the one before (highest mean
validation accuracy over the seeds, every candidate on the same draws and snippets):

1. full fine-tuning, 128 labels per class: the encoder's rate with a fresh head (a rate
   twice the largest is tried too while the largest wins), then the probe's head (LP-FT)
   at the best rate;
2. full: how many epochs;
3. the fewest labels (8 and 32 per class): a minimum number of optimizer steps, or not;
4. partial (top 2 layers) and LoRA (r = 8): their rates, with what 1–3 chose for the rest
   (again doubled while the largest wins).

BERT's usual settings are taken, not searched (a 2-core CPU cannot afford every
combination): AdamW, batches of 16, the linear schedule with 10 % warm-up, weight decay
0.01 off LayerNorm and biases, the head at 1e-3.

The record (every run with its per-snippet correctness, so any two candidates can be
compared paired; the choice; the command, commit, date, versions and device) goes to
``transferkit/assets/text_recipe.json``; `transferkit.text.finetune.RECIPES` must then
hold the chosen recipes (``--check`` and a test compare them). Lesson 07 shows the
record's table, labelled as stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferkit.foundations.data import few_labels  # noqa: E402
from transferkit.foundations.device import pick_device  # noqa: E402
from transferkit.text.finetune import RECIPES, Recipe, transformer_method  # noqa: E402
from transferkit.text.methods import EmbeddingTable, subsample  # noqa: E402
from transferkit.text.model import load_text_model  # noqa: E402
from transferkit.text.reviews import reviews_splits  # noqa: E402

OUT = ROOT / "transferkit" / "assets" / "text_recipe.json"
BUDGET = 128  # labels per class: the budget lesson 07 trains live
VAL_SIZE = 500


def provenance(argv: list[str]) -> dict:
    import transformers  # noqa: PLC0415

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "transferkit", "tools"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    device = pick_device()
    return {"command": "python3 tools/choose_text_recipe.py " + " ".join(argv),
            "commit": commit + ("+uncommitted changes" if dirty else ""),
            "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "device": str(device) + (f" ({torch.cuda.get_device_name(0)})"
                                     if device.type == "cuda" else
                                     f" ({torch.get_num_threads()} threads)")}


class Search:
    """Runs candidates on the same draws and validation snippets, and remembers them."""

    def __init__(self, table: EmbeddingTable, train, val, seeds):
        self.table, self.train, self.val, self.seeds = table, train, val, list(seeds)
        self.runs: list[dict] = []
        self.done: dict[tuple, dict] = {}
        self.progress_file: Path | None = None

    def run(self, stage: str, strategy: str, recipe: Recipe, budget: int = BUDGET) -> dict:
        """Every seed of one candidate; returns its summary (and keeps the runs). A
        candidate already run (same strategy, recipe and budget) is not run again."""
        key = (strategy, recipe.fingerprint(), budget)
        if key in self.done:
            return self.done[key]
        method = transformer_method(self.table, strategy, recipe)
        accuracies = []
        for seed in self.seeds:
            draw = few_labels(self.train.x, self.train.y, budget, seed=seed)
            start = time.perf_counter()
            predictor = method(draw, None, seed)
            seconds = time.perf_counter() - start
            correct = predictor(self.val.x) == self.val.y.numpy()
            accuracies.append(float(correct.mean()))
            self.runs.append({
                "stage": stage, "strategy": strategy, "budget": budget, "seed": seed,
                "recipe": dataclasses.asdict(recipe), "fingerprint": recipe.fingerprint(),
                "val_accuracy": accuracies[-1], "train_seconds": round(seconds, 2),
                "steps": predictor.measurements["steps"],
                "val_correct": "".join("1" if c else "0" for c in correct)})
            del predictor
        summary = {"strategy": strategy, "budget": budget, "recipe": recipe,
                   "mean": float(np.mean(accuracies))}
        print(f"  [{stage}] {strategy:7s} {budget:4d}/class {describe(recipe):60s} "
              f"val {summary['mean']:.3f} ({', '.join(f'{a:.3f}' for a in accuracies)})",
              flush=True)
        self.done[key] = summary
        if self.progress_file is not None:  # every finished candidate, for watching a long run
            self.progress_file.write_text(json.dumps(self.runs) + "\n")
        return summary

    def best(self, stage: str, strategy: str, recipes: list[Recipe],
             budget: int = BUDGET) -> Recipe:
        summaries = [self.run(stage, strategy, r, budget) for r in recipes]
        return max(summaries, key=lambda s: s["mean"])["recipe"]

    def best_rate(self, stage: str, strategy: str, base: Recipe, rates: list[float],
                  budget: int = BUDGET, most: int = 2) -> Recipe:
        """The best of ``rates``; while the largest tried is the best, twice it too (at most
        ``most`` more), so the choice is not just the edge of the range."""
        rates = sorted(rates)
        best = self.best(stage, strategy, [dataclasses.replace(base, lr=r) for r in rates],
                         budget)
        for _ in range(most):
            if best.lr != rates[-1]:
                break
            rates.append(rates[-1] * 2)
            best = self.best(stage, strategy, [dataclasses.replace(base, lr=r) for r in rates],
                             budget)
        return best


def describe(recipe: Recipe) -> str:
    return (f"head {recipe.head}, lr {recipe.lr:g}, {recipe.epochs} ep, min {recipe.min_steps}"
            f" steps, {recipe.schedule}, wd {recipe.weight_decay:g}")


def search(quick: bool, progress: str | None = None) -> tuple[dict[str, Recipe], Search, dict]:
    replace = dataclasses.replace
    text_model = load_text_model()
    train, val, _ = reviews_splits()  # the test split is not used below
    train_pool = subsample(train, 400 if quick else 2000, seed=0)
    val_sample = subsample(val, 100 if quick else VAL_SIZE, seed=0)
    table = EmbeddingTable(text_model, train_pool.x, val_sample.x)
    s = Search(table, train_pool, val_sample, range(1 if quick else 2))
    s.progress_file = Path(progress) if progress else None
    budget = 16 if quick else BUDGET

    base = Recipe(lr=3e-5)
    rates = [2e-5, 5e-5, 1e-4]
    if quick:
        rates, base = [5e-5], replace(base, epochs=1)
    # 1. full: the encoder's rate (fresh head), then the probe's head at the best rate
    full = s.best_rate("1 rate", "full", base, rates, budget, most=0 if quick else 2)
    full = s.best("1 head", "full", [full, replace(full, head="probe")], budget)
    # 2. full: epochs
    epochs = [full.epochs] if quick else [3, 4, 6]
    full = s.best("2 epochs", "full", [replace(full, epochs=e) for e in epochs], budget)
    # 3. the fewest labels: a minimum of optimizer steps
    small = [8] if quick else [8, 32]
    scores = {m: [] for m in (0, 50)}
    for b in small:
        for m in scores:
            scores[m].append(s.run("3 min steps", "full", replace(full, min_steps=m), b)["mean"])
    full = replace(full, min_steps=max(scores, key=lambda m: np.mean(scores[m])))
    # 4. partial and LoRA: their rates (the rest as chosen for full)
    partial_rates = [1e-4] if quick else [1e-4, 3e-4]
    more = 0 if quick else 2
    partial = s.best_rate("4 partial rate", "partial", full, partial_rates, budget, more)
    lora_rates = [1e-3] if quick else [1e-3, 3e-3]
    lora = s.best_rate("4 LoRA rate", "lora", full, lora_rates, budget, more)
    data = {"train_pool": len(train_pool), "val_snippets": len(val_sample),
            "budget": budget, "seeds": s.seeds,
            "val_texts_fingerprint": _texts_fingerprint(val_sample.x)}
    return {"full": full, "partial": partial, "lora": lora}, s, data


def _texts_fingerprint(texts) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def load_record(path: Path = OUT) -> dict:
    return json.loads(path.read_text())


def chosen_recipes(record: dict) -> dict[str, Recipe]:
    return {name: Recipe(**fields) for name, fields in record["chosen"].items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true",
                        help="a tiny search that checks the script runs (not a choice)")
    parser.add_argument("--progress", help="a file rewritten with every run so far")
    parser.add_argument("--check", action="store_true",
                        help="only compare transferkit.text.finetune.RECIPES with the record")
    args = parser.parse_args(argv)
    if args.check:
        chosen = chosen_recipes(load_record(Path(args.out)))
        wrong = [name for name in RECIPES if RECIPES[name] != chosen.get(name)]
        for name in wrong:
            print(f"RECIPES[{name!r}] = {RECIPES[name]}\n  but the search chose {chosen[name]}")
        print("RECIPES match the stored search" if not wrong else "RECIPES differ")
        return 1 if wrong else 0

    started = time.perf_counter()
    record = {"provenance": provenance(argv)}
    chosen, s, data = search(args.quick, args.progress)
    record.update(data=data, minutes=round((time.perf_counter() - started) / 60, 1),
                  chosen={name: dataclasses.asdict(r) for name, r in chosen.items()},
                  fingerprints={name: r.fingerprint() for name, r in chosen.items()},
                  runs=s.runs)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, recipe in chosen.items():
        print(f"{name}: {recipe}")
    print(f"wrote {args.out} ({record['minutes']} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
