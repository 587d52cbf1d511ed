"""Shared helpers of the benchmarks: the machine record and writing JSON + Markdown results."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "load_average_1min_at_start": round(load, 2) if load is not None else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def scratch_dir(prefix: str, keep: bool = False) -> Path:
    """A temporary folder for a benchmark's stores, removed when the process exits unless ``keep`` (then printed)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if keep:
        atexit.register(print, f"stores kept in {root}", flush=True)
    else:
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def git_commit() -> str | None:
    """The commit the benchmark ran at (with ``+dirty`` when tracked files differ from it)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def command() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix().split("/work/main/")[-1], *sys.argv[1:]])


def write_results(name: str, results: dict[str, Any], rows: list[tuple[str, Any, str]], notes: list[str]) -> None:
    """Write ``bench/results/<name>.json`` and a Markdown table ``<name>.md``.

    ``rows`` are (key, value, target-or-comment) triples for the table.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": command(), "commit": git_commit(), "machine": machine(), "results": results,
               "notes": notes,
               "table": [{"figure": k, "value": v, "target": note} for k, v, note in rows]}
    tmp = RESULTS / f"{name}.json.part"
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(RESULTS / f"{name}.json")
    m = payload["machine"]
    lines = [f"# Benchmark: {name}", "", f"Command: `{payload['command']}` at commit `{payload['commit']}`", "",
             f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
             f"load average at start {m['load_average_1min_at_start']}, {m['date']}", "",
             "| figure | value | target / note |", "| --- | --- | --- |"]
    for key, value, note in rows:
        lines.append(f"| {key} | {_fmt(value)} | {note} |")
    lines += ["", *[f"- {n}" for n in notes], ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)
