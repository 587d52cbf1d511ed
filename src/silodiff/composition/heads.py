"""The heads router: one binary head per compartment, trained on that compartment's own samples against a
public reference, so that forgetting a sample retrains only the head that saw it.

The shard classifier (``build.train_router``) learns P(i | x_t, y) from every compartment's samples at once;
every forget retrains it whole (on the operating point, 7.5 of the 13 CPU seconds an adapter's forget takes).
Head i instead learns a density ratio against a reference R that every key may use (the base's public data, or
compartments whose sources are all public):

    logit_i(x_t, t, y) = log(|D_i ∩ y| / |R ∩ y|) + g_i(x_t, t, y),   g_i → log p_i(x_t | y) − log p_R(x_t | y)

by logistic regression of D_i (1) against R (0); the count offset, as in ``router_loss``, leaves g_i only what
the label does not say, and the null label trains the unconditional ratio.  The composition weighs members by
w_i ∝ λ_i(y) · exp g_i, the shard classifier's Bayes rule: p_R(x_t | y) is common to every i and cancels in the
softmax.  The reference members have g ≡ 0 and no head.  Head i sees D_i ∪ R only: a sample of D_i is seen by
head i alone, a sample of R by every head.

So a composition of some members needs only their heads: ``load_heads`` reads those from the artifact and no
other, and ``heads_within`` checks, head by head, that each was trained on exactly its member's active data and
R (each head's info records the hash of its ids).  A key with rights on some compartments is served a learned
router built from them and R alone (``service.active``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SilodiffError
from ..nn import NoisyClassifier, RouterHeads
from ..store import Store
from ..store.lineage import BASE, active_base, final_checkpoint, own_ids
from ..training import TrainConfig, new_state, train


def ratio_loss(targets: torch.Tensor, offset: torch.Tensor, null_label: int):
    """Per sample (b,): the logistic loss of ``offset(y) + g(x_t, t, y)`` against the target (1: the compartment,
    0: the reference), for the sample's label and for the null label alike."""
    floor = offset.clamp(-30.0, 30.0)  # finite where a label has no example in the compartment

    def loss_fn(model: nn.Module, batch: dict, scheduler) -> torch.Tensor:
        x_t = scheduler.add_noise(batch["x0"], batch["noise"], batch["t"])
        b = len(x_t)
        y = torch.cat([batch["labels"], torch.full_like(batch["labels"], null_label)])  # (2b,): label, then null
        logits = model(x_t.repeat(2, 1, 1, 1), batch["t"].repeat(2), y).float()[:, 0] + floor.to(x_t.device)[y]
        target = targets[batch["rows"]].to(x_t.device).float().repeat(2)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return loss[:b] + loss[b:]

    return loss_fn


