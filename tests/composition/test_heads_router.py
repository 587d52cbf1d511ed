"""The heads router: one head per compartment against the public reference, so a forget retrains only the heads
that saw the forgotten samples, and the weights are the shard classifier's Bayes rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from routing_helpers import router_weights

import silodiff as sd
from silodiff.composition import ROUTER_NAME, compose, train_router
from silodiff.data import SampleSet, load_digits
from silodiff.errors import SilodiffError
from silodiff.jobs import plan_compartments, train_base, train_compartments
from silodiff.store.lineage import BASE, final_checkpoint
from silodiff.training import TrainConfig
from silodiff.unlearning import forget, plan_forget, verify_certificate

CONFIG = TrainConfig(epochs=2, batch_size=16)


def _ids(store, source):
    return sorted(r["sample_id"] for r in store.catalog.sample_rows(source))


def _heads(store, digest):
    module = store.load(digest)
    return {n: module.heads[module.learned.index(k)].state_dict()
            for k, n in enumerate(module.info["compartments"]) if k in module.learned}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def lora_heads(tmp_path, tiny_model_config):
    """A base on public source-0; LoRA adapters on source-1 and source-2; a heads router with the base."""
    store = sd.Store(tmp_path / "store")
    store.ingest(load_digits("random:3", limit=150), "digits")
    train_base(store, ["source-0"], config=CONFIG, model=tiny_model_config, progress=False)
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, config=CONFIG, from_base=True, adapter="lora", lora={"rank": 2}, progress=False)
    router = train_router(store, config=CONFIG, progress=False, with_base=True, heads=True)
    return store, router


def test_heads_see_their_compartment_and_the_reference_only(lora_heads):
    store, router = lora_heads
    module = store.load(router)
    assert module.info["compartments"] == [BASE, "source-1", "source-2"] and module.info["router"] == "heads"
    assert module.reference == [0] and len(module.heads) == 2  # the base is the reference: g ≡ 0, no head
    reference = len(_ids(store, "source-0"))
    for name in ("source-1", "source-2"):
        assert module.info["heads"][name]["samples"] == len(_ids(store, name)) + reference
    x, t = torch.randn(5, 1, 8, 8), torch.full((5,), 100)
    with torch.no_grad():
        logits = module(x, t, torch.arange(5))
    assert logits.shape == (5, 3) and (logits[:, 0] == 0).all() and (logits[:, 1:] != 0).all()
    model = compose(store, router="classifier", with_base=True)
    images, _ = sd.generate(model, 4, labels=[0, 1, 2, 3], steps=4, seed=0)
    assert torch.isfinite(images).all() and (model.calls > 0).all()


def test_forgetting_an_owner_sample_retrains_that_head_only(lora_heads):
    store, old = lora_heads
    victim = _ids(store, "source-1")[0]
    plan = plan_forget(store, [victim])
    assert plan["router"]["heads"] and plan["estimate"]["router_heads_retrained"] == ["source-1"]
    head_data = plan["compartments"][0]["remaining"] + len(_ids(store, "source-0"))  # 2 epochs of batch 16
    assert plan["estimate"]["router_steps"] == -(-2 * head_data // 16)
    before, old_samples = _heads(store, old), store.load(old).info["heads"]["source-1"]["samples"]
    cert = forget(store, sample_ids=[victim])  # deletes the old router: it saw the sample
    (new,) = store.active("router", ROUTER_NAME)
    after = _heads(store, new["hash"])
    assert _same(before["source-2"], after["source-2"])  # never saw the sample: kept as it was
    assert not _same(before["source-1"], after["source-1"])
    assert victim not in store.catalog.lineage(new["hash"])
    assert store.load(new["hash"]).info["heads"]["source-1"]["samples"] == old_samples - 1
    ok, problems = verify_certificate(store, cert)
    assert ok, problems


def test_forgetting_a_reference_sample_retrains_every_head(lora_heads):
    store, old = lora_heads
    victim = _ids(store, "source-0")[0]  # the base's data: every head's reference
    assert plan_forget(store, [victim])["estimate"]["router_heads_retrained"] == ["source-1", "source-2"]
    before = _heads(store, old)
    forget(store, sample_ids=[victim])
    (new,) = store.active("router", ROUTER_NAME)
    after = _heads(store, new["hash"])
    assert not any(_same(before[n], after[n]) for n in before)
    assert victim not in store.catalog.lineage(new["hash"])


def test_a_new_compartment_trains_its_own_head_only(lora_heads):
    from silodiff.unlearning import add_source

    store, old = lora_heads
    extra = load_digits("random:1", limit=180)
    extra = extra.subset(extra.sample_ids[150:])
    new_data = SampleSet(extra.pixels, extra.labels, extra.sample_ids, ["source-3"] * len(extra))
    result = add_source(store, new_data, "digits", progress=False)
    info = store.load(result["router"]).info
    assert info["compartments"] == [BASE, "source-1", "source-2", "source-3"] and info["router"] == "heads"
    before, after = _heads(store, old), _heads(store, result["router"])
    assert _same(before["source-1"], after["source-1"]) and _same(before["source-2"], after["source-2"])


def test_no_public_reference_is_a_clear_error(tmp_store, tiny_model_config):
    plan_compartments(tmp_store, by="source", slices=1)
    train_compartments(tmp_store, config=CONFIG, model=tiny_model_config, progress=False)
    with pytest.raises(SilodiffError, match="public reference"):
        train_router(tmp_store, config=CONFIG, progress=False, heads=True)
    assert not tmp_store.catalog.artifacts("router")


def test_heads_read_the_image_when_the_label_would_say_it_all(tmp_path):
    """Digits 0 and 1: a public random half, the other 0s and 1s an owner each.  Unconditional weights at a
    moderate noise level pick the owner whose digit the image is (density ratios against the public half)."""
    digits = load_digits("single")
    keep = np.flatnonzero(digits.labels.numpy() < 2)
    rng = np.random.default_rng(0)
    public = set(rng.choice(keep, len(keep) // 2, replace=False).tolist())
    sources = ["public" if i in public else f"digit-{int(digits.labels[i])}" for i in keep]
    data = SampleSet(digits.pixels[keep], digits.labels[keep], [digits.sample_ids[i] for i in keep], sources)
    store = sd.Store(tmp_path / "store")
    store.ingest(data, "digits")
    store.catalog.declare_public(["public"])
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, config=TrainConfig(epochs=1), progress=False)
    train_router(store, config=TrainConfig(epochs=15, seed=0), progress=False, heads=True)
    model = compose(store, ["digit-0", "digit-1"], router="classifier")
    owned = [i for i, s in enumerate(sources) if s != "public"]
    x0 = data.x()[owned]
    truth = torch.as_tensor([model.names.index(sources[i]) for i in owned])
    _, _, w = router_weights(model, x0)  # unconditional: the null label
    assert (w.argmax(1) == truth).float().mean() > 0.9


def test_a_composition_of_some_members_holds_their_heads_only(lora_heads):
    from silodiff.composition.heads import heads_within, load_heads

    store, router = lora_heads
    whole = store.load(router)
    part = load_heads(store, router, ["source-2", BASE])
    assert len(part.heads) == 1 and part.info["compartments"] == ["source-2", BASE]
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([5, 200, 600, 950]), torch.tensor([0, 3, 7, 10])
    with torch.no_grad():
        columns = [whole.info["compartments"].index(n) for n in ("source-2", BASE)]
        assert torch.equal(part(x, t, y), whole(x, t, y)[:, columns])
    model = compose(store, ["source-2"], with_base=True)
    assert len(model.router.classifier.heads) == 1
    with pytest.raises(SilodiffError, match="predates"):
        load_heads(store, router, ["source-1", "source-9"])
    finals = {n: final_checkpoint(store, "compartment", n)["hash"] for n in ("source-1", "source-2")}
    assert heads_within(store, router, finals)
    assert not heads_within(store, router, {**finals, "source-1": finals["source-2"]})  # another member's data
