"""CPSample: classifier-protected sampling against training-image replication.

Kazdan, Sun, Han, Petersen, Vu, Ermon, arXiv 2409.07025; METHODS.md §4.

  1. every training image i gets a random bit y_i ~ Bernoulli(½) (seeded; kept,
     keyed by sample_id, in the classifier artifact's config);
  2. a time-conditioned classifier p_φ(y | x_t, t) is trained with the one loop
     (``classifier_loss``) on noised training images until it overfits: on the
     training set it knows the bits, off it it can only say ½;
  3. sampling wraps the denoiser (same contract): with p = p_φ(y=1 | x_t, t),
     if max(p, 1 − p) > 1 − α the trajectory is close to a training image, so
     guide toward the opposite bit ŷ' = 1 − argmax:
     ``ε̂ = ε_θ(x_t, t) − s · √(1 − ᾱ_t) · ∇_x log p_φ(ŷ' | x_t, t)``; else ``ε̂ = ε_θ``.

Calibration (an option beyond the paper): on small data the classifier is
nearly as confident on fresh images as on its training images, so the rule fires
almost everywhere.  ``calibration=`` non-member images (a public source, say)
add a cross-entropy toward ½ on them, noised at the same t: the classifier then
keeps its certainty for the training images.  Those images shape its weights, so
they join its lineage (forgetting one drops the classifier).

Low-noise classifier (another option): the bits are only knowable at small t, yet a
classifier trained on every t spends most of its batches on noise it cannot read.
``TrainConfig(max_timestep=T)`` trains it on t < T only; the artifact keeps T (in its
training config) and the rule never fires at t ≥ T, where the classifier was never trained.

The diffusion model is not retrained.  A composed model gets one classifier per
compartment (each trained only on that compartment, so lineage stays
per-compartment), wrapped around each allowed member: only allowed
compartments' classifiers ever act.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..composition import ComposedDenoiser
from ..devices import device_of, seeded
from ..errors import SilodiffError
from ..jobs.compartments import PARAGON
from ..nn import NoisyClassifier
from ..nn.denoisers import Denoiser
from ..store import Store
from ..store.lineage import final_checkpoint, trained_compartments
from ..training import TrainConfig, classifier_loss, new_state, noise_scheduler, train

KIND = "protection-classifier"
EVAL_TIMESTEPS = (0, 50, 100, 250, 500, 750)


def protection_bits(sample_ids: Sequence[str], seed: int = 0) -> dict[str, int]:
    """y_i ~ Bernoulli(½) per sample, drawn in sorted-id order from ``seed`` (so a set always gets the same bits)."""
    ids = sorted(set(sample_ids))
    bits = torch.randint(0, 2, (len(ids),), generator=torch.Generator().manual_seed(seed))
    return dict(zip(ids, bits.tolist()))


@torch.no_grad()
def noised_probabilities(classifier: torch.nn.Module, x0: torch.Tensor, timesteps: Sequence[int] = EVAL_TIMESTEPS, seed: int = 0,
                         num_train_timesteps: int = 1000) -> dict[int, torch.Tensor]:
    """``p_φ(y = 1 | x_t, t)`` of images noised at each t (one fixed ε per t, drawn from ``seed`` on the
    classifier's device), {t: (n,)} on the CPU."""
    scheduler = noise_scheduler(num_train_timesteps)
    device = device_of(classifier)
    gen = seeded(seed, device)
    classifier.eval()
    x0 = x0.to(device)
    out = {}
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=gen, device=device)
        tt = torch.full((len(x0),), t, dtype=torch.long, device=device)
        out[int(t)] = torch.softmax(classifier(scheduler.add_noise(x0, noise, tt), tt).float(), dim=1)[:, 1].cpu()
    return out