def _log_ratio_offset(own: torch.Tensor, ref: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log(|D ∩ y| / |R ∩ y|) per label, then the null label's log(|D| / |R|), (C + 1,)."""
    count = lambda labels: torch.bincount(labels, minlength=num_classes).double()  # noqa: E731
    own_c, ref_c = count(own), count(ref)
    return torch.cat([own_c / ref_c, own_c.sum(0, keepdim=True) / ref_c.sum()]).log().float()


def data_hash(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def train_heads(
    store: Store, data_of: dict[str, list[str]], reference: Sequence[str], config: TrainConfig, num_classes: int,
    *, previous: dict[str, Any] | None = None, progress: bool = True,
) -> tuple[RouterHeads, dict[str, Any]]:
    """A ``RouterHeads`` over the members ``data_of`` (name → its own sample ids, in column order); ``reference``
    names the members whose union is R.  ``previous`` (``{"module": RouterHeads, "info": its info}``) keeps every
    head whose data (own ids ∪ R) is unchanged: a forget retrains only the rest.  Returns the module and its
    ``heads`` info (name → ``{"data": hash of the head's sample ids, "samples": how many}``, or ``"reference"``)."""
    names = list(data_of)
    ref_ids = sorted({s for n in reference for s in data_of[n]})
    if not ref_ids:
        raise SilodiffError("the heads router needs a public reference: the base as a member (with_base), "
                            "or a compartment whose sources are all public")
    reference_set = store.samples(ref_ids)  # labels and shape only: no pixels are read here
    missing = set(range(num_classes)) - set(reference_set.labels.tolist())
    image_shape = reference_set.image_shape
    module = RouterHeads(image_shape, len(names), [names.index(n) for n in reference], num_classes)
    old = {n: h for n, h in previous["info"]["heads"].items() if h != "reference"} if previous else {}
    old_names = previous["info"]["compartments"] if previous else []
    info: dict[str, Any] = {}
    for head, k in zip(module.heads, module.learned):
        name, own = names[k], data_of[names[k]]
        info[name] = {"data": data_hash(own + ref_ids), "samples": len(own) + len(ref_ids)}
        if old.get(name, {}).get("data") == info[name]["data"]:  # exactly the same data: the old head is this head
            head.load_state_dict(previous["module"].heads[previous["module"].learned.index(old_names.index(name))]
                                 .state_dict())
            continue
        data = store.training_set(own + ref_ids)
        lacking = sorted(missing & set(data.labels[:len(own)].tolist()))
        if lacking:
            raise SilodiffError(f"the public reference has no sample of label(s) {lacking}, which {name!r} has: "
                                "the heads router cannot weigh it there; train the shard classifier instead")
        targets = torch.cat([torch.ones(len(own)), torch.zeros(len(ref_ids))])
        offset = _log_ratio_offset(data.labels[:len(own)], data.labels[len(own):], num_classes)
        torch.manual_seed(config.seed)
        fresh = NoisyClassifier(image_shape, 1, num_classes)
        state = new_state(fresh, config)
        train(state, data, config, loss_fn=ratio_loss(targets, offset, num_classes),
              progress=f"router head {name}" if progress else False)
        head.load_state_dict(state.ema.model.state_dict())
    return module, info | {n: "reference" for n in reference}


def _config(store: Store, digest: str) -> dict[str, Any]:
    """The artifact's ``config.json`` (hash-checked): ``model`` and ``info``."""
    return store.artifacts.config(store.catalog.artifact(digest)["hash"])


def is_heads(store: Store, digest: str) -> bool:
    """Whether the router artifact ``digest`` is a heads router."""
    return _config(store, digest).get("info", {}).get("router") == "heads"


def check_known(known: Sequence[str], names: Sequence[str]) -> None:
    """Refuse members a router was not trained with (a compartment added since, or the base)."""
    stale = [n for n in names if n not in known]
    if stale:
        raise SilodiffError(f"the router predates compartment(s) {', '.join(stale)}: retrain it")


def router_members(store: Store, digest: str) -> list[str]:
    """The members a router artifact was trained over, in column order."""
    return list(_config(store, digest).get("info", {}).get("compartments", []))


def load_heads(store: Store, digest: str, names: Sequence[str]) -> RouterHeads:
    """The heads router ``digest`` restricted to ``names`` (columns in that order): only their heads' tensors are
    read.  Its ``info["compartments"]`` is ``names``, so ``compose`` picks its columns like any router's."""
    digest = store.catalog.artifact(digest)["hash"]
    config = _config(store, digest)
    info, config = config["info"], config["model"]
    known = info["compartments"]
    check_known(known, names)
    columns = [known.index(n) for n in names]
    reference = set(config["reference"])
    old_learned = [k for k in range(len(known)) if k not in reference]
    wanted = {old_learned.index(c): j for j, c in enumerate(c for c in columns if c not in reference)}
    tensors, _ = store.artifacts.get_some(
        digest, lambda key: key.startswith("heads.") and int(key.split(".")[1]) in wanted)
    module = RouterHeads(config["image_shape"], len(names), [j for j, c in enumerate(columns) if c in reference],
                         config["num_classes"], config["width"])
    module.load_state_dict({f"heads.{wanted[int(k.split('.')[1])]}.{k.split('.', 2)[2]}": v
                            for k, v in tensors.items()})
    module.artifact_hash, module.info = digest, {**info, "compartments": list(names)}
    return module.eval()


def heads_within(store: Store, digest: str, members: dict[str, str], ref_hashes: dict[str, str] | None = None) -> bool:
    """True when every member (name → its active artifact hash) has a head of ``digest`` trained on exactly
    the member's own data and the reference, or is itself a reference member at its active artifact.
    ``ref_hashes``: ``reference_hashes(store, digest)``, when the caller has it already."""
    heads = _config(store, digest).get("info", {}).get("heads", {})
    if any(n not in heads for n in members):
        return False
    ref_hashes = reference_hashes(store, digest) if ref_hashes is None else ref_hashes
    if ref_hashes is None or any(members[n] != ref_hashes[n] for n in members if heads[n] == "reference"):
        return False
    ref_ids = sorted({s for h in ref_hashes.values() for s in own_ids(store, h)})
    return all(heads[n]["data"] == data_hash(own_ids(store, h) + ref_ids)
               for n, h in members.items() if heads[n] != "reference")


def reference_hashes(store: Store, digest: str) -> dict[str, str] | None:
    """The active artifact of each reference member of heads router ``digest`` (None if one has none, or if
    ``digest`` is not a heads router)."""
    heads = _config(store, digest).get("info", {}).get("heads")
    if not heads:
        return None
    out = {}
    for name in (n for n, h in heads.items() if h == "reference"):
        try:
            row = active_base(store) if name == BASE else final_checkpoint(store, "compartment", name)
        except SilodiffError:
            return None
        out[name] = row["hash"]
    return out
