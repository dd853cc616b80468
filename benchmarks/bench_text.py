"""What do transferkit.text.model's encoding, its cache, LoRA and frozen layers cost on MiniLM?

    .venv/bin/python benchmarks/bench_text.py [--device cpu|cuda] [--repeats 3] [--texts 256]

The model is the real all-MiniLM-L6-v2 (`transferkit.text.model.load_text_model`), the
data the review snippets' validation split (`transferkit.text.reviews.reviews_splits`).
Everything is measured in this run; timings are medians of ``--repeats`` interleaved
repeats after a warm-up.

(a) **Encoding throughput.** ``encode(model, texts, cache=False)`` (length-sorted
    batches of 64, ``inference_mode``) against the plain loop a Hugging Face tutorial
    writes, here in the benchmark: batches of 64 in the given order, the tokenizer
    pads each to its longest text, ``model(**batch)`` under ``no_grad``, mean pooling
    with the attention mask. The two results are compared (same vectors).
(b) **One fine-tuning step** (batch ``--batch-size`` of token ids, forward, cross-entropy,
    backward, Adam step) of a `TextClassifier` trained three ways: *full* (every
    weight), *LoRA* (``add_lora(r=8, alpha=16)`` on query and value, plus the head) and
    *frozen* (the head only, the encoder frozen). Time per step, trainable parameters,
    and the peak memory the steps add over the loaded model: on CUDA
    ``torch.cuda.max_memory_allocated``; on a CPU the peak resident set size (VmHWM,
    reset before the steps) in a fresh process per variant, minus the resident size
    just before the steps.
(c) **The embedding cache.** The same texts encoded with ``cache=True`` into an empty
    folder (compute and write), then again (read back; this includes hashing the
    weights to find the entry).
(d) **Peak memory of a lesson's work**: a fresh process imports transferkit, loads
    the model, tokenizes 256 training snippets, fine-tunes fully for one epoch
    (batch 16) and evaluates on 500 validation snippets. Its peak resident set size
    must stay under 2 GB (Binder gives 2 GB).
(e) **Partial fine-tuning with the frozen bottom run once**: the top 2 of 6 blocks and
    the head train, as a plain `TextClassifier` after ``freeze_to(model, -3)`` and as a
    `CachedBottomClassifier(model, 2)` made from the same weights. Seconds per step
    (as in (b), Adam over the trainable parameters, after a warm-up pass that fills the
    cache) and seconds to predict 400 validation snippets (``predict_texts``, cache
    warm); the two models' predictions on those snippets, before training, must agree.

Nothing fails but (e)'s check that both models did the same work: timings belong
here, not in unit tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_fit import interleaved

from transferkit.foundations.data import few_labels
from transferkit.foundations.device import pick_device, seed_everything
from transferkit.methods.finetune import fine_tune
from transferkit.surgery.cached_bottom import (
    CachedBottomClassifier,
    bottom_cache_info,
    clear_bottom_cache,
)
from transferkit.surgery.freezing import freeze, freeze_to, unfreeze
from transferkit.surgery.heads import TextClassifier
from transferkit.surgery.lora import add_lora
from transferkit.text.finetune import predict_texts
from transferkit.text.model import encode, load_text_model, token_ids
from transferkit.text.reviews import reviews_splits
from transferkit.training.loop import evaluate

MEMORY_BUDGET = 2 * 2**30
VARIANTS = ("full", "LoRA", "frozen")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=256, help="snippets encoded in (a), (c)")
    parser.add_argument("--steps", type=int, default=5, help="fine-tuning steps per repeat")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--parts", default="abcde", help="which of (a) … (e) to run")
    parser.add_argument("--epochs", type=int, default=None, help="(ignored; course.py bench)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--lesson-memory", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_known_args()[0]  # course.py bench passes every script the same options


def rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)


def plain_encode(model, tokenizer, texts: list[str], batch: int, device) -> torch.Tensor:
    """The tutorial's loop: no sorting, the tokenizer pads, mean pooling by hand."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            inputs = tokenizer(texts[i:i + batch], padding=True, truncation=True,
                               max_length=128, return_tensors="pt").to(device)
            hidden = model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
    return torch.cat(out)


