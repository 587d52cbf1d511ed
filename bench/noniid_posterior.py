"""How much an image says about which compartment holds it, given its label and without it, on the operating
point's digits split (``bench/operating_point.py``, data seed 0): the measurement behind its
``noniid_routed_over_uniform`` key.

    python bench/noniid_posterior.py        (make bench-noniid-posterior; seconds)

A learned router estimates the posterior P(i | x_t, y); the uniform router weighs the members by the label prior
λ_i(y).  Routing can beat the uniform router only where the image carries information about i beyond y, and by the
data-processing inequality a noised image x_t carries at most what the clean x_0 does.  So this measures, on clean
images, the information I(i; x_0 | y) and I(i; x_0) as the held-out log-loss a classifier saves over the prior (in
nats; 5-fold cross-validation over the 1,440 images of P and the 8 owners, stratified by compartment):
- conditional: one classifier per digit over the compartments holding it, against the fold's λ_i(y);
- label-blind: one classifier over all images, against the compartments' sizes.
Two classifiers, so that the answer is not one model's: multinomial logistic regression on the pixels and a
15-nearest-neighbour vote (probabilities floored at 1e-3).  A saving ≤ 0 means the classifier found nothing the
prior does not already say.  Both splits of the operating point are measured: IID (random owners) and non-IID (the
owners cut from the images sorted by class).  The protocol was fixed before the first run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402
from operating_point import split_data  # noqa: E402

FOLDS, FLOOR = 5, 1e-3
CLASSIFIERS = {"logistic": lambda: LogisticRegression(max_iter=2000),
               "knn-15": lambda: KNeighborsClassifier(n_neighbors=15)}


def log_loss(proba: np.ndarray, classes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """−log p(target) per row, with ``proba``'s columns named by ``classes``; a class unseen in training gets FLOOR."""
    column = {c: j for j, c in enumerate(classes)}
    p = np.array([proba[r, column[t]] if t in column else 0.0 for r, t in enumerate(target)])
    return -np.log(np.clip(p, FLOOR, 1.0))


def saving(x: np.ndarray, comp: np.ndarray, groups: np.ndarray, make) -> dict[str, float]:
    """Held-out log-loss of the prior and of the classifier (nats per image), fitting one classifier per group."""
    prior_loss, model_loss = np.zeros(len(x)), np.zeros(len(x))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, comp):
        for g in np.unique(groups):
            tr, te = train[groups[train] == g], test[groups[test] == g]
            classes, counts = np.unique(comp[tr], return_counts=True)
            prior = np.tile(counts / counts.sum(), (len(te), 1))
            prior_loss[te] = log_loss(prior, classes, comp[te])
            if len(classes) == 1:  # one compartment holds every training image of this group: nothing to learn
                model_loss[te] = prior_loss[te]
                continue
            clf = make().fit(x[tr], comp[tr])
            model_loss[te] = log_loss(clf.predict_proba(x[te]), clf.classes_, comp[te])
    return {"prior_nats": float(prior_loss.mean()), "classifier_nats": float(model_loss.mean()),
            "saving_nats": float(prior_loss.mean() - model_loss.mean())}


def main() -> None:
    split = split_data("digits")
    data = split["data"]
    index = {s: j for j, s in enumerate(data.sample_ids)}
    pixels, labels = data.pixels.flatten(1).numpy() / 255.0, data.labels.numpy()  # uint8 → [0, 1]
    rows, table = {}, []
    for split_name in ("iid", "noniid"):
        members = {"public": split["public"], **{f"owner-{k}": g for k, g in enumerate(split[split_name])}}
        ids = [s for g in members.values() for s in g]
        at = np.array([index[s] for s in ids])
        comp = np.array([n for n, g in members.items() for _ in g])
        x, y = pixels[at], labels[at]
        for clf_name, make in CLASSIFIERS.items():
            conditional = saving(x, comp, y, make)
            blind = saving(x, comp, np.zeros(len(x), dtype=int), make)
            rows[f"{split_name}/{clf_name}"] = {"conditional": conditional, "label_blind": blind}
            table.append((f"{split_name}, {clf_name}: nats saved given the label",
                          f"{conditional['saving_nats']:+.3f} of {conditional['prior_nats']:.3f}",
                          f"label-blind: {blind['saving_nats']:+.3f} of {blind['prior_nats']:.3f}"))
    best = lambda kind: max(r[kind]["saving_nats"] for k, r in rows.items() if k.startswith("noniid/"))  # noqa: E731
    notes = [f"non-IID: the most any classifier saved over λ_i(y) given the label: {best('conditional'):+.3f} nats "
             f"per image; without the label: {best('label_blind'):+.3f} nats",
             "columns: held-out log-loss saved over the prior (nats per image) 'of' the prior's own log-loss; "
             "conditional: given the digit, against λ_i(y); label-blind: against the compartments' sizes"]
    write_results("noniid_posterior", {"rows": rows, "folds": FOLDS, "floor": FLOOR,
                                       "noniid_best_conditional_saving_nats": best("conditional"),
                                       "noniid_best_label_blind_saving_nats": best("label_blind")},
                  table, notes)


if __name__ == "__main__":
    main()
