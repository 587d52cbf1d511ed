"""Membership inference against diffusion models (METHODS.md §6): does the served
model reveal that an image was in its training set?

Three attacks, scikit-learn shaped (``fit(model) -> self``, ``score(images, labels)
-> (n,)``, higher = more likely a member), each over a grid of timesteps:

- ``LossAttack`` (Matsumoto et al. 2023; Carlini et al. 2023): with random ε,
  ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε``, score ``−‖ε_θ(x_t, t) − ε‖²`` (the denoiser's own
  per-sample ``loss``, averaged over ``repeats`` draws).
- ``PIA`` (Kong et al. 2024, "An Efficient Membership Inference Attack for the
  Diffusion Model by Proximal Initialization"): ``ε₀ = ε_θ(x_0, 0)``,
  ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε₀``, score ``−Σ |ε_θ(x_t, t) − ε₀|⁴``.
- ``SecMI`` (SecMI-stat, Duan et al. 2023, "Are Diffusion Models Vulnerable to
  Membership Inference Attacks?"): deterministic DDIM inversion of x_0 to
  ``t − k`` in steps of k (diffusers' ``DDIMInverseScheduler``), one more inverse
  step to t, one DDIM step back (``DDIMScheduler``, η = 0); score
  ``−‖x_{t−k} − x̂_{t−k}‖²``.  The reference setting is t = 100, k = 10; our grid
  adds small t, where small, briefly trained models leak most (at larger t an
  overfit 8×8 MLP's reconstruction error can even be *larger* for members, an
  AUC below 0.5, which the report shows as measured).

The attacker sees only the served model, ``eps = model(x_t, t, labels)``, so a
composed model is attacked exactly like a single one (each batch is a fresh
query: with the trajectory-filter router a single query sees the prior weights,
since that router needs a sampling trajectory).  ``evaluate_attack`` gives
AUC, the best-threshold accuracy and the TPR at 1% FPR (the largest FPR ≤ 1%);
``run_attack`` scores members and non-members at every t of the grid and
reports the best t (chosen on the same data, as the papers do: optimistic).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from sklearn.metrics import roc_auc_score, roc_curve
from tqdm.auto import tqdm

from ..data import SampleSet
from ..devices import device_of, seeded
from ..errors import SilodiffError
from ..training import loss_grid, noise_scheduler

Images = tuple[torch.Tensor, torch.Tensor | None] | SampleSet


def _xy(data: Images) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(data, SampleSet):
        return data.x(), data.labels
    images, labels = data
    return torch.as_tensor(images, dtype=torch.float32), None if labels is None else torch.as_tensor(labels)


class MembershipAttack:
    """Shared machinery: batching, the timestep grid, calibration.  Subclasses
    implement ``_score_batch(x0, labels, timesteps, generator) -> (b, len(timesteps))``."""

    name = ""
    default_timesteps: tuple[int, ...] = ()

    def __init__(
        self,
        timesteps: tuple[int, ...] | None = None,
        *,
        conditional: bool = True,
        batch_size: int = 256,
        random_state: int = 0,
        progress: bool = False,
    ):
        self.timesteps = timesteps
        self.conditional = conditional
        self.batch_size = batch_size
        self.random_state = random_state
        self.progress = progress

    def _check_timesteps(self, T: int, timesteps: tuple[int, ...] | None = None) -> tuple[int, ...]:
        grid = tuple(sorted({int(t) for t in (timesteps or self.timesteps or self.default_timesteps)}))
        if not grid or grid[0] < 1 or grid[-1] >= T:
            raise SilodiffError(f"{self.name} timesteps must lie in 1..{T - 1}, got {grid}")
        return grid

    def fit(self, model: torch.nn.Module, members: Images | None = None, nonmembers: Images | None = None):
        """Attach the served model; with calibration members / non-members, pick the best t by AUC."""
        if not callable(model):
            raise SilodiffError("an attack needs a denoiser: eps = model(x_t, t, labels)")
        self.model_ = model.eval() if isinstance(model, torch.nn.Module) else model
        self.scheduler_ = noise_scheduler()
        self.timesteps_ = self._check_timesteps(self.scheduler_.config.num_train_timesteps)
        self.timestep_ = self.timesteps_[len(self.timesteps_) // 2]
        if (members is None) != (nonmembers is None):
            raise SilodiffError("calibrate with both members and non-members, or with neither")
        if members is not None:
            grid = self.evaluate(members, nonmembers)
            self.calibration_ = grid
            self.timestep_ = grid["best_t"]
        return self

    @torch.no_grad()
    def score_grid(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                   timesteps: tuple[int, ...] | None = None) -> np.ndarray:
        """Scores at every t of the grid (default ``timesteps_``), (n, T); higher = more likely a member."""
        self._require_fit()
        if timesteps is None:
            timesteps = self.timesteps_
        elif tuple(timesteps) != (self.timestep_,):
            timesteps = self._check_timesteps(self.scheduler_.config.num_train_timesteps, tuple(timesteps))
        x, y = _xy((images, labels))
        if y is not None and len(y) != len(x):
            raise SilodiffError(f"{len(y)} labels for {len(x)} images")
        if not self.conditional:
            y = None
        device = device_of(self.model_)  # the attack runs where the served model lives
        generator = seeded(self.random_state, device)
        reset = getattr(self.model_, "reset", None)  # a composed model: each batch is a fresh query, not a trajectory
        out = []
        for start in tqdm(range(0, len(x), self.batch_size), desc=self.name, disable=not self.progress, leave=False):
            rows = slice(start, start + self.batch_size)
            if reset is not None:
                reset()
            out.append(self._score_batch(x[rows].to(device), None if y is None else y[rows].to(device), timesteps,
                                         generator).float().cpu())
        return torch.cat(out).double().numpy() if out else np.zeros((0, len(timesteps)))

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> np.ndarray:
        """Per-sample membership score at the chosen timestep ``timestep_``, (n,)."""
        self._require_fit()
        return self.score_grid(images, labels, (self.timestep_,))[:, 0]

    def _require_fit(self) -> None:
        if not hasattr(self, "model_"):
            raise SilodiffError(f"call {type(self).__name__}.fit(model) before score()")

    def evaluate(self, members: Images, nonmembers: Images) -> dict[str, Any]:
        """Metrics at every t of the grid and the best t (by AUC), with the scores at the best t."""
        self._require_fit()
        s_in, s_out = self.score_grid(*_xy(members)), self.score_grid(*_xy(nonmembers))
        per_t = {int(t): evaluate_attack(s_in[:, j], s_out[:, j]) for j, t in enumerate(self.timesteps_)}
        best = max(per_t, key=lambda t: per_t[t]["auc"])
        j = self.timesteps_.index(best)
        return {"attack": self.name, "timesteps": list(self.timesteps_), "per_t": per_t, "best_t": best,
                **per_t[best], "scores_members": s_in[:, j], "scores_nonmembers": s_out[:, j]}

    def _eps(self, x: torch.Tensor, t: int, labels: torch.Tensor | None) -> torch.Tensor:
        return self.model_(x, torch.full((len(x),), t, dtype=torch.long, device=x.device), labels)


class LossAttack(MembershipAttack):
    """Loss threshold attack: members have lower ε-prediction error."""

    name = "loss"
    default_timesteps = (10, 20, 50, 100, 200, 500)

    def __init__(self, timesteps: tuple[int, ...] | None = None, *, repeats: int = 1, **kwargs: Any):
        super().__init__(timesteps, **kwargs)
        self.repeats = repeats

    def _score_batch(self, x0: torch.Tensor, labels: torch.Tensor | None, timesteps: tuple[int, ...],
                     generator: torch.Generator) -> torch.Tensor:
        if self.repeats < 1:
            raise SilodiffError(f"repeats must be ≥ 1, got {self.repeats}")
        # −ℓ with ℓ = mean((ε_θ(x_t, t) − ε)²), averaged over independent ε draws, (b, T)
        return -loss_grid(self.model_, x0, labels, timesteps, draws=self.repeats, generator=generator,
                          scheduler=self.scheduler_)


class PIA(MembershipAttack):
    """Proximal initialisation: the model's own ε at t = 0 replaces random noise."""

    name = "pia"
    default_timesteps = (10, 20, 50, 100, 200, 500)

    def _score_batch(self, x0: torch.Tensor, labels: torch.Tensor | None, timesteps: tuple[int, ...],
                     generator: torch.Generator) -> torch.Tensor:
        eps0 = self._eps(x0, 0, labels)  # 1. ε₀ = ε_θ(x_0, 0), (b, c, h, w)
        cols = []
        for t in timesteps:
            tt = torch.full((len(x0),), t, dtype=torch.long, device=x0.device)
            x_t = self.scheduler_.add_noise(x0, eps0, tt)  # 2. deterministic x_t
            cols.append(-(self._eps(x_t, t, labels) - eps0).abs().pow(4).flatten(1).sum(1))  # 3. −Σ|ε_θ(x_t,t) − ε₀|⁴
        return torch.stack(cols, 1)