def classifier(encoder, variant: str) -> tuple[TextClassifier, torch.optim.Optimizer]:
    seed_everything(0)
    model = TextClassifier(copy.deepcopy(encoder), 2)
    if variant == "LoRA":
        add_lora(model, r=8, alpha=16)
    elif variant == "frozen":
        freeze(model)
        unfreeze(model, "head")
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.Adam(trainable, lr=2e-5 if variant == "full" else 1e-3)


def step(model, opt, x, y) -> None:
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def batch_of_reviews(tokenizer, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    train = reviews_splits().train
    subset = few_labels(train.x, train.y, size // 2, seed=0)
    return token_ids(tokenizer, subset.x).to(device), subset.y.to(device)


def memory_of(variant: str, args: argparse.Namespace) -> None:
    """Run in a fresh process: the memory the steps of one variant add."""
    device = pick_device(args.device)
    text_model = load_text_model(device=device)
    x, y = batch_of_reviews(text_model.tokenizer, args.batch_size, device)
    model, opt = classifier(text_model.model, variant)
    del text_model
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        before = rss_bytes()
    for _ in range(3):
        step(model, opt, x, y)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else rss_bytes("VmHWM"))
    print(json.dumps({"extra": peak - before}))


def lesson_memory(args: argparse.Namespace) -> None:
    """Run in a fresh process: load, fine-tune and evaluate as a lesson would."""
    device = pick_device(args.device)
    start = time.perf_counter()
    text_model = load_text_model(device=device)
    train, val, _ = reviews_splits()
    subset = few_labels(train.x, train.y, 128, seed=0)
    x = token_ids(text_model.tokenizer, subset.x)
    model = TextClassifier(text_model.model, 2)
    fine_tune(model, (x, subset.y), strategy="full", epochs=1, lr=2e-5, batch_size=16,
              progress=False, device=device)
    accuracy = evaluate(model, (token_ids(text_model.tokenizer, val.x[:500]), val.y[:500]),
                        batch_size=64)["accuracy"]
    print(json.dumps({"peak": rss_bytes("VmHWM"), "seconds": time.perf_counter() - start,
                      "accuracy": accuracy}))


def in_fresh_process(*flags: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, *flags, "--batch-size", str(args.batch_size)]
    if args.device:
        command += ["--device", args.device]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    args = parse()
    if args.variant:
        return memory_of(args.variant, args)
    if args.lesson_memory:
        return lesson_memory(args)
    device = pick_device(args.device)
    text_model = load_text_model(device=device)
    model, tokenizer = text_model
    texts = list(reviews_splits().val.x[:args.texts])
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"texts={len(texts)} repeats={args.repeats} batch={args.batch_size}")

    if "a" in args.parts:
        encoding(args, text_model, texts, device)
    if "b" in args.parts:
        fine_tuning_step(args, model, tokenizer, device)
    if "c" in args.parts:
        cache_speedup(text_model, texts)
    if "d" in args.parts:
        lesson = in_fresh_process("--lesson-memory", args=args)
        verdict = "under" if lesson["peak"] < MEMORY_BUDGET else "OVER"
        print(f"(d) load + fine-tune (full, 256 snippets, 1 epoch) + evaluate (500): peak RSS "
              f"{lesson['peak'] / 2**30:.2f} GiB ({verdict} 2 GiB), {lesson['seconds']:.0f} s, "
              f"accuracy {lesson['accuracy']:.3f}")
    if "e" in args.parts:
        cached_bottom(args, model, tokenizer, device)


def encoding(args, text_model, texts, device) -> None:
    """(a) encoding throughput against the plain loop."""
    model, tokenizer = text_model
    runs = {"plain transformers loop": lambda: plain_encode(model, tokenizer, texts, 64, device),
            "encode (sorted, inference_mode)": lambda: encode(text_model, texts, cache=False)}
    interleaved(runs, 1, device)  # warm-up
    times = interleaved(runs, args.repeats, device)
    same = torch.allclose(runs["plain transformers loop"](), runs[
        "encode (sorted, inference_mode)"](), atol=1e-4)
    base = statistics.median(times["plain transformers loop"])
    print("(a) encoding")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<34} {median:8.2f} s  {len(texts) / median:7.1f} texts/s  "
              f"{median / base:5.2f}x")
    print(f"  same vectors: {same}")


