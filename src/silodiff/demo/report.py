"""The demo's ``report.md``: data, quality table, samples, per-image weights, each step's section, timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _legend(models: set[str]) -> str:
    """What the quality rows are, naming only the rows this run measured."""
    routers = [r for r in ("classifier", "trajectory", "uniform") if f"composed/{r}" in models]
    names = {"classifier": "the learned router (classifier)", "trajectory": "the trajectory filter",
             "uniform": "uniform averaging"}
    text = "`composed/*`: the compartments trained from scratch, mixed by " + _either([names[r] for r in routers]) + "."
    if any(m.startswith("base+lora/") for m in models):
        text += (" `base+lora/*`: a base trained on the public source, each owner a LoRA adapter on it, the base a "
                 "member of the mixture.")
    if "base+lora/soup" in models:
        text += (" `base+lora/soup`: the same adapters averaged into one model in weight space (one model to sample, "
                 "no router).")
    if "composed/uniform" in models:
        text += (" The uniform router weighs each member by its share of the requested label (the posterior before "
                 "any image evidence), so for a class-conditional sample it already asks only the owners who hold that "
                 "class. Without a label (unconditional rows), only the router can tell: uniform weighting then averages "
                 "owners who hold different digits, and the learned router picks the ones whose data the image looks "
                 "like.")
    return text


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", or " + items[-1]


def demo_markdown(s: dict[str, Any], grids: dict[str, Path], bars: Path, sections: list[str]) -> str:
    """``report.md`` from the run's ``report.json`` (``s``), its sample grids, the weight bars and each step's
    section."""
    lines = ["# silodiff demo report", "",
             "Data: scikit-learn digits; a public source (a random quarter) and four owners who each hold a few "
             "classes (non-IID); one compartment per source.", "",
             f"Plan: {s['plan']} (" + ("`silodiff demo --full`" if s["plan"] == "full" else
                                      "`silodiff demo --full` runs every router, the soup, more defences, audits and "
                                      "forgets on longer schedules") + ").", "",
             "| source | samples |", "| --- | --- |"]
    lines += [f"| {r['name']} | {r['n']} |" for r in s["sources"]]
    lines += ["", "## Quality (FLD: Fréchet distance in silodiff's own CNN features; lower is better)", "",
              "| model | FLD | class accuracy | sampling s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['fld']} | {r['class_accuracy'] if r['class_accuracy'] is not None else '—'} | "
              f"{r['sampling_s']} |" for r in s["quality"]]
    lines += ["", _legend({r["model"].removesuffix(" (unconditional)") for r in s["quality"]}),
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
