"""The main job, end to end on the embedded digits data (``silodiff demo`` / ``make demo``).

Steps: ingest digits from a public source (a random quarter) and four owners
who each hold a few classes (non-IID, as owners' data usually is) → train one
compartment per source (SISA slices, process pool) and the paragon → train the
router → sample from the composition with the plan's routers, routed beside
uniform averaging → the same owners as LoRA adapters on a base trained on the
public source → FLD and class accuracy for every model → per-image compartment
weights → then each feature's own step (memorisation defences, attribution,
two users served over HTTP, the audit, forgetting) → ``report.md`` with
pictures.  How much of each the run does is its ``DemoPlan`` (``plan.py``).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..audit import feature_net
from ..composition import compose, load_denoiser, train_router
from ..data import SampleSet, load_digits
from ..jobs import plan_compartments, train_compartments, train_paragon
from ..sampling import WeightRecorder, generate
from ..store import Store
from ..training import TrainConfig
from . import attribution, audit, defences, forgetting, ray_replay, rights
from .adapters import base_and_adapters
from .plan import SHORT, DemoPlan
from .quality import QualityTable
from .report import demo_markdown


# Feature steps, in order: each module's ``demo_step(store, out, plan) -> str`` returns a
# Markdown section. Forgetting comes last because it changes the store.
FEATURE_STEPS = (
    ("memorisation defences", defences),
    ("attribution", attribution),
    ("service", rights),
    ("audit", audit),
    ("forgetting", forgetting),
)
OPTIONAL_STEPS = {"ray": ("scale-out on Ray", ray_replay)}
OWNER_CLASSES = ((0, 1, 2), (3, 4), (5, 6, 7), (8, 9))  # non-IID owners: each holds a few digits
PUBLIC_SHARE = 0.25


def demo_data() -> SampleSet:
    """Digits with a public source (a random quarter) and four owners holding disjoint classes."""
    data = load_digits("single:public")
    public = torch.rand(len(data), generator=torch.Generator().manual_seed(0)) < PUBLIC_SHARE
    owner = {y: f"owner-{k}" for k, classes in enumerate(OWNER_CLASSES) for y in classes}
    sources = ["public" if p else owner[int(y)] for p, y in zip(public.tolist(), data.labels.tolist())]
    return SampleSet(data.pixels, data.labels, data.sample_ids, sources)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo(
    out: str | Path = "demo-out", *, plan: DemoPlan = SHORT, backend: str = "process", extra: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
) -> Path:
    """Run the demo into ``out`` (recreated) and return the path of ``report.md``.

    ``plan``: what to run and how long (``demo_plan()``: the short default; ``FULL``, ``QUICK``).
    ``extra`` adds optional steps (``ray``); ``skip`` leaves out feature steps by name.
    """
    from ..viz import save_grid, save_weight_bars

    t_start = time.perf_counter()
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    store = Store(out / "store")
    # each router epoch trains every sample twice (its label and the null label), and a forget retrains the router
    # whole: the plan gives the router about an eighth of the compartments' epochs
    router_config = TrainConfig(epochs=plan.router_epochs)
    steps = plan.steps  # ancestral DDPM steps per sample (full run: 50, as bench/operating_point.py samples digits)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs) -> Any:
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 1)
        _log(f"{name}: {timings[name]} s")
        return result

    # 1. data: a public source and four non-IID owners
    data = demo_data()
    store.ingest(data, "digits")
    sources = store.catalog.sources()
    _log(f"ingested {len(data)} digits from {len(sources)} sources ({plan.name} plan)")

    # 2. compartments (2 slices each) on a process pool, the paragon in a process of its own beside them (single-
    # threaded trainers use the cores better than one trainer with two threads), then the router
    plan_compartments(store, by="source", slices=2)
    config = TrainConfig(epochs=plan.epochs)
    with ThreadPoolExecutor(1) as side:  # the side thread waits on its worker, with a catalog connection of its own
        paragon = side.submit(train_paragon, Store(store.root), config=config, slices=2, progress=False,
                              backend=backend)
        timed("train compartments", train_compartments, store, config=config, backend=backend, progress=False)
        timed("train paragon (beside the compartments; the wait after them)", paragon.result)
    timed("train router", train_router, store, config=router_config, progress=False)
    net = timed("train FLD network", feature_net, store, epochs=plan.fld_epochs, progress=False)

    # 3. quality of every model on the same labels and noise
    table = QualityTable(net, store.dataset().x(), out, n=plan.n_eval, steps=steps)
    models = {"paragon": load_denoiser(store, "paragon")}
    for router in plan.routers:
        models[f"composed/{router}"] = load_denoiser(store, "composed", router=router)
    timed("sample and score paragon and composed", lambda: [table.add(name, models[name]) for name in models])
    # 3b. the same owners as LoRA adapters on a base trained on the public source (a store of its own)
    if plan.lora_rows:
        lora = timed("base + LoRA adapters", base_and_adapters, out / "store-lora", data, config, backend,
                     router_config if "classifier" in plan.lora_rows else None)  # the uniform router needs no training
        for row in plan.lora_rows:  # a router, or soup: the same adapters averaged into one model
            model = compose(lora, combine="soup") if row == "soup" else compose(lora, router=row, with_base=True)
            models[f"base+lora/{row}"] = model
        timed("sample and score base + LoRA",
              lambda: [table.add(f"base+lora/{row}", models[f"base+lora/{row}"]) for row in plan.lora_rows])
    # 3c. unconditional samples: no label says which owner to ask, so only the router can tell
    timed("sample and score unconditional",
          lambda: [table.add(name, models[name], conditional=False) for name in plan.unconditional])

    # 4. which compartment each image drew on (classifier router weights along the trajectory)
    composed = models["composed/classifier"]
    recorder = WeightRecorder()
    few, few_labels = timed("per-image weights", generate, composed, 6, labels=torch.arange(6), steps=steps, seed=7,
                            callback=recorder)
    mean_w, last_w = recorder.result()
    bars = save_weight_bars(mean_w, composed.names, out / "weights.png", title="mean router weight per image")
    save_grid(few, out / "weights-images.png", nrow=6)

    # 5. every feature's own step, on the same store
    sections = []
    feature_steps = [st for st in FEATURE_STEPS if st[0] in plan.features and st[0] not in skip]
    feature_steps += [OPTIONAL_STEPS[e] for e in extra]
    for title, module in feature_steps:
        sections.append(timed(title, module.demo_step, store, out, plan))

    timings["total"] = round(time.perf_counter() - t_start, 1)
    summary = {"plan": plan.name, "sources": sources, "quality": table.rows, "timings_s": timings,
               "mean_weights": mean_w.round(3).tolist(), "compartments": composed.names,
               "chain_ok": store.catalog.verify_chain()[0]}
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    report = out / "report.md"
    report.write_text(demo_markdown(summary, table.grids, bars, sections))
    _log(f"done in {timings['total']} s; report at {report}")
    return report