class SecMI(MembershipAttack):
    """SecMI-stat: the one-step DDIM reconstruction error around the deterministic inversion."""

    name = "secmi"
    default_timesteps = (10, 20, 50, 100, 200)

    def __init__(self, timesteps: tuple[int, ...] | None = None, *, interval: int = 10, **kwargs: Any):
        super().__init__(timesteps, **kwargs)
        self.interval = interval

    def _check_timesteps(self, T: int, timesteps: tuple[int, ...] | None = None) -> tuple[int, ...]:
        grid = super()._check_timesteps(T, timesteps)
        if self.interval < 1 or T % self.interval or any(t % self.interval for t in grid):
            raise SilodiffError(f"secmi timesteps must be multiples of the interval {self.interval} "
                                f"(which must divide {T})")
        return grid

    def _score_batch(self, x0: torch.Tensor, labels: torch.Tensor | None, timesteps: tuple[int, ...],
                     generator: torch.Generator) -> torch.Tensor:
        k, T = self.interval, self.scheduler_.config.num_train_timesteps
        config = self.scheduler_.config
        inverse = DDIMInverseScheduler.from_config(config, clip_sample=False)
        ddim = DDIMScheduler.from_config(config, clip_sample=False)
        inverse.set_timesteps(T // k)
        ddim.set_timesteps(T // k)  # both step by k timesteps
        x, s, cols = x0, 0, {}
        for t in range(k, max(timesteps) + 1, k):
            # 1. deterministic inversion x_s → x_t (s = t − k), ε evaluated at (x_s, s)
            x_next = inverse.step(self._eps(x, s, labels), t, x).prev_sample
            if t in timesteps:
                # 2. one DDIM step back x_t → x̂_s, η = 0
                x_hat = ddim.step(self._eps(x_next, t, labels), t, x_next, eta=0.0).prev_sample
                # 3. SecMI-stat: −‖x_s − x̂_s‖²
                cols[t] = -(x_hat - x).pow(2).flatten(1).sum(1)
            x, s = x_next, t
        return torch.stack([cols[t] for t in timesteps], 1)


ATTACKS: dict[str, type[MembershipAttack]] = {"loss": LossAttack, "pia": PIA, "secmi": SecMI}


def make_attack(name: str, **kwargs: Any) -> MembershipAttack:
    if name not in ATTACKS:
        raise SilodiffError(f"unknown attack {name!r}: use one of {', '.join(ATTACKS)}")
    return ATTACKS[name](**kwargs)


def _scores(scores_members, scores_nonmembers) -> tuple[np.ndarray, np.ndarray]:
    s_in = np.asarray(scores_members, dtype=np.float64).ravel()
    s_out = np.asarray(scores_nonmembers, dtype=np.float64).ravel()
    if len(s_in) == 0 or len(s_out) == 0:
        raise SilodiffError("an attack needs at least one member and one non-member score")
    if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        raise SilodiffError("attack scores contain NaN or infinity")
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return y, np.r_[s_in, s_out]


def roc_points(scores_members, scores_nonmembers) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (fpr, tpr) of 'member if score ≥ threshold', every threshold kept."""
    y, s = _scores(scores_members, scores_nonmembers)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def evaluate_attack(scores_members, scores_nonmembers) -> dict[str, float]:
    """AUC, best-threshold accuracy and TPR at 1% FPR (the largest FPR ≤ 1%) of 'member if score ≥ τ'.

    Best accuracy over thresholds: max_τ (TPR(τ)·P + (1 − FPR(τ))·N) / (P + N).
    """
    y, s = _scores(scores_members, scores_nonmembers)
    fpr, tpr = roc_points(scores_members, scores_nonmembers)
    p, n = float(y.sum()), float(len(y) - y.sum())
    return {
        "auc": float(roc_auc_score(y, s)),
        "best_accuracy": float(((tpr * p + (1 - fpr) * n) / (p + n)).max()),
        "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
        "n_members": int(p), "n_nonmembers": int(n),
    }


def run_attack(
    attack: MembershipAttack | str, model: torch.nn.Module, members: Images, nonmembers: Images, **kwargs: Any
) -> dict[str, Any]:
    """Fit ``attack`` to the served model and evaluate it at every t of its grid; reports the best t."""
    attack = make_attack(attack, **kwargs) if isinstance(attack, str) else attack
    return attack.fit(model).evaluate(members, nonmembers)
