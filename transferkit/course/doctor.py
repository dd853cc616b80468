"""An environment report: is this machine ready for the course?

`report()` collects the facts (versions, the device training will use, CPU
threads, whether interactive widgets can render); `format_report()` turns them
into the text that ``transferkit doctor`` and ``%transferkit_doctor`` print.
Each problem found comes with what to do about it.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch

from transferkit.foundations.device import ENV_VAR, pick_device

PACKAGES = (
    "transferkit", "torch", "torchvision", "numpy", "scikit-learn", "plotly",
    "ipywidgets", "anywidget", "jupyterlab_widgets", "tqdm", "jupyterlab",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str | None) -> int:
    try:
        return int((version or "0").split(".")[0])
    except ValueError:
        return 0


def report() -> dict:
    """The facts, as a dictionary (``problems`` lists what needs fixing)."""
    versions = {name: _version(name) for name in PACKAGES}
    problems: list[str] = []
    try:
        device = str(pick_device())
    except (ValueError, RuntimeError) as err:
        device = "unusable"
        problems.append(str(err))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

    missing = [n for n in ("ipywidgets", "anywidget", "jupyterlab_widgets") if not versions[n]]
    if missing:
        problems.append(f"widgets will not render: install {', '.join(missing)} "
                        "(pip install -e . in the course folder installs them).")
    elif _major(versions["ipywidgets"]) < 8:
        problems.append(f"ipywidgets {versions['ipywidgets']} is too old for the lessons' "
                        "widgets: pip install 'ipywidgets>=8'.")
    if versions["plotly"] and _major(versions["plotly"]) < 6:
        problems.append(f"plotly {versions['plotly']} is older than 6: pip install 'plotly>=6'.")
    if not versions["torchvision"]:
        problems.append("torchvision is missing (lesson 05 needs it): pip install torchvision.")

    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": versions,
        "device": device,
        "device_override": os.environ.get(ENV_VAR) or None,
        "gpu": gpu,
        "cuda_build": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "widgets_ok": not missing and _major(versions["ipywidgets"]) >= 8,
        "problems": problems,
    }


def format_report(facts: dict | None = None) -> str:
    """The report as aligned plain text."""
    facts = report() if facts is None else facts
    lines = ["transferkit environment report", ""]
    rows = [
        ("python", f"{facts['python']} ({facts['platform']})"),
        *((name, version or "NOT INSTALLED") for name, version in facts["versions"].items()),
        ("training device", facts["device"]
         + (f" (set by TRANSFERKIT_DEVICE={facts['device_override']})"
            if facts["device_override"] else "")),
        ("GPU", facts["gpu"] or "none found"),
        ("torch CUDA build", facts["cuda_build"] or "none (CPU-only build)"),
        ("CPU threads", f"{facts['torch_threads']} used by torch, {facts['cpu_count']} cores"),
        ("widgets render", "yes" if facts["widgets_ok"] else "NO (see below)"),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    if facts["problems"]:
        lines.append("Problems:")
        lines += [f"  - {p}" for p in facts["problems"]]
    else:
        lines.append("All good: the course will run here.")
    return "\n".join(lines)
