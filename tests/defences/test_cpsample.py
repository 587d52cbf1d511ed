"""CPSample: bits, the protection classifier, guidance exactly when the confidence rule fires, and
no change at all when the classifier says ½; single and composed models; CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from silodiff.cli.main import app
from silodiff.composition import compose, load_denoiser
from silodiff.defences import (
    CPSampleDenoiser, fire_rate, guided_fraction, protect, protect_from_store, protection_bits, protection_loss,
    train_protection_classifier,
)
from silodiff.defences.cpsample import noised_probabilities
from silodiff.errors import SilodiffError
from silodiff.sampling import NoiseTrajectory, make_scheduler, sample
from silodiff.training import TrainConfig, noise_scheduler


class Half(torch.nn.Module):
    """p(y | x_t, t) = ½ everywhere (but still a function of x, so gradients exist and are zero)."""

    def forward(self, x, t, labels=None):
        return torch.zeros(len(x), 2) + 0 * x.flatten(1).sum(1, keepdim=True)


class Slope(torch.nn.Module):
    """logit(p) = a · mean(x): confident where |mean(x)| is large."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x, t, labels=None):
        z = self.a * x.flatten(1).mean(1, keepdim=True)
        return torch.cat([torch.zeros_like(z), z], 1)


def test_bits_are_seeded_and_keyed_by_sample_id():
    ids = [f"s{i}" for i in range(200)]
    bits = protection_bits(ids, seed=3)
    assert bits == protection_bits(list(reversed(ids)), seed=3)
    assert bits != protection_bits(ids, seed=4)
    assert 60 < sum(bits.values()) < 140


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.001])
def test_guidance_applied_exactly_when_the_rule_fires(tiny_mlp, alpha):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=gen) * torch.linspace(0.01, 30, 64).view(-1, 1, 1, 1)
    x[:4] = 0  # p = ½ exactly: never guided, not even at α = 0.5
    t = torch.randint(0, 1000, (64,), generator=gen)
    clf, s = Slope(8.0), 7.0
    wrapped = CPSampleDenoiser(tiny_mlp, clf, alpha=alpha, scale=s)
    with torch.no_grad():
        got = wrapped(x, t)
        eps = tiny_mlp(x, t)
    # reference: p, the rule, and ∇_x log p(opposite) by hand (logit z = a·mean(x))
    z = clf(x, t)[:, 1]
    p = torch.sigmoid(z)
    fire = torch.maximum(p, 1 - p) > 1 - alpha
    opposite_is_one = p < 0.5
    dlogp_dz = torch.where(opposite_is_one, 1 - p, -p)  # d log σ(z) = 1 − p;  d log(1 − σ(z)) = −p
    grad = (dlogp_dz * clf.a / 64).view(-1, 1, 1, 1).expand_as(x)
    sigma = (1 - noise_scheduler().alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    want = torch.where(fire.view(-1, 1, 1, 1), eps - s * sigma * grad, eps)
    assert 0 < int(fire.sum()) < 64
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(got[~fire], eps[~fire])
    assert wrapped.guided == int(fire.sum()) and wrapped.calls == 64


def test_a_low_noise_classifier_never_fires_above_its_timestep_range(tiny_mlp):
    """A classifier trained on t < T (its stored config says so) is not asked, and never fires, at t ≥ T."""
    x = torch.full((6, 1, 8, 8), 3.0)  # p ≈ 1 for Slope(8): the rule fires wherever it is asked
    clf = Slope(8.0)
    clf.info = {"train": {"max_timestep": 300}}
    wrapped = CPSampleDenoiser(tiny_mlp, clf, alpha=0.25, scale=5.0)
    assert wrapped.max_timestep == 300 and CPSampleDenoiser(tiny_mlp, Slope(8.0)).max_timestep == 1000
    t = torch.tensor([0, 150, 299, 300, 600, 999])
    with torch.no_grad():
        got, eps = wrapped(x, t), tiny_mlp(x, t)
    assert wrapped.last_guided.tolist() == [True, True, True, False, False, False]
    assert torch.equal(got[3:], eps[3:]) and not torch.equal(got[:3], eps[:3])
    rates = fire_rate(clf, x, 0.25, timesteps=(0, 299, 300, 600))  # the diagnostic follows the same range
    assert rates[0] == rates[299] == 1.0 and rates[300] == rates[600] == 0.0
    assert fire_rate(Slope(8.0), x, 0.25, timesteps=(300, 600)) == {300: 1.0, 600: 1.0}  # no range: every t

    class Untouchable(torch.nn.Module):
        info = {"train": {"max_timestep": 300}}

        def forward(self, x, t, labels=None):
            raise AssertionError("asked above its range")

    high = CPSampleDenoiser(tiny_mlp, Untouchable(), alpha=0.25, scale=5.0)
    with torch.no_grad():
        assert torch.equal(high(x, torch.full((6,), 500)), tiny_mlp(x, torch.full((6,), 500)))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_half_classifier_leaves_sampling_unchanged(tiny_mlp, sampler, alpha):
    noise = NoiseTrajectory.draw((6, 1, 8, 8), 8, torch.Generator().manual_seed(1))
    labels = torch.arange(6)
    plain = sample(tiny_mlp, None, make_scheduler(sampler), steps=8, labels=labels, noise=noise, eta=0.5)
    wrapped = CPSampleDenoiser(tiny_mlp, Half(), alpha=alpha, scale=1e4)
    guarded = sample(wrapped, None, make_scheduler(sampler), steps=8, labels=labels, noise=noise, eta=0.5)
    assert torch.equal(plain, guarded)
    assert wrapped.guided == (6 * 8 if alpha == 1.0 else 0)  # α = 1 fires always, with a zero gradient


def test_confident_classifier_changes_sampling(tiny_mlp):
    noise = NoiseTrajectory.draw((6, 1, 8, 8), 8, torch.Generator().manual_seed(1))
    plain = sample(tiny_mlp, None, make_scheduler("ddim"), steps=8, noise=noise)
    guarded = sample(CPSampleDenoiser(tiny_mlp, Slope(50.0), alpha=0.5, scale=100.0), None, make_scheduler("ddim"), steps=8, noise=noise)
    assert not torch.equal(plain, guarded)


def test_bad_alpha_and_scale_are_loud(tiny_mlp):
    with pytest.raises(SilodiffError, match="alpha"):
        CPSampleDenoiser(tiny_mlp, Half(), alpha=0.0)
    with pytest.raises(SilodiffError, match="scale"):
        CPSampleDenoiser(tiny_mlp, Half(), scale=-1)


def test_composed_model_wraps_only_allowed_members(defence_store):
    names = sorted(c["name"] for c in defence_store.catalog.compartments())
    only = compose(defence_store, [names[0]], router="uniform")
    wrapped = protect(only, {names[0]: Slope(50.0)}, alpha=0.5, scale=10.0)  # no classifier needed for names[1]
    assert [type(m) for m in wrapped.members] == [CPSampleDenoiser]
    images = sample(wrapped, (4, 1, 8, 8), make_scheduler("ddpm"), steps=4, labels=torch.zeros(4, dtype=torch.long),
                    generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(images).all() and guided_fraction(wrapped) > 0
    with pytest.raises(SilodiffError, match="no protection classifier"):
        protect(compose(defence_store, names, router="uniform"), {names[0]: Half()})


def test_protection_classifier_artifact_and_store_wiring(defence_store):
    store = defence_store
    names = sorted(c["name"] for c in store.catalog.compartments())
    config = TrainConfig(epochs=3, batch_size=16, label_dropout=0.0)
    for name in names:
        r = train_protection_classifier(store, compartment=name, config=config, width=8, max_epochs=3, progress=False)
        row = store.catalog.artifact(r["artifact"])
        assert row["kind"] == "protection-classifier" and row["compartment"] == name
        ids = store.catalog.lineage(row["hash"])
        member = store.active("compartment", name)[-1]["hash"]
        assert ids == store.catalog.lineage(member)  # lineage = the compartment's own training set
        clf = store.load(row["hash"])
        assert set(clf.info["bits"]) == set(ids) and 0 <= r["train_accuracy"] <= 1
    model = protect_from_store(store, compose(store, names[:1], router="trajectory"), "composed", alpha=0.25, scale=10.0)
    assert isinstance(model.members[0], CPSampleDenoiser)
    with pytest.raises(SilodiffError, match="paragon"):
        protect_from_store(store, load_denoiser(store, "paragon"), "paragon")
    with pytest.raises(SilodiffError, match="exactly one"):
        train_protection_classifier(store, compartment=names[0], paragon=True)


def test_cli_train_and_sample(defence_store, tmp_path):
    runner = CliRunner()
    store = str(defence_store.root)
    r = runner.invoke(app, ["train", "protection-classifier", "--store", store, "--paragon", "--epochs", "2", "--width", "8",
                            "--target-accuracy", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["protects"] == "paragon"
    r = runner.invoke(app, ["sample", "--store", store, "--model", "paragon", "--cpsample", "--alpha", "0.5", "--scale", "10",
                            "--n", "4", "--steps", "4", "--sampler", "ddim", "--out", str(tmp_path / "s"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert 0 <= out["cpsample"]["guided_fraction"] <= 1 and (tmp_path / "s" / "samples.npz").exists()
    r = runner.invoke(app, ["sample", "--store", store, "--model", "paragon", "--cpsample", "--alpha", "0", "--n", "2",
                            "--out", str(tmp_path / "s2")])
    assert r.exit_code == 2 and r.output.startswith("error:") and "alpha" in r.output
    r = runner.invoke(app, ["train", "iet-agc", "--store", store, "--shards", "2", "--rounds", "1", "--epochs", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["compartmentalised"] is False


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.001])
def test_fire_rate_matches_the_rule_on_noised_images(alpha):
    """fire_rate(t) = mean over images of [max(p, 1 − p) > 1 − α] at x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (ε drawn per t)."""
    x0 = torch.linspace(-1, 1, 40)[:, None, None, None].expand(40, 1, 8, 8).contiguous()
    timesteps = (0, 100, 500)
    rates = fire_rate(Slope(8.0), x0, alpha, timesteps, seed=3)
    gen, abar = torch.Generator().manual_seed(3), noise_scheduler().alphas_cumprod
    for t in timesteps:
        x_t = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * torch.randn(x0.shape, generator=gen)
        p = torch.sigmoid(8.0 * x_t.flatten(1).mean(1))
        assert rates[t] == pytest.approx(float((torch.maximum(p, 1 - p) > 1 - alpha).float().mean()), abs=1e-4)
    if alpha < 0.5:
        assert 0 < rates[0] < 1  # the images near ±1 fire, those near 0 do not (α = ½ fires wherever p ≠ ½)
    assert fire_rate(Half(), x0, alpha, timesteps) == {t: 0.0 for t in timesteps}


def test_protection_loss_adds_ce_to_half_on_a_paired_non_member():
    """ℓ_j = CE(bit_j) + w · (−½ Σ_k log p(k | x'_t)), x' a seeded random non-member noised at the same t_j."""
    gen = torch.Generator().manual_seed(0)
    x0, cal = torch.randn(6, 1, 8, 8, generator=gen), torch.randn(10, 1, 8, 8, generator=gen) * 3
    bits, clf, scheduler = torch.tensor([0, 1, 1, 0, 1, 0]), Slope(5.0), noise_scheduler()
    batch = {"x0": x0, "labels": None, "rows": torch.arange(6), "t": torch.tensor([0, 5, 50, 200, 600, 999]),
             "noise": torch.randn(x0.shape, generator=gen)}
    got = protection_loss(bits, cal, weight=0.7, seed=4)(clf, batch, scheduler)
    member = torch.nn.functional.cross_entropy(clf(scheduler.add_noise(x0, batch["noise"], batch["t"]), batch["t"]), bits,
                                               reduction="none")
    ref_gen = torch.Generator().manual_seed(4)
    pick = torch.randint(0, 10, (6,), generator=ref_gen)
    x_t = scheduler.add_noise(cal[pick], torch.randn(6, 1, 8, 8, generator=ref_gen), batch["t"])
    p = torch.sigmoid(clf(x_t, batch["t"])[:, 1])
    want = member - 0.7 * 0.5 * (torch.log(p) + torch.log(1 - p))
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(protection_loss(bits)(clf, batch, scheduler), member)  # no calibration: the paper's loss


def test_calibration_lineage_holdout_and_errors(defence_store):
    store = defence_store
    names = sorted(c["name"] for c in store.catalog.compartments())
    own, other = names[0], names[1]
    config = TrainConfig(epochs=2, batch_size=16, label_dropout=0.0)
    r = train_protection_classifier(store, compartment=own, config=config, width=8, max_epochs=2, calibration=[other],
                                    calibration_holdout=0.25, progress=False)
    members = set(store.catalog.lineage(store.active("compartment", own)[-1]["hash"]))
    others = {s["sample_id"] for s in store.catalog.sample_rows(other)}
    lineage = set(store.catalog.lineage(r["artifact"]))
    assert members < lineage and lineage - members < others  # members + the calibration images it trained on
    probe = others - lineage
    assert len(probe) == r["calibration"]["held_out"] == int(len(others) * 0.25) > 0
    assert r["calibration"]["n"] == len(lineage - members)
    assert set(r["fire_rate"]) == {"training", "held-out"}
    # forgetting a calibration image reaches the classifier; an unused (held-out) one does not
    saw = lambda ids: {a["hash"] for a in store.catalog.artifacts_that_saw(ids)}  # noqa: E731
    assert r["artifact"] in saw([sorted(lineage - members)[0]]) and r["artifact"] not in saw(sorted(probe))
    with pytest.raises(SilodiffError, match="unknown calibration source"):
        train_protection_classifier(store, compartment=own, calibration=["nope"], progress=False)
    with pytest.raises(SilodiffError, match="no sample outside"):
        train_protection_classifier(store, compartment=own, calibration=[own], progress=False)


def test_calibration_makes_the_classifier_unsure_off_the_training_set(defence_store):
    """Same seed, same steps: with calibration the classifier says ~½ on the held-out non-members, without it it does not."""
    store = defence_store
    names = sorted(c["name"] for c in store.catalog.compartments())
    config = TrainConfig(epochs=400, batch_size=20, lr=3e-3, label_dropout=0.0, ema_decay=0.9)
    confidence = {}
    for weight in (0.0, 1.0):
        r = train_protection_classifier(store, compartment=names[0], config=config, width=16, max_epochs=400, calibration=[names[1]],
                                        calibration_weight=weight, calibration_holdout=0.3, target_accuracy=1.1, progress=False)
        probe = sorted({s["sample_id"] for s in store.catalog.sample_rows(names[1])} - set(store.catalog.lineage(r["artifact"])))
        probs = noised_probabilities(store.load(r["artifact"]), store.dataset(probe).x(), (0, 50))
        confidence[weight] = float(torch.cat([(p - 0.5).abs() for p in probs.values()]).mean())
        assert r["accuracy_by_t"][0] >= 0.9  # it still knows the members' bits
    assert confidence[1.0] < 0.5 * confidence[0.0], confidence


def test_cli_calibrate_on(defence_store):
    runner = CliRunner()
    store = str(defence_store.root)
    names = sorted(c["name"] for c in defence_store.catalog.compartments())
    args = ["train", "protection-classifier", "--store", store, "--compartment", names[0], "--epochs", "2", "--width", "8",
            "--target-accuracy", "0", "--json"]
    r = runner.invoke(app, [*args, "--calibrate-on", names[1]])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["calibration_n"] > 0 and 0 <= row["fires_heldout_t0"] <= 1
    assert set(defence_store.catalog.lineage(row["artifact"])) > set(
        defence_store.catalog.lineage(defence_store.active("compartment", names[0])[-1]["hash"]))
    r = runner.invoke(app, [*args, "--calibrate-on", "nope"])
    assert r.exit_code == 2 and r.output.startswith("error:") and "unknown calibration source" in r.output


def test_cli_max_timestep_reaches_the_sampling_rule(defence_store, tiny_mlp):
    runner = CliRunner()
    names = sorted(c["name"] for c in defence_store.catalog.compartments())
    args = ["train", "protection-classifier", "--store", str(defence_store.root), "--compartment", names[0], "--epochs", "2",
            "--width", "8", "--target-accuracy", "0", "--json"]
    r = runner.invoke(app, [*args, "--max-timestep", "200"])
    assert r.exit_code == 0, r.output
    clf = defence_store.load(json.loads(r.stdout)[0]["artifact"])
    assert clf.info["train"]["max_timestep"] == 200
    assert CPSampleDenoiser(tiny_mlp, clf).max_timestep == 200
    r = runner.invoke(app, [*args, "--max-timestep", "0"])
    assert r.exit_code == 2 and r.output.startswith("error:") and "max_timestep" in r.output
