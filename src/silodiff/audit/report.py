"""The audit report: how much a served model copies and leaks (METHODS.md §6).

``run_audit(store, out, model=…)`` writes one folder:
  1. ``samples.png``: class-balanced generations of the served model;
  2. memorisation of those generations against the model's own training set
     (its lineage): NN ratio, IET-AGC ratio table, feature-cosine replicate rate;
     ``memorised.png`` (the most memorised generations beside their nearest
     training images) and ``ratio-hist.png``;
  3. membership inference (loss, PIA, SecMI-stat over their t grids) on a
     balanced member / non-member split from the catalog (``membership.py``);
     ``roc.png``;
  4. ``report.json`` (the figures), ``details.json`` (per generated image and per
     sample id) and ``report.md``.
``run_audits`` audits several models into sub-folders and writes a comparison.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import ChunkedSamples, SampleSet, load_dataset, to_unit_range
from ..devices import resolve_device
from ..errors import SilodiffError
from ..sampling import balanced_labels, generate
from ..store import Store
from ..store.lineage import trained_compartments
from .frechet import feature_net as store_feature_net
from .membership import membership_split, served_model, training_set
from .memorization import MemorizationAuditor
from .mia import ATTACKS, make_attack, roc_points

COSINE_FEATURES = ("pixels", "fld")


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(f"[audit] {msg}", flush=True)


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _holdout(holdout: SampleSet | str | None) -> SampleSet | None:
    if holdout is None or isinstance(holdout, SampleSet):
        return holdout
    return load_dataset(holdout, sources="single:holdout")


def run_audit(
    store: Store,
    out: str | Path,
    model: str = "composed",
    *,
    router: str = "classifier",
    gate: float = 0.0,
    n: int = 1000,
    steps: int = 100,
    sampler: str = "ddpm",
    seed: int = 0,
    holdout: SampleSet | str | None = None,
    mia_n: int = 500,
    attacks: tuple[str, ...] = tuple(ATTACKS),
    timesteps: dict[str, tuple[int, ...]] | None = None,
    cosine_threshold: float = 0.97,
    cosine_features: str = "pixels",
    top: int = 10,
    denoiser: torch.nn.Module | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Audit one served model (``composed``, ``paragon``, a compartment or a hash); returns ``out/report.md``.

    ``device`` (auto | cpu | cuda[:N] | mps; default auto) runs the generations, the feature net,
    the nearest-neighbour searches and the membership attacks.

    ``denoiser`` serves a wrapper of that model instead (e.g. a guided sampler's denoiser) while the
    lineage, hence members and the memorisation reference, still come from ``model``'s artifacts.
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if not attacks:
        raise SilodiffError(f"give at least one attack: {', '.join(ATTACKS)}")
    if unknown:
        raise SilodiffError(f"unknown attack {unknown[0]!r}: use {', '.join(ATTACKS)}")
    if cosine_features not in COSINE_FEATURES:
        raise SilodiffError(f"cosine features must be one of {COSINE_FEATURES}, not {cosine_features!r}")
    if n < 2 or mia_n < 1:
        raise SilodiffError("need n ≥ 2 generated images and mia_n ≥ 1")
    dev = resolve_device(device or "auto")
    from .plots import save_pairs, save_ratio_hist, save_roc
    from ..viz import save_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    options = dict(router=router, gate=gate) if model == "composed" else {}
    served = served_model(store, model, **options)
    if denoiser is not None:
        served.model = denoiser
    served.model = served.model.to(dev)
    train = training_set(store, served)
    _log(f"{model}: {len(train)} training images in its lineage ({len(served.artifacts)} artifact(s))", progress)

    # 1. generations
    t0 = time.perf_counter()
    labels = balanced_labels(n, served.model.num_classes) if served.model.num_classes else None
    images, _ = generate(served.model, n, labels=labels, sampler=sampler, steps=steps, seed=seed, progress=progress)
    timings["generate"] = time.perf_counter() - t0
    save_grid(images[:100], out / "samples.png", nrow=10, title=f"{model} ({sampler}, {steps} steps)")

    # 2. memorisation against the model's own training set
    t0 = time.perf_counter()
    net = store_feature_net(store, progress=progress, device=dev) if cosine_features == "fld" else None
    # a large training set stays in the store's chunks and is streamed by the search
    auditor = MemorizationAuditor(cosine_threshold, net, progress=progress, device=dev).fit(
        train if isinstance(train, ChunkedSamples) else train.x())
    mem = auditor.score(images)
    memorisation = auditor.summarize(mem)
    timings["memorisation"] = time.perf_counter() - t0
    worst = np.argsort(mem["nn_ratio"], kind="stable")[: min(top, n)]
    save_pairs(images[worst], to_unit_range(train.pixels_at(mem["nn_index"][worst])), mem["nn_ratio"][worst],
               out / "memorised.png", title=f"{model}: most memorised generations (NN ratio below)")
    save_ratio_hist(mem["nn_ratio"], mem["carlini_ratio"], out / "ratio-hist.png", title=model)
    _log(f"memorised (NN ratio < 1/3): {memorisation['nn_ratio_memorised']:.1%}, "
         f"replicates (cos > {cosine_threshold}): {memorisation['replicate_rate']:.1%}", progress)

    # 3. membership inference on a balanced split from the catalog
    t0 = time.perf_counter()
    mia: dict[str, Any] = {}
    per_sample: dict[str, Any] = {}
    try:
        members, nonmembers, split = membership_split(store, served, _holdout(holdout), n=mia_n, seed=seed)
    except SilodiffError as exc:
        split, members = {"skipped": str(exc)}, None
        _log(f"membership inference skipped: {exc}", progress)
    if members is not None:
        curves = {}
        for name in attacks:
            kwargs = {"timesteps": (timesteps or {}).get(name), "random_state": seed, "progress": progress}
            result = make_attack(name, **kwargs).fit(served.model).evaluate(members, nonmembers)
            s_in, s_out = result.pop("scores_members"), result.pop("scores_nonmembers")
            fpr, tpr = roc_points(s_in, s_out)
            curves[name] = {"fpr": fpr, "tpr": tpr, "auc": result["auc"], "best_t": result["best_t"]}
            mia[name] = result
            per_sample[name] = {"t": result["best_t"], "members": dict(zip(members.sample_ids, s_in.tolist())),
                                "nonmembers": dict(zip(nonmembers.sample_ids, s_out.tolist()))}
            _log(f"{name}: AUC {result['auc']:.3f}, TPR@1%FPR {result['tpr_at_1pct_fpr']:.3f} (best t = {result['best_t']})",
                 progress)
        save_roc(curves, out / "roc.png", title=f"{model}: membership inference ({split['n_per_side']} per side)")
    timings["membership"] = time.perf_counter() - t0

    # 4. files
    summary = {
        "model": model, **options, "artifacts": served.artifacts, "training_images": len(train),
        "generation": {"n": n, "sampler": sampler, "steps": steps, "seed": seed, "class_balanced": labels is not None},
        "memorisation": memorisation, "membership_split": split, "membership": mia,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    _write(out / "report.json", json.dumps(summary, indent=2))
    train_ids = train.sample_ids
    details = {"generated": [
        {"index": i, "label": None if labels is None else int(labels[i]), "nn_sample_id": train_ids[int(j)],
         "nn_distance": float(d), "nn_ratio": float(r), "carlini_ratio": float(c), "cosine": float(cs),
         "cosine_sample_id": train_ids[int(ci)]}
        for i, (j, d, r, c, cs, ci) in enumerate(zip(mem["nn_index"], mem["nn_distance"], mem["nn_ratio"],
                                                     mem["carlini_ratio"], mem["cosine"], mem["cosine_index"]))],
        "membership_scores": per_sample}
    _write(out / "details.json", json.dumps(details))
    return _write(out / "report.md", markdown(summary))


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def markdown(s: dict[str, Any], heading: str = "#") -> str:
    """The Markdown of one model's audit (``s`` is its ``report.json``)."""
    m, g = s["memorisation"], s["generation"]
    lines = [f"{heading} Audit of `{s['model']}`", "",
             f"Trained on {s['training_images']} images (its catalog lineage; artifacts: "
             + ", ".join(f"{k} `{v[:12]}`" for k, v in s["artifacts"].items()) + ").",
             f"Generated {g['n']} {'class-balanced ' if g['class_balanced'] else ''}images ({g['sampler']}, {g['steps']} steps, "
             f"seed {g['seed']}).", "", "![samples](samples.png)", "",
             f"{heading}# Memorisation", "",
             "| criterion | memorised fraction |", "| --- | --- |",
             f"| NN ratio d(x̂,NN1)/d(x̂,NN2) < {m['nn_ratio_threshold']:.3g} (Gu et al. 2023) | {_pct(m['nn_ratio_memorised'])} |",
             f"| feature cosine > {m['cosine_threshold']} ({m['cosine_features']} features; replicate rate) | "
             f"{_pct(m['replicate_rate'])} |", "",
             f"IET-AGC ratio d²(x̂,NN1) / mean d²(x̂,NN1..{m['carlini_k']}): fraction of generations below each threshold",
             "", "| " + " | ".join(m["carlini_below"]) + " |", "| --- " * len(m["carlini_below"]) + "|",
             "| " + " | ".join(_pct(v) for v in m["carlini_below"].values()) + " |", "",
             f"Median NN ratio {m['median_nn_ratio']:.3f}; median pixel distance to the nearest training image "
             f"{m['median_nn_distance']:.3f} (pixels in [0, 1]).", "",
             "Most memorised generations (top) beside their nearest training images (bottom):", "",
             "![memorised](memorised.png)", "", "![ratio histogram](ratio-hist.png)", "",
             f"{heading}# Membership inference", ""]
    split = s["membership_split"]
    if "skipped" in split:
        lines += [f"Skipped: {split['skipped']}.", ""]
    else:
        lines += [f"{split['n_per_side']} members (from the lineage) vs {split['n_per_side']} non-members "
                  f"({split['nonmembers_in_store']} available in the store outside the lineage, "
                  f"{split['nonmembers_from_holdout']} from the holdout set). Higher score = 'member'; "
                  "best t chosen on the same data (optimistic, as in the papers).", "",
                  "| attack | best t | AUC | best accuracy | TPR @ 1% FPR | AUC per t |", "| --- | --- | --- | --- | --- | --- |"]
        for name, r in s["membership"].items():
            per_t = ", ".join(f"{t}: {v['auc']:.3f}" for t, v in r["per_t"].items())
            lines.append(f"| {name} | {r['best_t']} | {r['auc']:.3f} | {r['best_accuracy']:.3f} | "
                         f"{r['tpr_at_1pct_fpr']:.3f} | {per_t} |")
        lines += ["", "![roc](roc.png)", ""]
    lines += [f"Timings (s): " + ", ".join(f"{k} {v}" for k, v in s["timings_s"].items()), ""]
    return "\n".join(lines)