def bit_accuracy(classifier: torch.nn.Module, x0: torch.Tensor, bits: torch.Tensor, timesteps: Sequence[int] = EVAL_TIMESTEPS,
                 seed: int = 0, num_train_timesteps: int = 1000) -> dict[int, float]:
    """Accuracy of ``p_φ(y | x_t, t)`` on the training images noised at each t (one fixed ε per t)."""
    probs = noised_probabilities(classifier, x0, timesteps, seed, num_train_timesteps)
    return {t: round(float(((p > 0.5).long() == bits).float().mean()), 4) for t, p in probs.items()}


def trained_below(classifier: torch.nn.Module, num_train_timesteps: int = 1000) -> int:
    """The classifier's timestep range [0, T) from its stored training config (an in-memory module: every t)."""
    return (getattr(classifier, "info", None) or {}).get("train", {}).get("max_timestep") or num_train_timesteps


def fire_rate(classifier: torch.nn.Module, x0: torch.Tensor, alpha: float, timesteps: Sequence[int] = EVAL_TIMESTEPS,
              seed: int = 0, num_train_timesteps: int = 1000, max_timestep: int | None = None) -> dict[int, float]:
    """Fraction of images noised at each t on which the rule ``max(p, 1 − p) > 1 − α`` fires.

    On the training images it should be ≈ 1 at small t; on fresh images of the same
    distribution it should be ≈ 0 (the classifier "can only say ½" there).  The gap
    between the two is what lets CPSample act on replicas without touching the rest.
    At t ≥ ``max_timestep`` (default: the classifier's own range) the rule never fires.
    """
    limit = max_timestep or trained_below(classifier, num_train_timesteps)
    probs = noised_probabilities(classifier, x0, timesteps, seed, num_train_timesteps)
    return {t: round(float((torch.maximum(p, 1 - p) > 1 - alpha).float().mean()), 4) if t < limit else 0.0
            for t, p in probs.items()}


def protection_loss(bits: torch.Tensor, calibration: torch.Tensor | None = None, *, weight: float = 1.0,
                    seed: int = 0) -> Callable[..., torch.Tensor]:
    """Per-sample loss of the protection classifier, (b,).

    Cross-entropy of the member's bit; with ``calibration`` (non-member images, (m, c, h, w))
    each member j is paired with a random non-member noised at the same t_j, whose
    cross-entropy toward (½, ½) is added with ``weight``: ``ℓ_j = CE(y_j) − weight · ½ Σ_k log p_φ(k | x'_t)``.
    """
    member = classifier_loss(bits)
    if calibration is None:
        return member
    on: dict[str, Any] = {}  # the generator and the calibration images, on the training device at first use

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any], scheduler) -> torch.Tensor:
        t = batch["t"]
        if "gen" not in on:
            on["gen"], on["x"] = seeded(seed, t.device), calibration.to(t.device)
        pick = torch.randint(0, len(calibration), (len(t),), generator=on["gen"], device=t.device)
        x = on["x"][pick]
        x_t = scheduler.add_noise(x, torch.randn(x.shape, generator=on["gen"], device=t.device), t)
        half = -torch.log_softmax(model(x_t, t, None).float(), dim=1).mean(dim=1)  # CE toward (½, ½)
        return member(model, batch, scheduler) + weight * half

    return loss_fn


def _calibration_ids(store: Store, sources: Sequence[str], members: Sequence[str]) -> list[str]:
    """Live ids of the calibration sources, less the protected model's own training ids."""
    known = {s["name"] for s in store.catalog.sources()}
    unknown = [s for s in sources if s not in known]
    if unknown:
        raise SilodiffError(f"unknown calibration source(s): {', '.join(unknown)} (the store has {', '.join(sorted(known)) or 'none'})")
    taken = set(members)
    ids = sorted({r["sample_id"] for s in sources for r in store.catalog.sample_rows(s)} - taken)
    if not ids:
        raise SilodiffError(f"calibration source(s) {', '.join(sources)} hold no sample outside the protected model's training set")
    return ids


