"""CLI start-up latency: how long `silodiff --help` and a catalog query take, wall clock, in fresh processes.

Protocol (fixed before running):
- a small store: 200 scikit-learn digits ingested as 4 sources (no training), built once in a temporary folder;
- each command runs 5 times as a new process (the venv's `silodiff` console script), after one untimed warm-up
  run that fills the OS file cache; the figure is the median wall time of the 5;
- `help_seconds`: `silodiff --help`; `catalog_seconds`: `silodiff catalog sources --store S --json`;
- for scale, in the same run: `python -c pass` (the interpreter alone) and `python -c "import torch"`
  (what every command paid before imports were made lazy), also medians of 5;
- also the CPU time (user + system) of the same runs, from getrusage of the children: on a shared, loaded machine
  the wall time mostly measures the wait for a core, the CPU time what the command itself costs;
- targets: help ≤ 0.5 s, catalog ≤ 1.0 s wall (issue #20). torch is pinned to nothing: these processes never load it.

Run: `make bench-cli-latency` (writes bench/results/cli-latency.json and .md).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scratch_dir, write_results  # noqa: E402

RUNS = 5


def silodiff_cmd() -> list[str]:
    script = Path(sys.executable).parent / "silodiff"
    return [str(script)] if script.exists() else [sys.executable, "-m", "silodiff.cli.main"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def median_seconds(cmd: list[str], runs: int = RUNS) -> tuple[float, list[float], float]:
    """(median wall seconds, every run's wall seconds, median CPU seconds) of ``runs`` fresh processes."""
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up: file cache
    times, cpu = [], []
    for _ in range(runs):
        c0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)
    return statistics.median(times), [round(t, 3) for t in times], statistics.median(cpu)


def main() -> None:
    root = scratch_dir("silodiff-bench-cli-")
    store = root / "st"
    subprocess.run([*silodiff_cmd(), "data", "ingest", "--store", str(store), "--limit", "200", "--assign", "random:4"],
                   check=True, capture_output=True)
    help_s, help_runs, help_cpu = median_seconds([*silodiff_cmd(), "--help"])
    catalog_s, catalog_runs, catalog_cpu = median_seconds([*silodiff_cmd(), "catalog", "sources", "--store", str(store),
                                                           "--json"])
    python_s, _, python_cpu = median_seconds([sys.executable, "-c", "pass"])
    torch_s, _, torch_cpu = median_seconds([sys.executable, "-c", "import torch"])
    results = {"help_seconds": round(help_s, 3), "catalog_seconds": round(catalog_s, 3),
               "help_cpu_seconds": round(help_cpu, 3), "catalog_cpu_seconds": round(catalog_cpu, 3),
               "help_runs": help_runs, "catalog_runs": catalog_runs,
               "python_startup_seconds": round(python_s, 3), "python_startup_cpu_seconds": round(python_cpu, 3),
               "import_torch_seconds": round(torch_s, 3), "import_torch_cpu_seconds": round(torch_cpu, 3),
               "help_met": help_s <= 0.5, "catalog_met": catalog_s <= 1.0, "runs": RUNS}
    rows = [("silodiff --help: wall / CPU (median of 5)", f"{help_s:.3f} s / {help_cpu:.3f} s",
             f"wall ≤ 0.5 s — {'met' if help_s <= 0.5 else 'NOT met'}"),
            ("silodiff catalog sources --json: wall / CPU (median of 5)", f"{catalog_s:.3f} s / {catalog_cpu:.3f} s",
             f"wall ≤ 1.0 s — {'met' if catalog_s <= 1.0 else 'NOT met'}"),
            ("python -c pass: wall / CPU", f"{python_s:.3f} s / {python_cpu:.3f} s", "the interpreter alone"),
            ("python -c 'import torch': wall / CPU", f"{torch_s:.3f} s / {torch_cpu:.3f} s",
             "what each command paid when silodiff imported torch eagerly")]
    notes = ["Wall clock of fresh processes after one warm-up run; the machine's load is recorded above.",
             "Neither command imports torch, diffusers or fastapi (tests/cli/test_cli_conventions.py checks it)."]
    write_results("cli-latency", results, rows, notes)


if __name__ == "__main__":
    main()
