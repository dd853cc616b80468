"""Compute lesson 07's full grid and store it with its provenance (for maintainers).

    .venv/bin/python tools/text_grid.py          # about an hour on 2 CPU cores; minutes on a GPU
    .venv/bin/python tools/text_grid.py --all    # and every pool label ("all"), as on a GPU

Every method of `transferkit.text.grid.grid_methods` (prompting, TF-IDF, the frozen probe,
partial, full and LP-FT fine-tuning, LoRA: the recipes of `transferkit.text.finetune.RECIPES`)
× 8, 32, 128 and 512 labels per class × 5 seeds, each scored on the whole test split,
with the encoder's drift measured on 200 validation snippets. The rows, the settings'
fingerprint and the provenance (this command, the commit, the date, the versions and the
device) go to ``transferkit/assets/text_grid.json.xz``, which lesson 07 draws as stored.
Run it again after changing a recipe: `transferkit.text.grid.load_grid` refuses a grid made
with other settings.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferkit.foundations.device import pick_device  # noqa: E402
from transferkit.methods.label_budget import label_budget_study  # noqa: E402
from transferkit.text.grid import (  # noqa: E402
    BUDGETS,
    DRIFT_SNIPPETS,
    GRID_FILE,
    SEEDS,
    grid_methods,
    grid_splits,
    save_grid,
)
from transferkit.text.methods import EmbeddingTable, subsample  # noqa: E402
from transferkit.text.model import load_text_model  # noqa: E402


def provenance(argv: list[str], minutes: float) -> dict:
    import transformers  # noqa: PLC0415

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "transferkit", "tools"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    device = pick_device()
    name = (torch.cuda.get_device_name(0) if device.type == "cuda"
            else f"{torch.get_num_threads()} CPU threads")
    return {"command": "python3 tools/text_grid.py " + " ".join(argv),
            "commit": commit + ("+uncommitted changes" if dirty else ""),
            "date": datetime.date.today().isoformat(), "device": f"{device} ({name})",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "minutes": round(minutes, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(GRID_FILE))
    parser.add_argument("--all", action="store_true", help="add the budget 'every pool label'")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--budgets", type=int, nargs="*", default=list(BUDGETS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    text_model = load_text_model()
    pool, val, test = grid_splits()
    drift = subsample(val, DRIFT_SNIPPETS, seed=0)
    table = EmbeddingTable(text_model, pool.x, test.x, drift.x)
    budgets = [*args.budgets, *([None] if args.all else [])]
    rows = []
    for budget in budgets:  # one budget at a time, so the log shows progress
        step = time.perf_counter()
        rows += label_budget_study(grid_methods(table, drift_on=drift.x), (pool, None, test),
                                   budgets=[budget], seeds=range(args.seeds), progress=True)
        print(f"budget {budget}: {time.perf_counter() - step:.0f} s", flush=True)
    minutes = (time.perf_counter() - started) / 60
    path = save_grid(rows, test, provenance(argv, minutes), args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {len(rows)} runs, "
          f"{minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
