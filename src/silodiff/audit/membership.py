"""Who is a member: the served model's lineage, from the catalog (METHODS.md §6).

An attacker queries the *served* model, so its training set is the union of the
lineages of every artifact it is built from: the paragon's final checkpoint; a
compartment's final checkpoint; for a composed model each allowed member's
final checkpoint and the router (a shard classifier has seen every compartment).

- **Members** = live samples in that lineage.
- **Non-members** = images in no artifact of the served model, from two places:
  1. live samples of the store outside the lineage (a held-out source never
     trained on, samples ingested after training, other compartments' data
     when one compartment is audited);
  2. a ``holdout`` data set that need not be ingested (e.g. the digits not
     ingested, or Fashion-MNIST's test split); its images whose ``sample_id``
     is in the lineage are dropped.
  Non-members must come from the same distribution as the members (same data
  set, same preprocessing): otherwise an attack measures the shift, not
  membership.  Both sides are subsampled to the same size (50/50), seeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..composition import load_denoiser
from ..data import ChunkedSamples, SampleSet
from ..errors import SilodiffError
from ..jobs.compartments import PARAGON
from ..store import Store
from ..store.lineage import final_checkpoint, seen_by, trained_compartments


@dataclass
class ServedModel:
    """A model as the attacker sees it, plus what the catalog says it was built from."""

    name: str
    model: torch.nn.Module
    artifacts: dict[str, str]  # role → artifact hash
    lineage: list[str] = field(default_factory=list)  # every sample id any of the artifacts saw


def served_model(store: Store, which: str = "composed", **compose_options: Any) -> ServedModel:
    """Load ``composed`` / ``paragon`` / a compartment / a hash and collect its artifacts' lineage."""
    model = load_denoiser(store, which, **compose_options)
    if which == "composed":
        hashes = dict(model.artifact_hashes)
    elif which == PARAGON:
        hashes = {PARAGON: final_checkpoint(store, "paragon", PARAGON)["hash"]}
    elif which in trained_compartments(store):
        hashes = {which: final_checkpoint(store, "compartment", which)["hash"]}
    else:
        hashes = {"artifact": store.catalog.artifact(which)["hash"]}
    lineage = seen_by(store, hashes.values())
    if not lineage:
        raise SilodiffError(f"model {which!r} has no recorded lineage: nothing to audit it against")
    return ServedModel(which, model, hashes, lineage)


def training_set(store: Store, served: ServedModel) -> SampleSet | ChunkedSamples:
    """The live samples the served model was trained on (the memorisation reference): in memory when they
    fit (``Store.training_set``), else read lazily from the store's chunks."""
    live = {r["sample_id"] for r in store.catalog.sample_rows()}
    ids = [s for s in served.lineage if s in live]
    if not ids:
        raise SilodiffError(f"none of the samples model {served.name!r} was trained on is still live")
    return store.training_set(ids)


def membership_split(
    store: Store, served: ServedModel, holdout: SampleSet | None = None, *, n: int = 500, seed: int = 0,
) -> tuple[SampleSet, SampleSet, dict[str, Any]]:
    """Balanced members / non-members (at most ``n`` each) and a summary of where they came from."""
    lineage = set(served.lineage)
    members = training_set(store, served)  # read lazily when large: only the picked samples are loaded
    rows = store.catalog.sample_rows()
    outside = [r["sample_id"] for r in rows if r["sample_id"] not in lineage]
    parts = [store.samples(outside)] if outside else []
    dropped = 0
    if holdout is not None and len(holdout):
        if tuple(holdout.image_shape) != tuple(members.image_shape):
            raise SilodiffError(f"holdout images of shape {holdout.image_shape} do not match "
                                f"the model's {members.image_shape}")
        known = set(outside)
        keep = [s not in lineage and s not in known for s in holdout.sample_ids]
        dropped = int(sum(s in lineage for s in holdout.sample_ids))
        if any(keep):
            parts.append(holdout.where(keep))
    info: dict[str, Any] = {"members_available": len(members), "nonmembers_in_store": len(outside),
                            "nonmembers_from_holdout": sum(len(p) for p in parts) - len(outside),
                            "holdout_dropped_as_members": dropped}
    if not parts:
        given = f" and all {len(holdout)} holdout images are" if holdout is not None and len(holdout) else " is"
        raise SilodiffError(f"no non-members for model {served.name!r}: every live sample{given} in its lineage; "
                            "ingest a held-out source after training, or pass held-out images (--holdout)")
    # only labels the model was trained on (a composition refuses a label no compartment holds)
    seen = set(members.labels.tolist())
    pool = [(k, sid) for k, p in enumerate(parts) for sid, y in zip(p.sample_ids, p.labels.tolist()) if int(y) in seen]
    if not pool:
        raise SilodiffError(f"no non-members with a label model {served.name!r} was trained on")
    size = min(n, len(members), len(pool))
    rng = np.random.default_rng(seed)
    member_ids = members.sample_ids
    picked_members = [member_ids[i] for i in sorted(rng.choice(len(members), size, replace=False))]
    picked = [pool[i] for i in sorted(rng.choice(len(pool), size, replace=False))]
    info["n_per_side"] = size
    loaded = [(p.subset([sid for k2, sid in picked if k2 == k]) if len(p) else p) for k, p in enumerate(parts)]
    loaded = [p.load() if isinstance(p, ChunkedSamples) else p for p in loaded]
    nonmembers = loaded[0] if len(loaded) == 1 else SampleSet(
        torch.cat([p.pixels for p in loaded]), torch.cat([p.labels for p in loaded]),
        sum((p.sample_ids for p in loaded), []), sum((p.sources for p in loaded), []))
    members = members.subset(picked_members)
    return (members.load() if isinstance(members, ChunkedSamples) else members), nonmembers, info
