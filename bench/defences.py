"""Memorisation defences benchmark (issue 5): IET-AGC and CPSample on a small digits set.

    python bench/defences.py [--quick]

Small-data regime: the first N digits (one source) are the training set, the next
N are held-out non-members; every model is the default 8×8 MLP denoiser, trained
long enough that the baseline memorises (64 images, 4,000 epochs).  Every row samples
with ancestral DDPM (50 steps) from the same labels and the same noise trajectory,
so rows differ only by the model or the guidance.

Quality is the FLD against the population, not against the training set: an FLD
CNN trained on every digit outside the training set, with those digits as the
reference.  The FLD CNN of the training set itself is a copy detector at this
scale (the run measures it: it ranks verbatim copies of the 64 training images far
better than fresh real digits), so it rewards memorisation; it is reported beside.

Part A (training-time defences, METHODS.md §2): baseline, AGC only, IET only,
IET-AGC, same epochs per sample.  Memorised fraction (NN ratio < 1/3), replicate rate
(centred-pixel cosine > 0.97), FLD.
Target: IET-AGC memorised ≤ 50% of the baseline's at FLD ≤ 1.10× the baseline's.

Part B (CPSample, METHODS.md §4): protection classifiers on the baseline's training
set: the paper's (trained until it knows the bits, and a control trained as long as the
next), and one calibrated on public digits (outside the training set, the
MIA's non-members and the fresh digits) to say ½ off the training set; plain sampling vs
CPSample at α ∈ {0.5, 0.25, 0.001} with each.  The scale s is tuned on one
noise seed (the fewest replicates, then the lowest memorised fraction, among the s with
FLD ≤ 1.10× plain) and reported on another.  Replicates, memorised, FLD and loss-MIA AUC
(members vs held-out).  Target: replicates 0 at FLD ≤ 1.10×, MIA AUC closer to 0.5 than
plain sampling's.  Also where the confidence rule fires (training vs held-out images) and
the extra sampling cost of CPSample as a ratio to plain sampling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import scratch_dir, write_results  # noqa: E402

from silodiff.audit import class_accuracy, feature_net, fld  # noqa: E402
from silodiff.audit.memorization import MemorizationAuditor  # noqa: E402
from silodiff.audit.mia import LossAttack  # noqa: E402
from silodiff.data import SampleSet, load_digits  # noqa: E402
from silodiff.defences import (  # noqa: E402
    agc_hooks, fire_rate, guided_fraction, protect, top_skips, train_iet, train_protection_classifier,
)
from silodiff.jobs import train_paragon  # noqa: E402
from silodiff.sampling import balanced_labels, generate  # noqa: E402
from silodiff.store import Store  # noqa: E402
from silodiff.training import TrainConfig  # noqa: E402

FULL = dict(n=64, n_fresh=400, epochs=4000, shards=2, rounds=1000, shard_batch=32, lam=1.2, n_gen=2000, n_tune=400, steps=50,
            clf_epochs=500, clf_max=2000, cal_epochs=3000, scales=(1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0), fld_epochs=1000)
QUICK = dict(n=60, n_fresh=100, epochs=30, shards=2, rounds=3, shard_batch=30, lam=1.2, n_gen=60, n_tune=40, steps=10,
             clf_epochs=20, clf_max=20, cal_epochs=20, scales=(1.0, 100.0), fld_epochs=30)
ALPHAS = (0.5, 0.25, 0.001)
SAMPLER = "ddpm"
TUNE_SEED, REPORT_SEED = 1, 2


def log(msg: str) -> None:
    print(f"[bench-defences] {msg}", flush=True)


class Judge:
    """Quality and memorisation of a model's samples: one fixed label set and noise seed per call."""

    def __init__(self, store: Store, heldout: Store, steps: int):
        self.net, self.real = feature_net(store, progress=False), store.dataset().x()  # training-set FLD (copy detector)
        self.net_pop, self.real_pop = feature_net(heldout, progress=False), heldout.dataset().x()  # population FLD
        self.auditor = MemorizationAuditor().fit(self.real)
        self.steps = steps

    def images(self, images: torch.Tensor, labels: torch.Tensor | None, name: str) -> dict:
        scores = self.auditor.score(images)
        rep, replicas = self.auditor.summarize(scores), scores["replicate"]
        row = {"model": name, "n": rep["n"], "memorised": rep["nn_ratio_memorised"], "replicate_rate": rep["replicate_rate"],
               "median_nn_ratio": rep["median_nn_ratio"], "fld": fld(self.net_pop, images, self.real_pop),
               "fld_trainset": fld(self.net, images, self.real),
               # which training images are replicated, and how closely (the threshold is 0.97)
               "replicated_training_images": len(set(scores["cosine_index"][replicas].tolist())),
               "replicate_max_cosine": float(scores["cosine"][replicas].max()) if replicas.any() else None}
        if labels is not None:
            row["class_accuracy"] = class_accuracy(self.net_pop, images, labels)
        return row

    def __call__(self, model, name: str, n: int, seed: int, sampler: str = SAMPLER) -> dict:
        labels = balanced_labels(n, 10)
        t0 = time.perf_counter()
        images, _ = generate(model, n, labels=labels, sampler=sampler, steps=self.steps, seed=seed)
        row = self.images(images, labels, name) | {"sampling_s": round(time.perf_counter() - t0, 2), "seed": seed,
                                                   "sampler": sampler}
        log(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        return row


def protection_kwargs(epochs: int, max_epochs: int, max_timestep: int | None = None, **kwargs) -> dict:
    """``train_protection_classifier`` arguments for the benchmarks' classifiers (fixed epochs, no label dropout)."""
    config = TrainConfig(epochs=epochs, batch_size=64, label_dropout=0.0, ema_decay=0.99, max_timestep=max_timestep)
    return dict(config=config, max_epochs=max_epochs, **kwargs)


def cpsample_met(row: dict, plain: dict) -> bool:
    """The issue's CPSample target: no replicates, FLD ≤ 1.10× plain, loss-MIA AUC closer to ½ than plain sampling's."""
    return row["replicate_rate"] == 0 and row["fld_vs_plain"] <= 1.10 and abs(row["auc"] - 0.5) < abs(plain["auc"] - 0.5)


def tuned_scale(tried: list[dict]) -> float:
    """The tuning rule: among the rows with FLD ≤ 1.10× plain (else the best FLD), the fewest replicates, then memorised."""
    ok = [r for r in tried if r["fld_vs_plain"] <= 1.10] or [min(tried, key=lambda r: r["fld"])]
    return min(ok, key=lambda r: (r["replicate_rate"], r["memorised"]))["scale"]


def relative(rows: list[dict], ref: dict) -> None:
    for row in rows:
        row["memorised_vs_baseline"] = row["memorised"] / ref["memorised"] if ref["memorised"] else float("nan")
        row["replicates_vs_baseline"] = row["replicate_rate"] / ref["replicate_rate"] if ref["replicate_rate"] else float("nan")
        row["fld_vs_baseline"] = row["fld"] / ref["fld"]
        row["fld_trainset_vs_baseline"] = row["fld_trainset"] / ref["fld_trainset"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (figures meaningless)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores (printed) for inspection")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(args, scratch_dir("silodiff-bench-defences-", args.keep))


def setup(p: dict, root: Path) -> tuple[dict[str, SampleSet], Store, Judge]:
    """The data splits, the training store (training set only) and the judge over a population store."""
    digits = load_digits("single:owner")  # one owner's digits; the training set is its first N
    public = load_digits("single:public")  # the same digits under another source: non-members to calibrate CPSample on
    data = {
        "train": digits.subset(digits.sample_ids[: p["n"]]),
        "holdout": digits.subset(digits.sample_ids[p["n"] : 2 * p["n"]]),  # non-members for the MIA
        "fresh": digits.subset(digits.sample_ids[-p["n_fresh"] :]),  # real digits outside both, to probe the FLDs
        "population": digits.subset(digits.sample_ids[p["n"] : -p["n_fresh"]]),  # the FLD reference: every other digit
        "public": public.subset(public.sample_ids[2 * p["n"] : -p["n_fresh"]]),  # not the MIA's non-members, not the fresh digits
    }
    store, pop_store = Store(root / "store"), Store(root / "population")
    store.ingest(data["train"], "digits")
    pop_store.ingest(data["population"], "digits")
    feature_net(store, epochs=p["fld_epochs"], progress=False)  # 64 images: the default 30 epochs would be 30 steps
    return data, store, Judge(store, pop_store, p["steps"])


def run(args: argparse.Namespace, root: Path) -> None:
    p = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    data, store, judge = setup(p, root)
    train_set, holdout, fresh, public = data["train"], data["holdout"], data["fresh"], data["public"]
    # what each FLD makes of real images: verbatim copies of the training set vs fresh digits
    copies = train_set.x()[torch.randint(0, p["n"], (p["n_gen"],), generator=torch.Generator().manual_seed(0))]
    floors = {"copies of the training images": judge.images(copies, None, "copies"),
              "fresh digits (outside the training set)": judge.images(fresh.x(), None, "fresh")}

    # ---------------------------------------------------------------- A. training-time defences
    config = TrainConfig(epochs=p["epochs"])
    shard_config = TrainConfig(batch_size=p["shard_batch"])
    local = p["epochs"] / p["rounds"]
    lam_ref, lam = 2.0, p["lam"]  # the paper's λ, and the λ this regime needs (the reference hardly skips here)

    def agc(value: float) -> dict:
        return {"lam": value, "decay": 0.8}

    def iet(agc_options: dict | None) -> str:
        return train_iet(store, shards=p["shards"], rounds=p["rounds"], local_epochs=local, agc=agc_options, config=shard_config,
                         progress=False)["artifact"]

    # the early-stopping control trains in a store of its own (same data): does a defence beat simply training less?
    control = Store(root / "control")
    control.ingest(train_set, "digits")
    recipes = {
        "baseline": lambda: train_paragon(store, config=config, progress=False).artifacts[-1],
        "baseline, half the epochs": lambda: train_paragon(control, config=TrainConfig(epochs=p["epochs"] // 2),
                                                           progress=False).artifacts[-1],
        f"AGC λ={lam_ref:g}": lambda: train_paragon(store, config=config, progress=False, hooks=agc_hooks(**agc(lam_ref))).artifacts[-1],
        f"AGC λ={lam:g}": lambda: train_paragon(store, config=config, progress=False, hooks=agc_hooks(**agc(lam))).artifacts[-1],
        "IET": lambda: iet(None),
        f"IET-AGC λ={lam_ref:g}": lambda: iet(agc(lam_ref)),
        f"IET-AGC λ={lam:g}": lambda: iet(agc(lam)),
    }
    seconds, models = {}, {}
    for name, fn in recipes.items():
        t0 = time.perf_counter()
        models[name] = fn()
        seconds[name] = round(time.perf_counter() - t0, 1)
        log(f"trained {name}: {seconds[name]} s")
    part_a = []
    for name, h in models.items():
        model = (control if name.startswith("baseline,") else store).load(h)
        part_a.append(judge(model, name, p["n_gen"], REPORT_SEED) | {"train_s": seconds[name]})
    relative(part_a, part_a[0])
    by_name = {r["model"]: r for r in part_a}
    skipped = {name: store.catalog.artifact(models[name])["metrics"]["agc_skipped_fraction"] for name in models if "AGC" in name}
    top_skipped = [{"sample_id": t["sample_id"][:12], "skips": t["skips"], "seen": t["seen"]}
                   for t in top_skips(store.load(models[f"AGC λ={lam:g}"]).info["hooks"]["agc"], 5)]

    # ---------------------------------------------------------------- B. CPSample on the baseline
    base = store.load(models["baseline"])  # loaded once: CPSample wraps a single model without changing it
    # non-members to calibrate on, ingested only now (every model above saw the training set alone)
    store.ingest(public, "public")
    clf_variants = {
        "paper": protection_kwargs(p["clf_epochs"], p["clf_max"]),
        # control: as long as the calibrated one, without calibration (does the gain come from training longer?)
        "paper, long": protection_kwargs(p["cal_epochs"], p["cal_epochs"]),
        "calibrated": protection_kwargs(p["cal_epochs"], p["cal_epochs"], calibration=["public"]),
    }
    x_train, x_hold = train_set.x(), holdout.x()
    classifiers, clf_infos = {}, {}
    for tag, kwargs in clf_variants.items():
        t0 = time.perf_counter()
        info = train_protection_classifier(store, artifact=models["baseline"], progress=False, **kwargs)
        classifiers[tag] = store.load(info["artifact"])
        fires = {str(a): {"training": fire_rate(classifiers[tag], x_train, a), "held-out": fire_rate(classifiers[tag], x_hold, a)}
                 for a in ALPHAS}
        clf_infos[tag] = info | {"seconds": time.perf_counter() - t0, "fire_rate_by_alpha": fires}
        log(f"protection classifier ({tag}): {info['epochs']} epochs, accuracy by t {info['accuracy_by_t']}, fires {fires}")

    def mia_auc(model) -> dict:
        res = LossAttack().fit(model).evaluate((x_train, train_set.labels), (x_hold, holdout.labels))
        return {"auc": res["auc"], "best_t": res["best_t"], "tpr_at_1pct_fpr": res["tpr_at_1pct_fpr"]}

    plain_tune = judge(base, "plain", p["n_tune"], TUNE_SEED)
    plain = part_a[0] | {"model": "plain"} | mia_auc(base)

    def cpsample(tag: str) -> tuple[list[dict], dict]:
        """Tune s per α on the tuning seed (fewest replicates, then memorised, among FLD ≤ 1.10× plain); report on another."""
        classifier, tuning, chosen = classifiers[tag], [], {}
        for alpha in ALPHAS:
            tried = []
            for scale in p["scales"]:
                wrapped = protect(base, classifier, alpha=alpha, scale=scale)
                row = judge(wrapped, f"tune {tag} α={alpha} s={scale:g}", p["n_tune"], TUNE_SEED)
                row |= {"classifier": tag, "alpha": alpha, "scale": scale, "guided_fraction": guided_fraction(wrapped),
                        "fld_vs_plain": row["fld"] / plain_tune["fld"]}
                tried.append(row)
            scale = tuned_scale(tried)
            wrapped = protect(base, classifier, alpha=alpha, scale=scale)
            row = judge(wrapped, f"CPSample ({tag}) α={alpha} s={scale:g}", p["n_gen"], REPORT_SEED)
            row |= {"classifier": tag, "alpha": alpha, "scale": scale, "guided_fraction": guided_fraction(wrapped),
                    "fld_vs_plain": row["fld"] / plain["fld"], "fld_trainset_vs_plain": row["fld_trainset"] / plain["fld_trainset"],
                    **mia_auc(wrapped)}
            chosen[str(alpha)] = row
            tuning += tried
        return tuning, chosen

    tuning, chosen = {}, {}
    for tag in classifiers:
        tuning[tag], chosen[tag] = cpsample(tag)
    # deterministic DDIM (the diffusers scheduler as silodiff configures it), plain and with CPSample at α = 0.25
    ddim = [judge(base, "plain DDIM", p["n_gen"], REPORT_SEED, "ddim")]
    for tag in classifiers:
        s025 = chosen[tag]["0.25"]["scale"]
        ddim.append(judge(protect(base, classifiers[tag], alpha=0.25, scale=s025), f"CPSample ({tag}) DDIM α=0.25 s={s025:g}",
                          p["n_gen"], REPORT_SEED, "ddim"))
    # the cost ratio, measured once more back to back on the same images and steps
    labels = balanced_labels(p["n_tune"], 10)
    t0 = time.perf_counter()
    generate(base, p["n_tune"], labels=labels, sampler=SAMPLER, steps=p["steps"], seed=3)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(protect(base, classifiers["paper"], alpha=0.25, scale=p["scales"][0]), p["n_tune"], labels=labels,
             sampler=SAMPLER, steps=p["steps"], seed=3)
    cost_ratio = (time.perf_counter() - t0) / t_plain

    # ---------------------------------------------------------------- report
    def met(row: dict, key: str = "memorised_vs_baseline") -> bool:
        return row[key] <= 0.5 and row["fld_vs_baseline"] <= 1.10

    iet_agc, iet_agc_ref = by_name[f"IET-AGC λ={lam:g}"], by_name[f"IET-AGC λ={lam_ref:g}"]
    met_a, met_a_rep, met_a_ref = met(iet_agc), met(iet_agc, "replicates_vs_baseline"), met(iet_agc_ref)
    met_b = {tag: {a: cpsample_met(r, plain) for a, r in rows_b.items()} for tag, rows_b in chosen.items()}
    n_gen = p["n_gen"]
    rows = [("train set / held-out (digits, one source)", f"{p['n']} / {p['n']}", "members / non-members for the MIA"),
            ("baseline epochs; IET shards × rounds × local epochs", f"{p['epochs']}; {p['shards']} × {p['rounds']} × {local:g}",
             "same epochs per sample"),
            ("samples per row (DDPM, same labels and noise)", f"{n_gen} × {p['steps']} steps",
             f"CPSample's s tuned on {p['n_tune']} samples of another noise seed")]
    for name, r in floors.items():
        rows.append((f"FLD / training-set FLD of {r['n']} {name}", f"{r['fld']:.4g} / {r['fld_trainset']:.4g}",
                     "real images: what each FLD rewards"))
    for r in part_a:
        rows.append((f"A · {r['model']}: memorised / replicates / FLD / class acc",
                     f"{r['memorised']:.4f} / {r['replicate_rate']:.4f} / {r['fld']:.4g} / {r['class_accuracy']:.3f}",
                     f"{round(r['memorised'] * n_gen)}/{n_gen} memorised ({r['memorised_vs_baseline']:.3g}× baseline), "
                     f"replicates {r['replicates_vs_baseline']:.3g}×, FLD {r['fld_vs_baseline']:.3g}× (training-set FLD "
                     f"{r['fld_trainset']:.4g}, {r['fld_trainset_vs_baseline']:.3g}×); train {r['train_s']} s"))
    rows += [(f"A · target: IET-AGC (λ={lam:g}) memorised ≤ 0.5× and FLD ≤ 1.10× baseline",
              f"{iet_agc['memorised_vs_baseline']:.3f}× / {iet_agc['fld_vs_baseline']:.3f}×", "MET" if met_a else "NOT MET"),
             (f"A · same target on the replicate rate (λ={lam:g})",
              f"{iet_agc['replicates_vs_baseline']:.3f}× / {iet_agc['fld_vs_baseline']:.3f}×", "MET" if met_a_rep else "NOT MET"),
             (f"A · same target with the reference λ={lam_ref:g}",
              f"{iet_agc_ref['memorised_vs_baseline']:.3f}× / {iet_agc_ref['fld_vs_baseline']:.3f}×", "MET" if met_a_ref else "NOT MET"),
             ("A · AGC skipped fraction", ", ".join(f"{k}: {v:.4f}" for k, v in skipped.items()), "skips / samples seen"),
             (f"A · most skipped samples (AGC λ={lam:g})", ", ".join(f"{t['sample_id']}: {t['skips']}/{t['seen']}" for t in top_skipped),
              "skips / times seen")]
    rows.append((f"B · plain {SAMPLER.upper()}: replicates / memorised / FLD / loss-MIA AUC",
                 f"{plain['replicate_rate']:.4f} / {plain['memorised']:.4f} / {plain['fld']:.4g} / {plain['auc']:.3f}",
                 f"{round(plain['replicate_rate'] * plain['n'])} replicas of {plain['replicated_training_images']} training "
                 f"images; MIA best t = {plain['best_t']}"))
    for tag, info in clf_infos.items():
        cal = info["calibration"]
        rows.append((f"B · {tag} protection classifier: accuracy on training images, by t", info["accuracy_by_t"],
                     f"{info['epochs']} epochs, {info['seconds']:.0f} s"
                     + (f"; calibrated on {cal['n']} public digits (weight {cal['weight']:g})" if cal else "; target ≈ 1 at small t")))
        for a in ALPHAS:
            f = info["fire_rate_by_alpha"][str(a)]
            rows.append((f"B · {tag}: rule fires at α={a} (training / held-out images), t = 0, 100, 250",
                         " ; ".join(f"{f['training'][t]:.2f} / {f['held-out'][t]:.2f}" for t in (0, 100, 250)),
                         "CPSample needs ≈ 1 / ≈ 0"))
        for a, r in chosen[tag].items():
            closest = f", max cosine {r['replicate_max_cosine']:.3f}" if r["replicate_max_cosine"] is not None else ""
            rows.append((f"B · CPSample ({tag}) α={a} (s={r['scale']:g}): replicates / memorised / FLD / MIA AUC",
                         f"{r['replicate_rate']:.4f} / {r['memorised']:.4f} / {r['fld']:.4g} / {r['auc']:.3f}",
                         f"{round(r['replicate_rate'] * r['n'])} replicas of {r['replicated_training_images']} training images"
                         f"{closest}; FLD {r['fld_vs_plain']:.3g}× plain (training-set FLD {r['fld_trainset_vs_plain']:.3g}×), "
                         f"guided {r['guided_fraction']:.3f} of steps; target {'MET' if met_b[tag][a] else 'NOT MET'}"))
        frontier = sorted((r for r in tuning[tag] if r["replicate_rate"] == 0), key=lambda r: r["fld_vs_plain"])
        if frontier:
            r = frontier[0]
            rows.append((f"B · {tag}: lowest FLD among tuning settings with 0 replicates", f"α={r['alpha']} s={r['scale']:g}: "
                         f"FLD {r['fld_vs_plain']:.3g}× plain", f"{r['n']} samples, tuning seed"))
    for r in ddim:
        rows.append((f"B · {r['model']}: replicates / memorised / FLD", f"{r['replicate_rate']:.4f} / {r['memorised']:.4f} / "
                     f"{r['fld']:.4g}", f"FLD {r['fld'] / plain['fld']:.3g}× plain DDPM"))
    rows.append(("B · CPSample sampling cost / plain sampling", f"{cost_ratio:.3g}×", "same images and steps, back to back"))
    notes = [
        "Memorised = NN ratio d(NN1)/d(NN2) < 1/3 in [0,1] pixels; replicates = centred-pixel cosine > 0.97 "
        "(silodiff.audit.memorization).",
        "FLD = Fréchet distance in the features of an FLD CNN trained on the digits outside the training set, against "
        "those digits (the population).  The training-set FLD (a CNN trained on the training images, against them) is "
        "reported beside it.  On real images it scores verbatim copies of the training set "
        f"{floors['copies of the training images']['fld_trainset']:.3g} and fresh digits "
        f"{floors['fresh digits (outside the training set)']['fld_trainset']:.3g}: it measures closeness to the {p['n']} training images, "
        "so it rewards memorisation and cannot judge a defence against it.",
        "IET runs K shard models per round with per-shard AdamW and AGC bank, averaging raw and EMA weights by shard size; "
        f"shard batch size {p['shard_batch']} (the baseline uses 64).",
        "CPSample's s is chosen on a tuning noise seed and reported on another seed with more samples.",
        "The calibrated protection classifier adds a cross-entropy toward ½ on public digits noised at the same t "
        "(silodiff.defences.protection_loss); it trains a fixed number of epochs, and its lineage includes those digits.  "
        "The held-out fire rates are on the MIA's non-members, which it never saw.",
        "DDIM rows use silodiff's DDIM scheduler as configured for every sampler (diffusers' default clip_sample=True); "
        "its deterministic samples replicate little but are of poor quality for this model, so DDPM is the comparison.",
        "The MIA is the loss attack at the best t of (10, 20, 50, 100, 200, 500), chosen on the same data (optimistic, as in the papers).",
        f"Wall time {time.perf_counter() - t_start:.0f} s on 2 CPU cores; seconds are inflated by other work on the "
        "machine, ratios were measured in the same run.",
    ]
    if args.quick:
        notes.insert(0, "QUICK smoke run: tiny sizes, the figures say nothing about the methods.")
    write_results("defences" + ("-quick" if args.quick else ""),
                  {"settings": p, "floors": floors, "part_a": part_a, "agc_top_skipped": top_skipped, "agc_skipped_fraction": skipped,
                   "protection_classifiers": clf_infos, "plain": plain,
                   "tuning": tuning, "chosen": chosen, "ddim": ddim, "cpsample_cost_ratio": cost_ratio,
                   "targets": {"iet_agc": met_a, "iet_agc_replicates": met_a_rep, "iet_agc_reference_lambda": met_a_ref,
                               "cpsample": met_b}},
                  rows, notes)


if __name__ == "__main__":
    main()
