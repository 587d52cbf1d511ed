"""The demo's ``report.md``: data, quality table, samples, per-image weights, each step's section, timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def demo_markdown(s: dict[str, Any], grids: dict[str, Path], bars: Path, sections: list[str]) -> str:
    lines = ["# silodiff demo report", "",
             "Data: scikit-learn digits; a public source (a random quarter) and four owners who each hold a few "
             "classes (non-IID); one compartment per source.", "",
             "| source | samples |", "| --- | --- |"]
    lines += [f"| {r['name']} | {r['n']} |" for r in s["sources"]]
    lines += ["", "## Quality (FLD: Fréchet distance in silodiff's own CNN features; lower is better)", "",
              "| model | FLD | class accuracy | sampling s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['fld']} | {r['class_accuracy'] if r['class_accuracy'] is not None else '—'} | "
              f"{r['sampling_s']} |" for r in s["quality"]]
    lines += ["", "`composed/*`: the compartments trained from scratch, mixed by the learned router (classifier), the "
              "trajectory filter, or uniform averaging. `base+lora/*`: a base trained on the public source, each owner a "
              "LoRA adapter on it, the base a member of the mixture; `base+lora/soup`: the same adapters averaged into "
              "one model in weight space (one model to sample, no router). The uniform router weighs each member by its "
              "share of the requested label (the posterior before any image evidence), so for a class-conditional sample it "
              "already asks only the owners who hold that class. Without a label (unconditional rows), only the router "
              "can tell: uniform weighting then averages owners who hold different digits, and the learned router "
              "picks the ones whose data the image looks like.",
              "", "## Samples: routed beside uniform averaging", "", "| routed (classifier) | uniform |", "| --- | --- |"]
    pairs = [(f"{m}/classifier{u}", f"{m}/uniform{u}") for u in (" (unconditional)", "") for m in ("composed", "base+lora")]
    for routed, uniform in pairs:
        if routed in grids and uniform in grids:
            lines.append(f"| ![{routed}]({grids[routed].name}) | ![{uniform}]({grids[uniform].name}) |")
    lines += ["", "Every model:", ""]
    lines += [f"**{name}**\n\n![{name}]({p.name})\n" for name, p in grids.items()]
    lines += ["## Which compartment each image drew on", "", "![weights images](weights-images.png)", "",
              f"![weights]({bars.name})", "", "| image | " + " | ".join(s["compartments"]) + " |",
              "| --- " * (len(s["compartments"]) + 1) + "|"]
    lines += [f"| {i} | " + " | ".join(f"{w:.2f}" for w in row) + " |" for i, row in enumerate(s["mean_weights"])]
    for section in sections:
        lines += ["", section.strip()]
    lines += ["", "## Timings (s)", "", "| step | s |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in s["timings_s"].items()]
    lines += ["", f"Event log hash chain verifies: {s['chain_ok']}", ""]
    return "\n".join(lines)
