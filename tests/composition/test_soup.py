"""compose(combine="soup"): LoRA compartments of one base averaged in weight space, by sample counts, from the
active adapters of exactly the allowed compartments, so it follows a forget and a key's allowed set."""

from __future__ import annotations

import pytest
import torch

from silodiff.composition import AdapterSoup, compose
from silodiff.data import load_digits
from silodiff.errors import SilodiffError
from silodiff.jobs import plan_compartments, train_base, train_compartments
from silodiff.store.lineage import BASE, active_base
from silodiff.sampling import generate
from silodiff.store import Store
from silodiff.training import TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=16)
X = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
T, Y = torch.tensor([10, 200, 400, 700, 950]), torch.tensor([0, 2, 4, 6, 8])


@pytest.fixture
def lora_store(tmp_path, tiny_model_config):
    """48 digits in four sources: the base on source-0 (public); LoRA adapters on source-1 and source-2."""
    store = Store(tmp_path / "store")
    store.ingest(load_digits("random:4", limit=48), "digits")
    train_base(store, ["source-0"], config=CONFIG, model=tiny_model_config, progress=False)
    plan_compartments(store, by="source", slices=2)
    train_compartments(store, ["source-1", "source-2"], config=CONFIG, from_base=True, adapter="lora",
                       lora={"rank": 2}, progress=False)
    return store


def _eps(model):
    with torch.no_grad():
        return model(X, T, Y)


def _count(store, name):
    return sum(store.catalog.label_counts(name).values())


def test_a_soup_weights_each_adapter_by_its_samples_and_samples_as_one_model(lora_store):
    store = lora_store
    soup = compose(store, combine="soup")
    assert isinstance(soup, AdapterSoup) and soup.names == ["source-1", "source-2"]
    n1, n2 = _count(store, "source-1"), _count(store, "source-2")
    assert soup.weights == pytest.approx({"source-1": n1 / (n1 + n2), "source-2": n2 / (n1 + n2)})
    assert set(soup.artifact_hashes) == {"source-1", "source-2"}
    # the base as a member takes its share with no update of its own: every adapter's weight shrinks
    with_base = compose(store, combine="soup", with_base=True)
    n0 = len(active_base(store)["ids"])
    assert with_base.names == ["source-1", "source-2", BASE]
    assert with_base.weights[BASE] == pytest.approx(n0 / (n0 + n1 + n2))
    assert not torch.allclose(_eps(with_base), _eps(soup))
    images, _ = generate(soup, 4, labels=[0, 1, 2, 3], steps=4, seed=0)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()


def test_a_soup_of_one_allowed_compartment_is_that_compartment(lora_store):
    store = lora_store
    alone = compose(store, ["source-2"], combine="soup")
    assert alone.names == ["source-2"] and alone.weights == {"source-2": 1.0}
    member = compose(store, ["source-2"], router="uniform").members[0]
    torch.testing.assert_close(_eps(alone), _eps(member), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_eps(alone), _eps(compose(store, combine="soup")))


def test_a_soup_follows_a_forget_through_the_retrained_adapter(lora_store):
    from silodiff.unlearning import forget

    store = lora_store
    before = compose(store, combine="soup")
    victim = sorted(r["sample_id"] for r in store.catalog.sample_rows("source-1"))[0]
    forget(store, sample_ids=[victim])
    after = compose(store, combine="soup")
    assert after.artifact_hashes["source-1"] != before.artifact_hashes["source-1"]
    assert after.artifact_hashes["source-2"] == before.artifact_hashes["source-2"]
    assert victim not in store.catalog.lineage(after.artifact_hashes["source-1"])
    assert not torch.allclose(_eps(after), _eps(before))


def test_a_soup_refuses_what_it_cannot_average(lora_store, tiny_model_config):
    store = lora_store
    with pytest.raises(SilodiffError, match="unknown combine"):
        compose(store, combine="average")
    with pytest.raises(SilodiffError, match="gating does not apply"):
        compose(store, combine="soup", gate=0.1)
    train_compartments(store, ["source-3"], config=CONFIG, from_base=True, adapter="none", progress=False)
    with pytest.raises(SilodiffError, match="not LoRA: source-3"):
        compose(store, combine="soup")
    assert isinstance(compose(store, ["source-1", "source-2"], combine="soup"), AdapterSoup)
