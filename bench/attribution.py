"""Attribution benchmark (issue 6): compartment attribution on planted ground truth, encoded-ensemble
unit attribution on planted memorised duplicates, a linear datamodeling score, and the cost.

    python bench/attribution.py [--quick]

Figures (bench/results/attribution.json + attribution.md):
- compartment_top1_accuracy: digits with one compartment per class (``--assign by-class``);
  class-conditional and unconditional samples; the fraction whose top-attributed compartment
  holds the image's class (conditional: its label; unconditional: the class silodiff's FLD CNN
  reads in it), by router weights (mean over the trajectory) and by exact leave-one-out
  (pixel distance), for the composition under each router (trajectory filter, shard classifier).
  Target ≥ 0.95 for both routes.  Also: last-step weights, LOO loss change and the likelihood
  posterior on the saved (uint8) images.
- planted_top1_fraction: a small digit set where a few images are planted as many jittered
  copies (one unit each, so the members that see them memorise them); ensemble generations
  that copy a planted image (nearest-unit ratio < 1/3); rank of the planted unit among all
  units by influence.  Target: top-1 in ≥ 90 %.
- lds: linear datamodeling score (Spearman over retrained α = 0.5 subsets of the units of
  the denoising loss of each generated image vs the sum of its attribution scores over the
  subset, averaged over images) against random scores.
- first_order_rank_agreement: the jvp shortcut against true ablation.
- cost ratios: attribution time / one sampling run of the same images.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results

import silodiff as sd
from silodiff.attribution import (
    UnitInfluence,
    attribute_compartments,
    compartment_posterior,
    first_order_influence,
    load_ensemble,
    rank_agreement,
    train_encoded,
)
from silodiff.attribution.compartments import pixel_distance
from silodiff.attribution.likelihood import loss_grid, timestep_grid
from silodiff.data import SampleSet, to_uint8, to_unit_range
from silodiff.data.dataset import sample_id
from silodiff.jobs import SliceJob, run_jobs
from silodiff.sampling import NoiseTrajectory
from silodiff.training import TrainConfig


def log(msg: str) -> None:
    print(f"[attribution] {msg}", flush=True)


# --------------------------------------------------------------------------- compartments
def compartment_benchmark(root: Path, args) -> tuple[dict, list]:
    store = sd.Store(root / "by-class")
    store.ingest(sd.load_digits("by-class"), "digits")
    sd.plan_compartments(store, by="source", slices=1)
    t0 = time.perf_counter()
    sd.train_compartments(store, config=TrainConfig(epochs=args.epochs), progress=False)
    sd.train_router(store, config=TrainConfig(epochs=args.router_epochs), progress=False)
    net = sd.feature_net(store, progress=False)
    log(f"trained 10 class compartments, router, FLD net in {time.perf_counter() - t0:.0f} s")
    holder = {y: f"class-{y}" for y in range(10)}
    out, rows = {}, []
    for kind, labels in (("conditional", [y % 10 for y in range(args.n)]), ("unconditional", [None] * args.n)):
        out[kind] = {}
        for router in ("trajectory", "classifier"):
            res = attribute_compartments(store, labels=labels, seed=11, router=router, steps=args.steps, grid=args.grid)
            if kind == "conditional":
                truth = np.asarray(labels)
            else:
                with torch.no_grad():
                    truth = net(res.images).argmax(1).numpy()  # the class the FLD CNN reads in each image
            want = np.asarray([res.names.index(holder[int(y)]) for y in truth])
            routes = {
                "router_weights_mean": res.weights_mean.argmax(1),
                "router_weights_last": res.weights_last.argmax(1),
                "loo_distance": res.loo_distance.argmax(1),
                "loo_loss_change": res.loo_loss_change.argmax(1),
            }
            acc = {k: float((v == want).mean()) for k, v in routes.items()}
            if router == "trajectory":  # the likelihood posterior on the saved (uint8) images, no composition involved
                post = [
                    compartment_posterior(store, to_unit_range(to_uint8(x)), label=y, grid=args.grid, draws=2)
                    for x, y in zip(res.images[: args.n_posterior], labels[: args.n_posterior])
                ]
                acc["posterior_on_saved_image"] = float(np.mean([p["top"] == res.names[w] for p, w in zip(post, want)]))
            out[kind][router] = {
                "n": len(labels),
                "accuracy": acc,
                "seconds": res.seconds,
                "loo_label_unsupported_fraction": float(res.label_unsupported[np.arange(len(want)), want].mean()),
                "ground_truth_classes": np.bincount(truth, minlength=10).tolist(),
            }
            log(f"{kind} / {router} router: {acc}")
    for router in ("trajectory", "classifier"):
        for kind in ("conditional", "unconditional"):
            a = out[kind][router]["accuracy"]
            for route, key in (("router weights", "router_weights_mean"), ("leave-one-out", "loo_distance")):
                rows.append(
                    (
                        f"compartment_top1_accuracy {kind} / {router} router / {route}",
                        a[key],
                        f"target ≥ 0.95 → {'met' if a[key] >= 0.95 else 'NOT met'}",
                    )
                )
            rows.append(
                (
                    f"  other routes, {kind} / {router} router",
                    {k: v for k, v in a.items() if k not in ("router_weights_mean", "loo_distance")},
                    f"n = {args.n}"
                    + (f" (posterior: first {args.n_posterior})" if "posterior_on_saved_image" in a else ""),
                )
            )
    for router in ("trajectory", "classifier"):
        s = out["unconditional"][router]["seconds"]
        rows.append(
            (
                f"compartment_attribution_cost_ratio ({router})",
                s["ratio_to_sampling"],
                f"factual + 10 leave-one-out runs + loss grids, over one sampling run ({s['sampling']:.2f} s for {args.n} images)",
            )
        )
    return out, rows


# --------------------------------------------------------------------------- encoded ensemble
def planted_set(n_base: int, planted: int, copies: int, seed: int = 0) -> tuple[SampleSet, dict[str, str], list[int]]:
    """``n_base`` digits plus ``planted`` other digits, each as ``copies`` near-identical copies (±1 on one pixel)."""
    full = sd.load_digits("single")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(full))
    base, extra = order[:n_base], order[n_base:]
    # planted images of distinct classes
    chosen, seen = [], set()
    for i in extra:
        y = int(full.labels[i])
        if y not in seen:
            chosen.append(int(i))
            seen.add(y)
        if len(chosen) == planted:
            break
    pixels = [full.pixels[i].numpy() for i in base]
    labels = [int(full.labels[i]) for i in base]
    unit = [f"s{k:04d}" for k in range(len(base))]
    for p, i in enumerate(chosen):
        img = full.pixels[i].numpy()
        for c in range(copies):
            copy = img.astype(np.int16).copy()
            copy[0, c // 8 % 8, c % 8] += 1 if copy[0, c // 8 % 8, c % 8] < 255 else -1
            pixels.append(copy.astype(np.uint8))
            labels.append(int(full.labels[i]))
            unit.append(f"planted-{p}")
    data = SampleSet.from_arrays(np.stack(pixels), labels, ["public"] * len(labels))
    ids = [sample_id(p, y) for p, y in zip(np.stack(pixels), labels)]
    groups = dict(zip(ids, unit))
    return data, groups, [int(full.labels[i]) for i in chosen]


def encoded_benchmark(root: Path, args) -> tuple[dict, list]:
    store = sd.Store(root / "encoded")
    data, groups, planted_labels = planted_set(args.n_base, args.planted, args.copies)
    store.ingest(data, "digits-planted")
    csv = root / "groups.csv"
    csv.write_text("sample_id,unit\n" + "".join(f"{sid},{u}\n" for sid, u in groups.items()))
    config = TrainConfig(epochs=args.member_epochs)
    t0 = time.perf_counter()
    plan, _ = train_encoded(store, members=args.members, unit="column:unit", groups=csv, config=config, progress=False)
    train_s = time.perf_counter() - t0
    log(f"trained {args.members} members over {len(plan.units)} units in {train_s:.0f} s")
    plan, ens = load_ensemble(store)
    planted_units = [plan.index(f"planted-{p}") for p in range(args.planted)]
    # 1. generations with the planted labels; keep those that copy a planted image
    labels = torch.as_tensor([planted_labels[i % args.planted] for i in range(args.planted * args.per_planted)])
    noise = NoiseTrajectory.draw((len(labels), *ens.image_shape), args.steps, torch.Generator().manual_seed(5))
    est = UnitInfluence(steps=args.steps, loss_change=True).fit(ens, plan)
    tau = est.score(noise, labels)  # the default matched contrast ‖x̂_{+j} − x̂_{−j}‖
    images = est.images_
    full = est.counterfactuals_[est.unit_subset_]  # (U, n, c, h, w): x̂_{−j}, the same runs
    tau_full = torch.stack([pixel_distance(images, c) for c in full], dim=1).numpy()  # ‖x̂ − x̂_{−j}‖
    # nearest unit per image: distance to each unit's closest sample, in [0, 1] pixel units
    train_x = store.dataset().x()
    sid_unit = np.asarray([plan.index(groups[s]) for s in store.dataset().sample_ids])
    d = torch.cdist(((images + 1) / 2).flatten(1), ((train_x + 1) / 2).flatten(1)).numpy()  # (n, N)
    unit_d = np.full((len(images), len(plan.units)), np.inf)
    for j in range(len(plan.units)):
        unit_d[:, j] = d[:, sid_unit == j].min(1)
    nearest = unit_d.argmin(1)
    second = np.sort(unit_d, axis=1)[:, 1]
    ratio = unit_d[np.arange(len(images)), nearest] / second
    strict = int(sum(nearest[i] in planted_units and ratio[i] < 1 / 3 for i in range(len(images))))
    copies = [i for i in range(len(images)) if nearest[i] in planted_units and ratio[i] < args.copy_ratio]
    ranks = [int((tau[i] > tau[i, nearest[i]]).sum()) + 1 for i in copies]
    full_ranks = [int((tau_full[i] > tau_full[i, nearest[i]]).sum()) + 1 for i in copies]
    loss_ranks = [int((est.loss_change_[i] > est.loss_change_[i, nearest[i]]).sum()) + 1 for i in copies]
    top1 = float(np.mean([r == 1 for r in ranks])) if ranks else float("nan")
    log(f"{len(copies)}/{len(images)} generations copy a planted image; planted unit top-1 in {top1:.2f}")
    # 2. first-order shortcut on the same images
    t1 = time.perf_counter()
    predicted = first_order_influence(ens, plan, noise, labels, steps=args.steps)
    fo_s = time.perf_counter() - t1
    agreement = rank_agreement(predicted, tau)
    fo_top1_copies = float(np.mean([predicted[i].argmax() == nearest[i] for i in copies])) if copies else float("nan")
    # 3. linear datamodeling score on a budget of retrained subsets (α = 0.5 of the units)
    lds = linear_datamodeling(store, plan, ens, est, labels, config, args, tau_full)
    out = {
        "units": len(plan.units),
        "members": args.members,
        "samples": len(data),
        "planted": args.planted,
        "copies_per_planted": args.copies,
        "member_epochs": args.member_epochs,
        "train_seconds": round(train_s, 1),
        "generations": len(images),
        "copying_generations": len(copies),
        "copy_ratio": args.copy_ratio,
        "copying_generations_at_ratio_one_third": strict,
        "copy_distance_ratios": [round(float(ratio[i]), 3) for i in copies],
        "planted_ranks": ranks,
        "planted_top1_fraction": top1,
        "planted_ranks_full_contrast": full_ranks,
        "planted_top1_fraction_full_contrast": float(np.mean([r == 1 for r in full_ranks])) if full_ranks else float("nan"),
        "planted_ranks_by_loss_change": loss_ranks,
        "planted_top1_fraction_by_loss_change": float(np.mean([r == 1 for r in loss_ranks]))
        if loss_ranks
        else float("nan"),
        "first_order_rank_agreement": agreement,
        "first_order_planted_top1": fo_top1_copies,
        "first_order_seconds": round(fo_s, 2),
        "influence_seconds": est.seconds_,
        "lds": lds,
    }
    rows = [
        (
            "planted_top1_fraction",
            top1,
            (
                f"matched contrast ‖x̂_{{+j}} − x̂_{{−j}}‖; {len(copies)} of {len(images)} generations copy a planted image (ratio < {args.copy_ratio}; "
                f"{strict} at < 1/3); mean rank "
                f"{np.mean(ranks) if ranks else float('nan'):.2f} of {len(plan.units)} units; target ≥ 0.90 → "
                f"{'met' if ranks and top1 >= 0.9 else 'NOT met'}"
            ),
        ),
        (
            "planted_top1_fraction, full contrast ‖x̂ − x̂_{−j}‖",
            out["planted_top1_fraction_full_contrast"],
            "the same images and runs, against the full ensemble instead of the matched half",
        ),
        (
            "planted_top1_fraction by loss change",
            out["planted_top1_fraction_by_loss_change"],
            "the likelihood route on the same images",
        ),
        (
            "lds (influence distance)",
            lds["lds_distance"],
            (
                f"{lds['subsets']} retrained subsets, {lds['images']} images; "
                f"random baseline {lds['random_mean']:.3f} ± {lds['random_std']:.3f}"
            ),
        ),
        ("lds (influence distance, full contrast)", lds["lds_distance_full_contrast"], "same subsets and images"),
        ("lds (loss change)", lds["lds_loss_change"], "same subsets and images"),
        (
            "first_order_rank_agreement",
            agreement,
            (
                f"Spearman vs true ablation, mean over {len(images)} images; "
                f"top-1 on copies {fo_top1_copies:.2f}; {fo_s:.1f} s"
            ),
        ),
        (
            "ensemble_attribution_cost_ratio",
            est.seconds_["ratio_to_sampling"],
            (
                f"{est.seconds_['resamples']} sub-ensemble resamples (+ loss grids) over one ensemble sampling run "
                f"({est.seconds_['sampling']:.2f} s); first-order {fo_s / est.seconds_['sampling']:.1f}×"
            ),
        ),
    ]
    return out, rows


def linear_datamodeling(store, plan, ens, est, labels, config: TrainConfig, args, tau_full=None) -> dict:
    """LDS: Spearman over subsets of (Σ_{j∈S} τ_ij) vs (−loss of image i under the model trained on S), mean over i."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(123)
    U = len(plan.units)
    masks = np.zeros((args.subsets, U), dtype=bool)
    for s in range(args.subsets):
        masks[s, rng.choice(U, U // 2, replace=False)] = True
    model_cfg = ens.members[0].config
    jobs = [
        SliceJob(
            str(store.root),
            "lds-subset",
            f"lds-{s}",
            [sorted(sid for j in np.flatnonzero(m) for sid in plan.unit_ids[j])],
            model_cfg,
            config.to_dict(),
            progress=False,
        )
        for s, m in enumerate(masks)
    ]
    t0 = time.perf_counter()
    results = run_jobs(jobs, "serial")
    log(f"retrained {args.subsets} subsets in {time.perf_counter() - t0:.0f} s")
    images = est.images_[: args.lds_images]
    y = labels[: args.lds_images]
    timesteps, _ = timestep_grid(args.grid)
    losses = np.stack(
        [loss_grid(store.load(r.artifacts[-1]), images, y, timesteps, draws=2, seed=9).mean(1).numpy() for r in results]
    )  # (S, n)

    def lds(scores: np.ndarray) -> float:
        pred = masks.astype(float) @ scores[: len(images)].T  # (S, n)
        rhos = [spearmanr(pred[:, i], -losses[:, i]).statistic for i in range(len(images))]
        return float(np.nanmean(rhos))

    random = [lds(rng.random(est.influence_.shape)) for _ in range(50)]
    return {
        "subsets": args.subsets,
        "alpha": 0.5,
        "images": len(images),
        "lds_distance": lds(est.influence_),
        "lds_distance_full_contrast": lds(tau_full) if tau_full is not None else None,
        "lds_loss_change": lds(est.loss_change_),
        "random_mean": float(np.mean(random)),
        "random_std": float(np.std(random)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run (minutes less, figures noisier)")
    args = p.parse_args()
    torch.set_num_threads(1)  # small models: one thread is fastest on a shared 2-core box
    full = {
        "epochs": 150,
        "router_epochs": 40,
        "n": 60,
        "steps": 50,
        "grid": 8,
        "n_posterior": 20,
        "n_base": 80,
        "planted": 4,
        "copies": 20,
        "members": 12,
        "member_epochs": 300,
        "per_planted": 8,
        "subsets": 8,
        "lds_images": 16,
        "copy_ratio": 0.9,
    }
    quick = {
        "epochs": 60,
        "router_epochs": 20,
        "n": 20,
        "steps": 20,
        "grid": 6,
        "n_posterior": 6,
        "n_base": 40,
        "planted": 2,
        "copies": 12,
        "members": 8,
        "member_epochs": 100,
        "per_planted": 4,
        "subsets": 4,
        "lds_images": 6,
        "copy_ratio": 0.9,
    }
    for k, v in (quick if args.quick else full).items():
        setattr(args, k, v)
    assert math.comb(args.members, args.members // 2) >= args.n_base + args.planted
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="silodiff-bench-attr-") as tmp:
        comp, comp_rows = compartment_benchmark(Path(tmp), args)
        enc, enc_rows = encoded_benchmark(Path(tmp), args)
    total = time.perf_counter() - t0
    results = {
        "settings": {k: v for k, v in vars(args).items()},
        "compartments": comp,
        "encoded": enc,
        "seconds": round(total, 1),
    }
    notes = [
        (
            "Compartments: scikit-learn digits, one compartment per class (sources by-class), MLP denoisers, "
            f"{args.epochs} epochs; router {args.router_epochs} epochs; DDPM {args.steps} steps; {args.n} conditional "
            f"(balanced) and {args.n} unconditional images, seed 11."
        ),
        (
            "Conditional images are attributed by construction by the router (λ_i(y) = 0 for compartments without label y), and "
            "leave-one-out of the only holder of y leaves no compartment with that label: that counterfactual is drawn "
            "unconditionally and flagged (loo_label_unsupported_fraction). The unconditional figures are the informative ones."
        ),
        "Unconditional ground truth = the class silodiff's FLD CNN assigns to the generated image.",
        (
            f"Encoded ensemble: {args.n_base} digits + {args.planted} planted digits × {args.copies} jittered copies (one unit "
            f"each, via --unit column:unit), {args.members} members × {args.member_epochs} epochs; a generation copies a planted "
            "image when its nearest unit is planted and d(nearest unit) / d(second unit) < copy_ratio (0.9). With Gu et al.'s "
            "1/3 almost none qualify: the ensemble averages the members that saw the planted image with those that never did, so "
            "its generations are blends that lean toward the planted image rather than exact replicas."
        ),
        (
            f"LDS: {args.subsets} models retrained from scratch on random halves of the units (same loop and settings as a member); "
            "score = Spearman over subsets between Σ_{j∈S} τ_ij and −(denoising loss of image i under the subset model), mean over images; "
            "random baseline = 50 draws of uniform random scores."
        ),
        "Cost ratios are measured in the same run, on the same images, against one sampling run of the same model.",
        "torch uses 1 thread; the 2 cores were shared with other engineers' work during the run (see load average).",
        f"Total wall time {total:.0f} s.",
    ]
    write_results("attribution", results, comp_rows + enc_rows, notes)


if __name__ == "__main__":
    main()