def fine_tuning_step(args, model, tokenizer, device) -> None:
    """(b) one step of full fine-tuning, LoRA and a frozen encoder."""
    x, y = batch_of_reviews(tokenizer, args.batch_size, device)
    models = {v: classifier(model, v) for v in VARIANTS}
    steps = {v: (lambda v=v: [step(*models[v], x, y) for _ in range(args.steps)])
             for v in VARIANTS}
    interleaved(steps, 1, device, setup=lambda name: None)
    times = interleaved(steps, args.repeats, device, setup=lambda name: None)
    memory = {v: in_fresh_process("--variant", v, args=args)["extra"] for v in VARIANTS}
    full_time = statistics.median(times["full"]) / args.steps
    print(f"(b) one fine-tuning step, batch {args.batch_size} (length {x.shape[1]} tokens)")
    print(f"  {'variant':<8} {'trainable':>11} {'ms/step':>8} {'vs full':>8} "
          f"{'peak extra memory':>18} {'vs full':>8}")
    for v in VARIANTS:
        per_step = statistics.median(times[v]) / args.steps
        n = sum(p.numel() for p in models[v][0].parameters() if p.requires_grad)
        print(f"  {v:<8} {n:>11,} {1e3 * per_step:8.0f} {per_step / full_time:7.2f}x "
              f"{mib(memory[v]):>18} {memory[v] / memory['full']:7.2f}x")


def cache_speedup(text_model, texts) -> None:
    """(c) encoding into an empty cache, then reading it back."""
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        encode(text_model, texts, cache_dir=folder)
        t1 = time.perf_counter()
        encode(text_model, texts, cache_dir=folder)
        t2 = time.perf_counter()
    print(f"(c) cache: first run {t1 - t0:.2f} s, re-run {t2 - t1:.3f} s: "
          f"{(t1 - t0) / (t2 - t1):.0f}x faster")


def cached_bottom(args, model, tokenizer, device) -> None:
    """(e) partial fine-tuning (top 2 blocks + head), plain against the bottom cached."""
    clear_bottom_cache()
    seed_everything(0)
    base = TextClassifier(copy.deepcopy(model), 2)
    nets = {"plain (freeze_to -3)": freeze_to(copy.deepcopy(base), -3),
            "cached bottom (k=2)": CachedBottomClassifier(base, 2)}
    ids = token_ids(tokenizer, reviews_splits().val.x[:400])
    predicts = {name: (lambda net=net: predict_texts(net, ids, tokenizer.pad_token_id))
                for name, net in nets.items()}
    predictions = {name: run() for name, run in predicts.items()}  # warm-up: fills the cache
    predict_times = interleaved(predicts, args.repeats, device, setup=lambda name: None)
    x, y = batch_of_reviews(tokenizer, args.batch_size, device)
    models = {name: (net, torch.optim.Adam([p for p in net.parameters() if p.requires_grad],
                                           lr=1e-4)) for name, net in nets.items()}
    steps = {name: (lambda m=m: [step(*m, x, y) for _ in range(args.steps)])
             for name, m in models.items()}
    interleaved(steps, 1, device, setup=lambda name: None)  # warm-up: fills the cache
    step_times = interleaved(steps, args.repeats, device, setup=lambda name: None)
    plain_step, plain_predict = (statistics.median(t["plain (freeze_to -3)"])
                                 for t in (step_times, predict_times))
    print(f"(e) partial fine-tuning, top 2 of 6 blocks + head, batch {args.batch_size}: "
          f"the frozen bottom run every time or once")
    print(f"  {'variant':<20} {'trainable':>11} {'ms/step':>8} {'vs plain':>9} "
          f"{'predict 400':>12} {'vs plain':>9}")
    for name, net in nets.items():
        per_step = statistics.median(step_times[name]) / args.steps
        predict = statistics.median(predict_times[name])
        n = sum(p.numel() for p in net.parameters() if p.requires_grad)
        print(f"  {name:<20} {n:>11,} {1e3 * per_step:8.0f} "
              f"{per_step / (plain_step / args.steps):8.2f}x {predict:10.2f} s "
              f"{predict / plain_predict:8.2f}x")
    plain, cached = predictions.values()
    same = int((plain == cached).sum())
    info = bottom_cache_info()
    print(f"  same predictions (before training, eval mode): {same}/{len(ids)}; bottom cache "
          f"{info['rows']} rows, {info['bytes']:,} bytes ({mib(info['bytes'])})")
    assert same == len(ids), "the cached and the plain model predict differently"


if __name__ == "__main__":
    main()