def _target(store: Store, compartment: str | None, paragon: bool, artifact: str | None) -> tuple[str, str | None, list[str]]:
    """(classifier name, compartment, training ids) for the model the classifier will protect."""
    if sum(x is not None and x is not False for x in (compartment, paragon or None, artifact)) != 1:
        raise SilodiffError("choose exactly one of --compartment NAME, --paragon or --artifact HASH")
    if compartment is not None:
        if compartment not in trained_compartments(store):
            raise SilodiffError(f"not a trained compartment: {compartment!r}")
        row = final_checkpoint(store, "compartment", compartment)
        return compartment, compartment, store.catalog.lineage(row["hash"])
    if paragon:
        return PARAGON, None, store.catalog.lineage(final_checkpoint(store, "paragon", PARAGON)["hash"])
    row = store.catalog.artifact(artifact)
    return row["hash"], None, store.catalog.lineage(row["hash"])


def train_protection_classifier(
    store: Store,
    *,
    compartment: str | None = None,
    paragon: bool = False,
    artifact: str | None = None,
    config: TrainConfig | None = None,
    width: int = 64,
    bit_seed: int = 0,
    target_accuracy: float = 0.99,
    max_epochs: int | None = None,
    calibration: Sequence[str] = (),
    calibration_weight: float = 1.0,
    calibration_holdout: float = 0.2,
    progress: bool = True,
) -> dict[str, Any]:
    """Train p_φ(y | x_t, t) on the protected model's training set; returns a summary with the artifact hash.

    Trains ``config.epochs`` at a time until the accuracy on training images noised at
    t ≤ 100 (and below ``config.max_timestep``) reaches ``target_accuracy`` or ``max_epochs``
    (default 4 × epochs) is spent.

    ``calibration``: source names whose samples (less the training set) are non-members to
    calibrate on (see the module docstring); a seeded ``calibration_holdout`` fraction of
    them is kept out of training to report how often the rule fires off the training set
    (``fire_rate``, α = 0.25).  The classifier's lineage is the training set plus the
    calibration samples it trained on.
    """
    config = (config or TrainConfig(epochs=300, lr=2e-3, label_dropout=0.0, ema_decay=0.99)).check()
    max_epochs = max_epochs or 4 * config.epochs
    if calibration_weight < 0 or not 0 <= calibration_holdout < 1:
        raise SilodiffError("calibration_weight must be ≥ 0 and calibration_holdout in [0, 1)")
    name, comp, ids = _target(store, compartment, paragon, artifact)
    if not ids:
        raise SilodiffError(f"{name!r} has an empty lineage: nothing to protect")
    data = store.dataset(ids)
    bits_by_id = protection_bits(data.sample_ids, bit_seed)
    bits = torch.as_tensor([bits_by_id[s] for s in data.sample_ids])  # (n,), row order of ``data``
    cal_ids, probe_ids, x_cal = [], [], None
    if calibration:
        pool = _calibration_ids(store, calibration, data.sample_ids)
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(bit_seed)).tolist()
        n_probe = int(len(pool) * calibration_holdout) if len(pool) > 1 else 0
        probe_ids, cal_ids = sorted(pool[i] for i in order[:n_probe]), sorted(pool[i] for i in order[n_probe:])
        pool_data = store.dataset(pool)  # read once: the calibration images and the held-out probe
        x_cal = pool_data.subset(cal_ids).x()
    torch.manual_seed(config.seed)
    classifier = NoisyClassifier(image_shape=data.image_shape, num_outputs=2, num_classes=0, width=width)
    state = new_state(classifier, config)
    loss_fn = protection_loss(bits, x_cal, weight=calibration_weight, seed=config.seed + 1)
    x0, epochs, accuracy = data.x(), 0, {}
    limit = config.max_timestep or config.num_train_timesteps
    while epochs < max_epochs:
        train(state, data, config, loss_fn=loss_fn, progress=f"protection {name}" if progress else False)
        epochs += config.epochs
        accuracy = bit_accuracy(state.ema.model, x0, bits, num_train_timesteps=config.num_train_timesteps)
        if min(v for t, v in accuracy.items() if t <= min(100, limit - 1)) >= target_accuracy:
            break
    rule = dict(num_train_timesteps=config.num_train_timesteps, max_timestep=limit)
    fires = {"training": fire_rate(state.ema.model, x0, 0.25, **rule)}
    if probe_ids:
        fires["held-out"] = fire_rate(state.ema.model, pool_data.subset(probe_ids).x(), 0.25, **rule)
    sets = [store.catalog.add_sample_set(data.sample_ids)] + ([store.catalog.add_sample_set(cal_ids)] if cal_ids else [])
    cal = {"sources": sorted(calibration), "n": len(cal_ids), "held_out": len(probe_ids), "weight": calibration_weight} if calibration else None
    metrics = {"train_accuracy": accuracy[0], "accuracy_by_t": {str(k): v for k, v in accuracy.items()}, "epochs": epochs,
               "n": len(data), "bit_seed": bit_seed, "protects": name, "calibration": cal,
               "fire_rate_alpha_0.25": {k: {str(t): v for t, v in f.items()} for k, f in fires.items()}}
    with store.catalog.transaction():
        store.catalog.set_active([r["hash"] for r in store.active(KIND, name)], False)
        digest = store.save(state.ema.model, KIND, name, sets, compartment=comp, metrics=metrics,
                            info={"bits": bits_by_id, "bit_seed": bit_seed, "protects": name, "train": config.to_dict(),
                                  "calibration": cal})
    return {"artifact": digest, "protects": name, "n": len(data), "epochs": epochs, "train_accuracy": accuracy[0],
            "accuracy_by_t": accuracy, "calibration": cal, "fire_rate": fires}


