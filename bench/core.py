"""Core benchmark (issue 2): composition quality vs the paragon, sampling cost,
training-loop overhead and the demo's wall time, on the embedded digits data.

    python bench/core.py [--quick] [--epochs E] [--seeds 3] [--demo] [--budget steps|epochs]

Not a quality claim at equal compute: with ``--budget steps`` the K compartments together get K× the
paragon's compute, and the FLD reference is the training set.  The composition-vs-paragon claim lives in
``bench/operating_point.py`` (equal total compute, held-out references and FLD net, 3 training seeds).

Training budget (``--budget``): ``steps`` (default) gives every model, each
compartment and the paragon, the same number of optimizer steps (a compartment
of n/K images trains K·E epochs; K compartments train in parallel in the
paragon's wall time on K workers); ``epochs`` gives every model E epochs, so the
K compartments together cost what the paragon costs (results go to
``core-equal-epochs.*``).

Figures (bench/results/core.json + core.md):
- fld_paragon, fld_composed[K][router] (mean ± std over seeds), fld_ratio_best (best K=8 / paragon)
- class_accuracy of conditional samples
- sampling_cost_ratio_dense / _gated (K=8 over the paragon, same images and steps) and the FLD change gating causes
- train_throughput_ratio (silodiff's loop / a bare PyTorch loop, same model and batches)
- demo_seconds (`silodiff demo`, install excluded)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, scratch_dir, write_results  # noqa: E402

import silodiff as sd  # noqa: E402
from silodiff.sampling import balanced_labels  # noqa: E402
from silodiff.training import TrainConfig, new_state, noise_scheduler, train  # noqa: E402

ROUTERS = ("classifier", "trajectory", "uniform")


def build_store(root: Path, k: int, config: TrainConfig, router_epochs: int, budget: str) -> sd.Store:
    store = sd.Store(root / f"k{k}")
    if budget == "steps":  # a compartment holds ≈ 1/K of the data: K× the epochs is the paragon's step count
        config = dataclasses.replace(config, epochs=config.epochs * k)
    store.ingest(sd.load_digits(f"random:{k}"), "digits")
    sd.plan_compartments(store, by="source", slices=1)
    sd.train_compartments(store, config=config, backend="process", progress=False)
    sd.train_router(store, config=TrainConfig(epochs=router_epochs), progress=False)
    return store


def timed_generate(model, n, steps, seed):
    t0 = time.perf_counter()
    images, _ = sd.generate(model, n, labels=balanced_labels(n, 10), steps=steps, seed=seed)
    return images, time.perf_counter() - t0


def throughput_ratio(steps: int, repeats: int) -> dict:
    """Images/s of ``train`` over a bare loop (forward, loss, backward, AdamW) on the same model and batches."""
    data = sd.load_digits("single")
    config = TrainConfig(epochs=1, batch_size=64)
    scheduler = noise_scheduler()
    x_all = data.x()

    def bare(same_work: bool) -> float:
        """A hand-written loop; ``same_work`` adds what silodiff's loop also does (clipping, EMA)."""
        torch.manual_seed(0)
        model = sd.nn.MLPDenoiser()
        ema = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for step in range(steps):
            rows = torch.randint(0, len(data), (config.batch_size,), generator=gen)
            x0, y = x_all[rows], data.labels[rows]
            t = torch.randint(0, 1000, (len(rows),), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            loss = (model(scheduler.add_noise(x0, noise, t), t, y) - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if same_work:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            if same_work:
                with torch.no_grad():
                    decay = min(config.ema_decay, (2 + step) / (11 + step))
                    for e, p in zip(ema, model.parameters()):
                        e.lerp_(p, 1 - decay)
        return steps * config.batch_size / (time.perf_counter() - t0)

    def ours() -> float:
        torch.manual_seed(0)
        state = new_state(sd.nn.MLPDenoiser(), config)
        t0 = time.perf_counter()
        train(state, data, config, steps=steps, progress=False)
        return steps * config.batch_size / (time.perf_counter() - t0)

    same, minimal, ours_ips = [], [], []
    for _ in range(repeats):  # interleaved, so drifting machine load hits all alike
        same.append(bare(True))
        minimal.append(bare(False))
        ours_ips.append(ours())
    ratios = [o / b for o, b in zip(ours_ips, same)]
    ratios_minimal = [o / b for o, b in zip(ours_ips, minimal)]
    return {"ratio_median": statistics.median(ratios), "ratios": ratios,
            "ratio_vs_minimal_median": statistics.median(ratios_minimal), "ratios_vs_minimal": ratios_minimal,
            "bare_same_work_images_per_s": statistics.median(same), "bare_minimal_images_per_s": statistics.median(minimal),
            "silodiff_images_per_s": statistics.median(ours_ips)}


def quality_and_cost(args, config: TrainConfig, root: Path) -> dict:
    """Sections 1–3: train the stores, FLD per model and router, sampling cost (the long part)."""
    results: dict = {}
    # 1. stores with K = 4 and 8 compartments (random sources), one paragon on all data
    t0 = time.perf_counter()
    stores = {k: build_store(root, k, config, max(10, args.epochs // 4), args.budget) for k in (4, 8)}
    results["train_compartments_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    sd.train_paragon(stores[8], config=config, slices=1, progress=False)
    results["train_paragon_seconds"] = round(time.perf_counter() - t0, 1)
    net = sd.feature_net(stores[8], progress=False)
    real = stores[8].dataset().x()
    labels = balanced_labels(args.n, 10)
    seeds = list(range(1, args.seeds + 1))

    # 2. FLD floor: real data against itself (a held-out half), the best any model can hope for
    half = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[: len(real) // 2]
    results["fld_real_half_vs_all"] = sd.fld(net, real[half], real)

    def quality(model) -> dict:
        flds, accs = [], []
        for seed in seeds:
            images, _ = sd.generate(model, args.n, labels=labels, steps=args.steps, seed=seed)
            flds.append(sd.fld(net, images, real))
            accs.append(sd.class_accuracy(net, images, labels))
        return {"fld_mean": statistics.mean(flds), "fld_std": statistics.stdev(flds) if len(flds) > 1 else 0.0,
                "flds": flds, "class_accuracy": statistics.mean(accs)}

    paragon = sd.load_denoiser(stores[8], "paragon")
    results["paragon"] = quality(paragon)
    results["composed"] = {}
    for k, store in stores.items():
        for router in ROUTERS:
            results["composed"][f"K{k}/{router}"] = quality(sd.compose(store, router=router))
            print(f"K={k} {router}: {results['composed'][f'K{k}/{router}']}", flush=True)
    best_key = min((key for key in results["composed"] if key.startswith("K8/")), key=lambda key: results["composed"][key]["fld_mean"])
    results["fld_ratio_best"] = results["composed"][best_key]["fld_mean"] / results["paragon"]["fld_mean"]
    results["fld_ratio_best_router"] = best_key

    # 3. sampling cost, K = 8 over the paragon: same images, steps and noise
    n_cost = min(args.n, 500)
    _, t_paragon = timed_generate(paragon, n_cost, args.steps, 0)
    cost = {"paragon_seconds": t_paragon}
    for router in ("classifier", "trajectory"):
        dense_images, t_dense = timed_generate(sd.compose(stores[8], router=router), n_cost, args.steps, 0)
        fld_dense = sd.fld(net, dense_images, real)
        cost[router] = {"dense_ratio": t_dense / t_paragon, "fld_dense": fld_dense, "gated": {}}
        for gate in [float(g) for g in args.gates.split(",")]:
            model = sd.compose(stores[8], router=router, gate=gate)
            images, t_gated = timed_generate(model, n_cost, args.steps, 0)
            f = sd.fld(net, images, real)
            cost[router]["gated"][str(gate)] = {
                "ratio": t_gated / t_paragon, "fld": f, "fld_change": f / fld_dense - 1,
                "member_rows_fraction": float(model.calls.sum()) / (n_cost * args.steps * 8),
            }
    results["sampling_cost"] = cost
    ok = [(r, g, v) for r in ("classifier", "trajectory") for g, v in cost[r]["gated"].items() if v["fld_change"] <= 0.02]
    best_gated = min(ok, key=lambda x: x[2]["ratio"]) if ok else None
    results["sampling_cost_ratio_dense"] = cost["classifier"]["dense_ratio"]
    results["sampling_cost_ratio_gated"] = best_gated[2]["ratio"] if best_gated else None
    results["sampling_cost_gated_choice"] = f"{best_gated[0]} router, gate {best_gated[1]}" if best_gated else "no gate kept FLD within 2%"

    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the temporary stores (printed) for inspection")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=1000, help="images per FLD evaluation")
    p.add_argument("--steps", type=int, default=100, help="sampling steps")
    p.add_argument("--gates", default="0.05,0.1,0.2,0.3")
    p.add_argument("--demo", action="store_true", help="also time `silodiff demo`")
    p.add_argument("--budget", choices=("steps", "epochs"), default="steps",
                   help="same optimizer steps for every model (default) or same epochs (compartments cost 1/K each)")
    p.add_argument("--only", default="", help="re-measure only these sections (throughput,demo) and keep the rest "
                   "of bench/results/core.json")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.n, args.steps = 20, 2, 200, 30
    torch.set_num_threads(2)
    config = TrainConfig(epochs=args.epochs)
    root = scratch_dir("silodiff-bench-core-", args.keep)
    only = {x for x in args.only.split(",") if x}
    name = "core" if args.budget == "steps" else "core-equal-epochs"
    if only:
        results = json.loads((RESULTS / f"{name}.json").read_text())["results"]
        results.setdefault("remeasured", {})
    else:
        results = {"settings": vars(args), **quality_and_cost(args, config, root)}

    # 4. training-loop overhead
    if not only or "throughput" in only:
        results["train_throughput"] = throughput_ratio(steps=150 if args.quick else 400, repeats=3 if args.quick else 5)
        if only:
            results["remeasured"]["throughput"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    # 5. the demo's wall time (install excluded)
    if args.demo or "demo" in only:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "silodiff", "demo", "--out", str(root / "demo")], check=True,
                       stdout=subprocess.DEVNULL)
        results["demo_seconds"] = round(time.perf_counter() - t0, 1)
        if only:
            results["remeasured"]["demo"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    comp, best_key, cost = results["composed"], results["fld_ratio_best_router"], results["sampling_cost"]
    rows = [("fld_paragon", f"{results['paragon']['fld_mean']:.2f} ± {results['paragon']['fld_std']:.2f}", "FLD, mean ± std over seeds"),
            ("fld_real_half_vs_all", results["fld_real_half_vs_all"], "noise floor: real images vs real images")]
    rows += [(f"fld_composed {key}", f"{v['fld_mean']:.2f} ± {v['fld_std']:.2f}", f"class accuracy {v['class_accuracy']:.3f}") for key, v in comp.items()]
    rows += [("fld_ratio_best", results["fld_ratio_best"], f"{best_key}; NOT a claim: the K compartments get K× the paragon's compute and the reference is the "
             "training set (the equal-compute ratio is in operating_point.json)"),
             ("class_accuracy paragon", results["paragon"]["class_accuracy"], ""),
             ("sampling_cost_ratio_dense", results["sampling_cost_ratio_dense"], "K=8 classifier router / paragon"),
             ("sampling_cost_ratio_gated", results["sampling_cost_ratio_gated"],
              f"{results['sampling_cost_gated_choice']}; target ≤ 3.0 with FLD within 2% of dense")]
    for r in ("classifier", "trajectory"):
        for g, v in cost[r]["gated"].items():
            rows.append((f"gated {r} gate={g}", f"ratio {v['ratio']:.2f}, FLD change {100 * v['fld_change']:+.1f}%",
                         f"member rows evaluated {100 * v['member_rows_fraction']:.0f}% of dense"))
    tp = results["train_throughput"]
    rows.append(("train_throughput_ratio", tp["ratio_median"],
                 f"vs a hand-written loop doing the same math (AdamW, clipping, EMA); median of interleaved runs "
                 f"{['%.3f' % r for r in tp['ratios']]}; target ≥ 0.95"))
    if "ratio_vs_minimal_median" in tp:
        rows.append(("train_throughput_ratio_vs_minimal", tp["ratio_vs_minimal_median"],
                     "vs a minimal loop without clipping and EMA (what those two cost)"))
    if "demo_seconds" in results:
        rows.append(("demo_seconds", results["demo_seconds"], "the short default `silodiff demo`; target ≤ 180"))
    cfg = results["settings"]
    budget = (f"{cfg['epochs']} epochs for every model (the paragon does K× the steps of a compartment)"
              if cfg.get("budget", "epochs") == "epochs" else
              f"the same optimizer steps for every model: the paragon {cfg['epochs']} epochs, a compartment K × {cfg['epochs']}")
    notes = [f"digits (1,797 images), sources random:K, one compartment per source, 1 slice, {budget}; DDPM sampler, {cfg['steps']} steps, "
             f"{cfg['n']} class-balanced images per FLD, seeds {list(range(1, cfg['seeds'] + 1))}.",
             "FLD is the Fréchet distance in silodiff's own CNN features (not Inception), against all 1,797 real images.",
             "Sampling cost: wall time for the same images, steps and noise; gating threshold on the router weights, "
             "each row's top compartment always kept. 'FLD within 2% of dense' is read as: gated FLD ≤ 1.02 × dense FLD "
             "(lower FLD is better, so a gate that improves FLD qualifies)."]
    for section, when in results.get("remeasured", {}).items():
        notes.append(f"`{section}` re-measured on {when} with `--only` (the rest comes from the full run above).")
    write_results(name, results, rows, notes)


if __name__ == "__main__":
    main()
