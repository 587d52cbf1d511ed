"""Composition from a store: allowed-set isolation proven by instrumentation,
sparse gating, and loading models by name."""

from __future__ import annotations

import pytest
import torch

from silodiff.composition import ComposedDenoiser, compose, load_denoiser
from silodiff.errors import SilodiffError
from silodiff.sampling import generate
from silodiff.store import ArtifactStore
from silodiff.store.lineage import final_checkpoint, trained_compartments


@pytest.fixture
def reads(monkeypatch):
    """Every artifact hash read from disk while the test runs."""
    seen: list[str] = []
    original = ArtifactStore.get

    def get(self, digest, **options):
        seen.append(digest)
        return original(self, digest, **options)

    monkeypatch.setattr(ArtifactStore, "get", get)
    return seen


@pytest.mark.parametrize("router", ["classifier", "trajectory", "uniform"])
def test_excluded_compartments_are_never_read_or_evaluated(trained_store, reads, router):
    names = trained_compartments(trained_store)
    assert len(names) == 3
    allowed, excluded = names[:2], names[2]
    excluded_hashes = {a["hash"] for a in trained_store.catalog.artifacts("compartment", active=None, name=excluded)}
    assert len(excluded_hashes) == 2
    model = compose(trained_store, allowed=allowed, router=router)
    assert model.names == allowed and len(model.members) == 2
    expected = {final_checkpoint(trained_store, "compartment", n)["hash"] for n in allowed}
    if router == "classifier":
        expected.add(trained_store.active("router")[0]["hash"])
    assert set(reads) == expected and not excluded_hashes & set(reads)
    seen_weights = []
    images, _ = generate(model, 6, labels=list(range(6)), steps=4, seed=0,
                         callback=lambda i: seen_weights.append(i["weights"]))
    assert images.shape == (6, 1, 8, 8)
    assert all(w.shape == (6, 2) and torch.allclose(w.sum(1), torch.ones(6)) for w in seen_weights)
    # a member runs exactly on the rows where its weight is non-zero (the trajectory filter's
    # weights can underflow to exactly 0; the others are dense here)
    nonzero = sum((w > 0).long().sum(0) for w in seen_weights)
    assert model.calls.tolist() == nonzero.tolist() and 0 < model.calls.min() <= model.calls.max() <= 6 * 4
    if router != "trajectory":
        assert model.calls.tolist() == [6 * 4, 6 * 4]
    assert not excluded_hashes & set(reads)  # sampling read nothing more


def test_member_forwards_are_only_the_allowed_ones(trained_store, monkeypatch):
    """Instrument the members' forward passes: only allowed compartments run, each on its rows."""
    names = trained_compartments(trained_store)
    model = compose(trained_store, allowed=[names[0], names[2]], router="trajectory")
    ran: dict[str, int] = {}
    for name, member in zip(model.names, model.members):
        original = member.forward

        def forward(x, t, labels=None, _name=name, _original=original):
            ran[_name] = ran.get(_name, 0) + len(x)
            return _original(x, t, labels)

        monkeypatch.setattr(member, "forward", forward)
    generate(model, 3, labels=[1, 2, 3], steps=2, seed=0)
    assert set(ran) == {names[0], names[2]} and ran == dict(zip(model.names, model.calls.tolist()))


def test_gating_lowers_evaluations_and_keeps_each_rows_top_member(trained_store):
    dense = compose(trained_store, router="classifier")
    gated = compose(trained_store, router="classifier", gate=0.4)
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 10
    for t in (900, 500, 50):
        dense(x, t, labels)
        gated(x, t, labels)
        w0, wg = dense.last_weights, gated.last_weights  # (16, 3)
        top = w0.argmax(1)
        assert (wg[torch.arange(16), top] > 0).all()
        torch.testing.assert_close(wg.sum(1), torch.ones(16))
        dropped = (w0 < 0.4) & (torch.arange(3) != top[:, None])
        assert (wg[dropped] == 0).all()
        kept = wg > 0
        torch.testing.assert_close(wg[kept], (w0 * kept / (w0 * kept).sum(1, keepdim=True))[kept])
    assert gated.calls.sum() < dense.calls.sum() == 3 * 16 * 3
    # gated outputs are the renormalised mix of the kept members' outputs
    eps = gated(x, 50, labels)
    outs = torch.stack([m(x, 50, labels) for m in gated.members], 1)  # (16, 3, 1, 8, 8)
    torch.testing.assert_close(eps, (gated.last_weights[:, :, None, None, None] * outs).sum(1), rtol=1e-5, atol=1e-6)


def test_compose_errors(trained_store):
    with pytest.raises(SilodiffError, match="not a trained compartment: nope"):
        compose(trained_store, allowed=["nope"])
    with pytest.raises(SilodiffError, match="allowed set is empty"):
        compose(trained_store, allowed=[])
    with pytest.raises(SilodiffError, match="unknown router"):
        compose(trained_store, router="oracle")
    with pytest.raises(SilodiffError, match="gate"):
        compose(trained_store, gate=1.5)


def test_load_denoiser_by_name(trained_store):
    names = trained_compartments(trained_store)
    assert isinstance(load_denoiser(trained_store, "composed", router="uniform"), ComposedDenoiser)
    paragon = load_denoiser(trained_store, "paragon")
    assert paragon.artifact_hash == final_checkpoint(trained_store, "paragon", "paragon")["hash"]
    member = load_denoiser(trained_store, names[1])
    assert member.artifact_hash == final_checkpoint(trained_store, "compartment", names[1])["hash"]
    assert load_denoiser(trained_store, member.artifact_hash[:10]).artifact_hash == member.artifact_hash
    with pytest.raises(SilodiffError, match="no artifact"):
        load_denoiser(trained_store, "not-a-model")