class CPSampleDenoiser(Denoiser):
    """A denoiser wrapped with classifier protection (same contract: ``eps = model(x_t, t, labels)``)."""

    def __init__(self, model: torch.nn.Module, classifier: torch.nn.Module, *, alpha: float = 0.25, scale: float = 1000.0,
                 num_train_timesteps: int = 1000):
        super().__init__()
        if not 0 < alpha <= 1:
            raise SilodiffError(f"CPSample alpha must be in (0, 1], got {alpha}")
        if scale < 0:
            raise SilodiffError(f"CPSample scale must be ≥ 0, got {scale}")
        self.model = model
        self.classifier = classifier.eval().requires_grad_(False)
        self.alpha, self.scale = alpha, scale
        self.num_classes = model.num_classes
        self.image_shape = model.image_shape
        self.register_buffer("sigma", (1 - noise_scheduler(num_train_timesteps).alphas_cumprod).sqrt().float(), persistent=False)
        self.max_timestep = trained_below(classifier, num_train_timesteps)  # the rule never fires at t ≥ this
        self.calls = 0  # rows seen
        self.guided = 0  # rows guided
        self.last_guided: torch.Tensor | None = None

    def guidance(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fire mask (b,), ∇_x log p_φ(ŷ' | x_t, t) (b, c, h, w)) with ŷ' the opposite of the classifier's bit."""
        trained = t < self.max_timestep  # (b,): never fire where the classifier was not trained
        if not trained.any():
            return trained, torch.zeros_like(x)
        with torch.enable_grad():  # the sampler runs under no_grad
            xg = x.detach().requires_grad_(True)
            logp = torch.log_softmax(self.classifier(xg, t).float(), dim=1)  # (b, 2)
            p = logp[:, 1].exp()
            fire = (torch.maximum(p, 1 - p) > 1 - self.alpha) & trained  # (b,)
            if not fire.any():
                return fire, torch.zeros_like(x)
            opposite = (p < 0.5).long()  # 1 − argmax
            (grad,) = torch.autograd.grad(logp.gather(1, opposite[:, None]).sum(), xg)
        return fire.detach(), grad

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        with torch.no_grad():
            eps = self.model(x, t, labels)  # (b, c, h, w)
        fire, grad = self.guidance(x, t)
        # ε̂ = ε_θ − s √(1 − ᾱ_t) ∇ log p(ŷ' | x_t), only where the confidence rule fires
        shift = self.scale * self.sigma[t].view(-1, *([1] * (x.ndim - 1))) * grad
        self.calls += b
        self.guided += int(fire.sum())
        self.last_guided = fire
        return torch.where(fire.view(-1, *([1] * (x.ndim - 1))), eps - shift, eps)

    def step_info(self) -> dict:
        inner = getattr(self.model, "step_info", None)
        return {**(inner() if inner is not None else {}), "guided": self.last_guided}

    def observe_step(self, x: torch.Tensor, x_prev: torch.Tensor, step_fn) -> None:
        inner = getattr(self.model, "observe_step", None)
        if inner is not None:
            inner(x, x_prev, step_fn)

    @property
    def guided_fraction(self) -> float:
        return self.guided / self.calls if self.calls else 0.0


def protect(model: torch.nn.Module, classifiers: torch.nn.Module | Mapping[str, torch.nn.Module], *, alpha: float = 0.25,
            scale: float = 1000.0) -> torch.nn.Module:
    """Wrap a single denoiser (one classifier) or each member of a composed one (a classifier per member name)."""
    if isinstance(model, ComposedDenoiser):
        if not isinstance(classifiers, Mapping):
            raise SilodiffError("a composed model needs one protection classifier per compartment")
        missing = [n for n in model.names if n not in classifiers]
        if missing:
            raise SilodiffError(f"no protection classifier for compartment(s) {', '.join(missing)}: "
                                "run `silodiff train protection-classifier --compartment NAME`")
        for k, n in enumerate(model.names):  # only the allowed members are held, so only their classifiers act
            model.members[k] = CPSampleDenoiser(model.members[k], classifiers[n], alpha=alpha, scale=scale)
        return model
    if isinstance(classifiers, Mapping):
        raise SilodiffError("a single model needs exactly one protection classifier")
    return CPSampleDenoiser(model, classifiers, alpha=alpha, scale=scale)


def guided_fraction(model: torch.nn.Module) -> float:
    """Fraction of (row, step) evaluations that were guided, over every wrapped denoiser."""
    wrapped = [m for m in model.modules() if isinstance(m, CPSampleDenoiser)]
    calls = sum(m.calls for m in wrapped)
    return sum(m.guided for m in wrapped) / calls if calls else 0.0


def load_classifier(store: Store, name: str, device: str | torch.device | None = None) -> torch.nn.Module:
    """The active protection classifier for a compartment, ``paragon`` or an artifact hash."""
    rows = store.active(KIND, name)
    if not rows:
        flag = "--paragon" if name == PARAGON else (f"--compartment {name}" if len(name) != 64 else f"--artifact {name[:12]}")
        raise SilodiffError(f"no protection classifier for {name[:12] if len(name) == 64 else name!r}: "
                            f"run `silodiff train protection-classifier {flag}`")
    return store.load(rows[-1]["hash"], device=device)


def protect_from_store(store: Store, model: torch.nn.Module, which: str, *, alpha: float = 0.25, scale: float = 1000.0) -> torch.nn.Module:
    """Wrap a loaded model (``load_denoiser(store, which)``) with its stored protection classifier(s),
    loaded on the model's device."""
    device = device_of(model)
    if isinstance(model, ComposedDenoiser):
        return protect(model, {n: load_classifier(store, n, device) for n in model.names}, alpha=alpha, scale=scale)
    if which == PARAGON or which in trained_compartments(store):
        name = which
    else:
        name = store.catalog.artifact(which)["hash"]
    return protect(model, load_classifier(store, name, device), alpha=alpha, scale=scale)