def _folder(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", model)


def comparison(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: memorised fractions and each attack's AUC / TPR@1%FPR."""
    rows = []
    for model, s in summaries.items():
        m = s["memorisation"]
        row = {"model": model, "training_images": s["training_images"], "nn_ratio_memorised": m["nn_ratio_memorised"],
               "carlini_below_0.30": m["carlini_below"].get("0.30"), "replicate_rate": m["replicate_rate"]}
        for name, r in s["membership"].items():
            row[f"{name}_auc"] = r["auc"]
            row[f"{name}_tpr_at_1pct_fpr"] = r["tpr_at_1pct_fpr"]
        rows.append(row)
    return rows


def run_audits(store: Store, out: str | Path, models: tuple[str, ...] = ("paragon", "composed"), **kwargs: Any) -> Path:
    """``run_audit`` for each model into ``out/<model>/``, and ``out/report.md`` comparing them."""
    if not models:
        raise SilodiffError("give a model: paragon, composed, a compartment or a hash")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for model in models:
        run_audit(store, out / _folder(model), model, **kwargs)
        summaries[model] = json.loads((out / _folder(model) / "report.json").read_text())
    rows = comparison(summaries)
    _write(out / "report.json", json.dumps({"models": summaries, "comparison": rows}, indent=2))
    return _write(out / "report.md", comparison_markdown(rows, summaries))


def comparison_markdown(rows: list[dict[str, Any]], summaries: dict[str, dict[str, Any]], heading: str = "#",
                        prefix: str = "") -> str:
    """Markdown of ``comparison`` rows, linking each model's own report (``prefix`` = their folder's path)."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "model"))  # first-seen order
    fmt = lambda v: "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"{heading} Audit: memorisation and membership inference", "",
             "| model | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
    lines += [f"| {r['model']} | " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    lines += ["", "Memorised fractions: NN ratio < 1/3, IET-AGC ratio < 0.30, feature cosine > threshold. "
              "MIA: AUC and TPR at 1% FPR at each attack's best t (0.5 / 0.01 = no leak).", ""]
    for model, s in summaries.items():
        sub = f"{prefix}{_folder(model)}"
        line = f"- [{model}]({sub}/report.md): ![{model} memorised]({sub}/memorised.png)"
        skipped = s["membership_split"].get("skipped")
        lines.append(line + (f" — membership inference skipped: {skipped}" if skipped else f" ![{model} roc]({sub}/roc.png)"))
    return "\n".join(lines) + "\n"

