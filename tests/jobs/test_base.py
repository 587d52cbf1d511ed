"""A shared base on public sources, and compartments built on it (LoRA adapters or full fine-tunes):
effective lineage = own ids ∪ the base's, adapter-only checkpoints, resume, clean refusals."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.jobs import plan_compartments, train_base, train_compartments
from silodiff.jobs.slices import SliceJob, _initial_model
from silodiff.store.lineage import BASE, BaseRef, active_base
from silodiff.training import TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=16)


@pytest.fixture
def based(tmp_store, tiny_model_config):
    """A store whose source-0 is public and holds the base; compartments planned on source-1 only."""
    train_base(tmp_store, ["source-0"], config=CONFIG, model=tiny_model_config, progress=False)
    plan_compartments(tmp_store, by="source", slices=2)
    return tmp_store


def _ids(store, source):
    return {r["sample_id"] for r in store.catalog.sample_rows(source)}


def test_the_base_is_an_ordinary_artifact_on_public_sources(based):
    (base,) = based.catalog.artifacts(BASE)
    assert set(based.catalog.lineage(base["hash"])) == _ids(based, "source-0")
    assert based.catalog.public_sources() == ["source-0"]


def test_lora_compartment_lineage_is_its_own_ids_and_the_bases(based):
    train_compartments(based, ["source-1"], config=CONFIG, from_base=True, adapter="lora", lora={"rank": 2},
                       progress=False)
    final = max(based.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    assert set(based.catalog.lineage(final["hash"])) == _ids(based, "source-1") | _ids(based, "source-0")
    # a base sample is seen by the base and by every checkpoint built on it
    base_sample = sorted(_ids(based, "source-0"))[0]
    kinds = {(a["kind"], a["name"]) for a in based.catalog.artifacts_that_saw([base_sample])}
    assert kinds == {(BASE, BASE), ("compartment", "source-1")}
    # the checkpoint holds the adapter (and its training state), never the base's weights
    tensors, config = based.artifacts.get(final["hash"])
    assert config["model"]["kind"] == "lora-denoiser" and config["model"]["base_hash"] == active_base(based)["hash"]
    assert all("lora_" in k for k in tensors if not k.startswith("train/") or k.startswith("train/raw."))
    model, base = based.load(final["hash"]), based.load(active_base(based)["hash"])
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 100, 400, 900])
    with torch.no_grad():
        assert not torch.allclose(model(x, t, None), base(x, t, None))  # the adapter trained
    # a rerun resumes: nothing new is written
    before = {a["hash"] for a in based.catalog.artifacts(active=None)}
    (result,) = train_compartments(based, ["source-1"], config=CONFIG, from_base=True, adapter="lora",
                                   lora={"rank": 2}, progress=False)
    assert result.resumed_from == 2 and {a["hash"] for a in based.catalog.artifacts(active=None)} == before


def test_a_full_fine_tune_starts_from_the_base_weights(based):
    base = active_base(based)
    job = SliceJob(str(based.root), "compartment", "source-1", based.catalog.slices("source-1"), base["model"],
                   CONFIG.to_dict(), base=BaseRef.from_dict(base))
    start = _initial_model(based, job)
    reference = based.load(base["hash"])
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(start.state_dict()[k], v, rtol=0, atol=0)
    train_compartments(based, ["source-1"], config=CONFIG, from_base=True, progress=False)
    final = max(based.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    assert set(based.catalog.lineage(final["hash"])) == _ids(based, "source-1") | _ids(based, "source-0")


@pytest.mark.parametrize("kwargs, message", [
    ({"adapter": "lora", "lora": {"rank": 0}}, "rank must be ≥ 1"),
    ({"adapter": "lora", "lora": {"targets": ["no_such_layer"]}}, "match no linear"),
    ({"adapter": "dora"}, "unknown adapter"),
])
def test_bad_adapter_options_register_nothing(based, kwargs, message):
    before = {a["hash"] for a in based.catalog.artifacts(active=None)}
    with pytest.raises(SilodiffError, match=message):
        train_compartments(based, ["source-1"], config=CONFIG, from_base=True, progress=False, **kwargs)
    assert {a["hash"] for a in based.catalog.artifacts(active=None)} == before


def test_from_base_without_a_base_and_unknown_public_sources_are_refused(tmp_store):
    plan_compartments(tmp_store, by="source")
    with pytest.raises(SilodiffError, match="no base model"):
        train_compartments(tmp_store, config=CONFIG, from_base=True, progress=False)
    with pytest.raises(SilodiffError, match="need --from-base"):
        train_compartments(tmp_store, config=CONFIG, adapter="lora", progress=False)
    with pytest.raises(SilodiffError, match="unknown source"):
        train_base(tmp_store, ["nobody"], config=CONFIG)
    assert tmp_store.catalog.artifacts(active=None) == [] and tmp_store.catalog.public_sources() == []


def _lora_store(based):
    train_compartments(based, ["source-1"], config=CONFIG, from_base=True, adapter="lora", lora={"rank": 2},
                       progress=False)
    return based


def test_forgetting_a_compartment_sample_retrains_only_its_adapter(based):
    from silodiff.unlearning import forget, verify_certificate

    store = _lora_store(based)
    base_before = active_base(store)["hash"]
    victim = sorted(_ids(store, "source-1"))[0]
    cert = forget(store, sample_ids=[victim])
    assert active_base(store)["hash"] == base_before  # the base is untouched
    final = max(store.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    assert victim not in store.catalog.lineage(final["hash"])
    assert store.load(final["hash"]).base_hash == base_before
    # the retrained adapter keeps its effective lineage: it still saw every base sample (rights, `saw`, audits)
    assert set(store.catalog.lineage(base_before)) <= set(store.catalog.lineage(final["hash"]))
    ok, problems = verify_certificate(store, cert)
    assert ok, problems


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_a_retrain_after_forgetting_an_own_sample_starts_from_the_same_base(based, adapter):
    from silodiff.unlearning import forget, plan_forget

    train_compartments(based, ["source-1"], config=CONFIG, from_base=True, adapter=adapter, progress=False)
    base = active_base(based)
    victim = sorted(based.catalog.slices("source-1")[0])[0]  # in slice 0: the retrain starts before any slice
    (entry,) = [c for c in plan_forget(based, [victim])["compartments"] if c["name"] == "source-1"]
    assert entry["first_slice"] == 0 and not entry["rebase"]
    assert entry["extra"]["base"]["hash"] == base["hash"] and entry["extra"]["base"]["ids"] == base["ids"]
    forget(based, sample_ids=[victim], progress=False)
    final = max(based.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    assert set(based.catalog.lineage(final["hash"])) == (_ids(based, "source-1") - {victim}) | _ids(based, "source-0")


def test_replay_trains_on_the_base_samples_and_forgetting_keeps_it(based):
    from silodiff.unlearning import forget, verify_certificate

    replayed = TrainConfig(epochs=2, batch_size=16, replay=0.5)
    train_compartments(based, ["source-1"], config=CONFIG, from_base=True, adapter="lora", progress=False)
    plain = max(based.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    train_compartments(based, ["source-1"], config=replayed, from_base=True, adapter="lora", progress=False)
    final = max(based.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    assert final["hash"] != plain["hash"]  # another recipe: trained anew, not resumed from the plain adapter
    assert based.catalog.lineage(final["hash"]) == based.catalog.lineage(plain["hash"])  # own ∪ base, as before
    victim = sorted(_ids(based, "source-1"))[0]
    cert = forget(based, sample_ids=[victim], progress=False)  # the retrain replays the same base samples
    final = max(based.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])
    assert based.artifacts.get(final["hash"])[1]["info"]["train"]["replay"] == 0.5
    assert set(based.catalog.lineage(final["hash"])) == (_ids(based, "source-1") - {victim}) | _ids(based, "source-0")
    ok, problems = verify_certificate(based, cert)
    assert ok, problems


def test_replay_is_refused_where_there_is_no_base_to_replay(based):
    from silodiff.jobs import train_paragon

    replayed = TrainConfig(epochs=1, batch_size=16, replay=0.5)
    before = {a["hash"] for a in based.catalog.artifacts(active=None)}
    with pytest.raises(SilodiffError, match="and --replay need --from-base"):
        train_compartments(based, ["source-1"], config=replayed, progress=False)
    with pytest.raises(SilodiffError, match="not the paragon"):
        train_paragon(based, config=replayed, progress=False)
    with pytest.raises(SilodiffError, match="not the base itself"):
        train_base(based, ["source-0"], config=replayed, progress=False)
    assert {a["hash"] for a in based.catalog.artifacts(active=None)} == before


def test_forgetting_a_base_sample_retrains_the_base_and_every_compartment_on_it(based):
    from silodiff.unlearning import forget, plan_forget, verify_certificate

    store = _lora_store(based)
    old_base = active_base(store)["hash"]
    old_comp = {a["hash"] for a in store.catalog.artifacts("compartment", name="source-1")}
    victim = sorted(_ids(store, "source-0"))[0]
    plan = plan_forget(store, [victim])
    assert plan["base"]["old"] == old_base and plan["estimate"]["base_steps"] > 0
    (entry,) = [c for c in plan["compartments"] if c["name"] == "source-1"]
    assert entry["rebase"] and entry["first_slice"] == 0 and entry["cost_fraction"] == 1.0
    cert = forget(store, sample_ids=[victim])
    new_base = active_base(store)["hash"]
    assert new_base != old_base and victim not in store.catalog.lineage(new_base)
    new_comp = store.catalog.artifacts("compartment", name="source-1")
    assert new_comp and not old_comp & {a["hash"] for a in new_comp}
    final = max(new_comp, key=lambda a: a["slice"])
    assert store.load(final["hash"]).base_hash == new_base
    assert not [a for a in store.catalog.artifacts_that_saw([victim]) if a["active"]]
    ok, problems = verify_certificate(store, cert)
    assert ok, problems


def test_the_router_and_the_composition_with_the_base_as_a_member(based):
    from silodiff.composition import compose, train_router
    from silodiff.sampling import generate

    store = based
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, ["source-1"], config=CONFIG, from_base=True, adapter="lora", lora={"rank": 2},
                       progress=False)
    router = train_router(store, config=CONFIG, progress=False, with_base=True)
    # the router tells the compartment from the base by the compartment's own data, and its lineage is exactly
    # what it trained on: source-1's samples and the base's (as a class of its own)
    assert set(store.catalog.lineage(router)) == _ids(store, "source-1") | _ids(store, "source-0")
    assert store.load(router).info["compartments"] == [BASE, "source-1"]
    for which in ("classifier", "trajectory", "uniform"):
        model = compose(store, ["source-1"], router=which, with_base=True)
        assert model.names == ["source-1", BASE]
        images, _ = generate(model, 4, labels=[0, 1, 2, 3], steps=4, seed=0)
        assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
        assert (model.calls > 0).all()  # both the compartment and the base were evaluated
    without = compose(store, ["source-1"], router="trajectory")
    assert without.names == ["source-1"]


def test_lora_members_share_one_base_and_give_the_same_eps(based):
    from silodiff.composition import compose
    from silodiff.nn.lora import BankMember

    store = based
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, ["source-0", "source-1"], config=CONFIG, from_base=True, adapter="lora",
                       lora={"rank": 2}, progress=False)
    shared = compose(store, ["source-0", "source-1"], router="uniform", with_base=True)
    separate = compose(store, ["source-0", "source-1"], router="uniform", with_base=True, share=False)
    assert all(isinstance(m, BankMember) for m in shared.members)
    assert len({id(m.bank) for m in shared.members}) == 1  # one base in memory for all three members
    assert not any(isinstance(m, BankMember) for m in separate.members)
    x, t = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.full((6,), 300)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        torch.testing.assert_close(shared(x, t, y), separate(x, t, y), rtol=1e-5, atol=1e-5)


def test_a_source_added_to_a_store_on_a_base_is_an_adapter_on_that_base(based):
    from silodiff.data import SampleSet, load_digits
    from silodiff.unlearning import add_source

    store = _lora_store(based)
    extra = load_digits("single:museum", limit=64)
    new = extra.subset(extra.sample_ids[32:])  # digits32 holds the first 32
    add_source(store, SampleSet(new.pixels, new.labels, new.sample_ids, ["museum"] * len(new)), "digits")
    final = max(store.catalog.artifacts("compartment", name="museum"), key=lambda a: a["slice"])
    assert store.load(final["hash"]).base_hash == active_base(store)["hash"]
    assert set(store.catalog.lineage(final["hash"])) == _ids(store, "museum") | _ids(store, "source-0")


def test_lora_compartments_train_in_worker_processes(based):
    """A fresh worker rebuilds a LoRA model from its config alone (peft's module is imported on first build)."""
    (result,) = train_compartments(based, ["source-1"], config=CONFIG, from_base=True, adapter="lora",
                                   lora={"rank": 2}, backend="process", workers=1, progress=False)
    assert len(result.artifacts) == 2
    assert based.load(result.artifacts[-1]).base_hash == active_base(based)["hash"]
