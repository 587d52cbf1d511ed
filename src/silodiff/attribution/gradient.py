"""Gradient attribution: D-TRAK (Zheng et al., ICLR 2024) and TRAK (Park et al., ICML 2023) for denoisers.

Per-sample gradient features of a scalar model output f, averaged over K timesteps:

    g(z) = (1/K) Σ_k ∇_θ f(θ; x_0, y, t_k, ε_k),      x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_k

- ``method="dtrak"``: f = mean over pixels of ‖ε_θ(x_t, t, y)‖²  (D-TRAK's L_square);
- ``method="trak"``:  f = mean over pixels of (ε_θ(x_t, t, y) − ε_k)²  (the training loss).

The K timesteps are the midpoints of K equal bins of 0..T−1; the noise ε_k is fixed
per (seed, t_k) and shared by every image (common random numbers: a training image
and a test image are compared under the same x_t perturbation).  Gradients come
from ``torch.func.vmap(torch.func.grad(f))`` over the batch; a model whose forward
cannot be vmapped (a composition with a router, an ensemble: data-dependent row
selection) falls back to autograd one sample at a time, same numbers.

Features are randomly projected, φ(z) = Pᵀ g(z) / √d with P ~ N(0, 1)^{P×d}
(``trak.projectors.BasicProjector`` when the ``traker`` package imports, the same
block-wise Gaussian in torch otherwise; ``projector_`` says which).  With the
training features Φ (N, d), the score of training sample j for image z is

    τ(z)_j = [φ(z)ᵀ (ΦᵀΦ + λI)⁻¹ Φᵀ]_j = [φ(z)ᵀ Φᵀ (ΦΦᵀ + λI)⁻¹]_j

(the second form when d ≥ N).  Positive τ = including j lowers f at z to first
order (the influence-function sign: ΔL(z) ≈ −g(z)ᵀ H⁻¹ g(j), H ≈ ΦᵀΦ).  One
eigendecomposition of the smaller Gram matrix serves every λ, so
``select_lambda`` can scan a grid on a tuning split cheaply.  λ is relative:
``λ = lam · mean eigenvalue`` of ΦᵀΦ.  Unit scores are sums of sample scores.

Several models (TRAK's ensemble, Park et al. 2023 §3.3): ``fit([θ_1, …, θ_M], x)``
computes every member's features Φ_m of ALL N training images (whether or not
member m saw them, as TRAK does with models trained on subsets) with the same
projection P and noise, and scores

    τ(z) = (1/M) Σ_m φ_m(z)ᵀ (Φ_mᵀΦ_m + λ s_m I)⁻¹ Φ_mᵀ,   s_m = mean eigenvalue of Φ_mᵀΦ_m.

The relative λ is the per-member kernel normalisation: τ_m is unchanged when
Φ_m and φ_m are scaled by any c, so every member's kernel counts on the same
scale.  One member gives the single-model scores exactly.  Members must share
the data shape and the parameter shapes (one projection serves them all).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import SilodiffError
from ..training import noise_scheduler
from .likelihood import timestep_grid

METHODS = ("dtrak", "trak")
LAMBDA_GRID = tuple(float(x) for x in np.logspace(-5, 3, 17))


def check_method(method: str) -> str:
    if method not in METHODS:
        raise SilodiffError(f"unknown gradient method {method!r}: use one of {METHODS}")
    return method


def check_proj_dim(proj_dim: int) -> int:
    if not isinstance(proj_dim, int) or proj_dim <= 0:
        raise SilodiffError(f"the projection dimension must be a positive integer, got {proj_dim}")
    return proj_dim


class _TorchProjector:
    """Block-wise Gaussian projection: output columns [bℓ, (b+1)ℓ) from a generator seeded ``seed + 1000 b``."""

    def __init__(self, grad_dim: int, proj_dim: int, seed: int, block_size: int):
        self.grad_dim, self.proj_dim, self.seed, self.block_size = grad_dim, proj_dim, seed, block_size

    def project(self, grads: torch.Tensor, model_id: int = 0) -> torch.Tensor:
        out = torch.empty(len(grads), self.proj_dim)
        gen = torch.Generator()
        for b, start in enumerate(range(0, self.proj_dim, self.block_size)):
            width = min(self.block_size, self.proj_dim - start)
            gen.manual_seed(self.seed + 1000 * b)
            out[:, start : start + width] = grads @ torch.randn(self.grad_dim, width, generator=gen)
        return out


def make_projector(grad_dim: int, proj_dim: int, seed: int, kind: str = "auto"):
    """``(projector, name)``: traker's ``BasicProjector`` (CPU-capable) when available, else the torch one."""
    check_proj_dim(proj_dim)
    if kind not in ("auto", "traker", "torch"):
        raise SilodiffError(f"unknown projector {kind!r}: use auto, traker or torch")
    block = int(max(1, min(128, proj_dim, 2**25 // max(grad_dim, 1))))  # ≤ 128 MiB of matrix at a time
    if kind in ("auto", "traker"):
        try:
            from trak.projectors import BasicProjector, ProjectionType

            proj = BasicProjector(
                grad_dim=grad_dim,
                proj_dim=proj_dim,
                seed=seed,
                proj_type=ProjectionType.normal,
                device=torch.device("cpu"),
                block_size=block,
            )
            return proj, "traker.BasicProjector"
        except ImportError:
            if kind == "traker":
                raise SilodiffError("the traker package is not installed (pip install traker)") from None
    return _TorchProjector(grad_dim, proj_dim, seed, block), "torch"


def fixed_noise(seed: int, timesteps: Sequence[int], image_shape: Sequence[int]) -> torch.Tensor:
    """ε_k for each timestep, a function of (seed, t_k) only, (K, c, h, w)."""
    return torch.stack(
        [torch.randn(tuple(image_shape), generator=torch.Generator().manual_seed(1_000_003 * seed + int(t))) for t in timesteps]
    )


def check_members(models: Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    """Refuse an empty or mixed set of members: one data shape, one label set, one parameter layout."""
    models = list(models)
    if not models:
        raise SilodiffError("give at least one model to attribute with")
    ref = models[0]

    def layout(m: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(k, tuple(v.shape)) for k, v in m.named_parameters() if v.requires_grad]

    for i, m in enumerate(models[1:], 1):
        shape, ref_shape = tuple(getattr(m, "image_shape", ())), tuple(getattr(ref, "image_shape", ()))
        classes, ref_classes = getattr(m, "num_classes", 0), getattr(ref, "num_classes", 0)
        if shape != ref_shape or classes != ref_classes:
            raise SilodiffError(
                f"member {i} takes images {shape} with {classes} classes, member 0 {ref_shape} with {ref_classes}: "
                "members must share the data shape"
            )
        if layout(m) != layout(ref):
            raise SilodiffError(
                f"member {i}'s trainable parameters differ from member 0's: members must share one projection"
            )
    return models


class _Kernel:
    """One member's ridge kernel: training features Φ (N, d) and the eigendecomposition of the smaller Gram matrix."""

    def __init__(self, phi: torch.Tensor):
        phi = phi.double()
        self.features = phi.float()
        self.dual = phi.shape[1] >= phi.shape[0]
        gram = phi @ phi.T if self.dual else phi.T @ phi
        s, V = torch.linalg.eigh(gram)  # one decomposition: every λ costs one rescale
        self.eig, self.basis = s.clamp(min=0), V
        self.scale = float(phi.pow(2).sum() / max(1, min(phi.shape)))  # mean non-zero eigenvalue of ΦᵀΦ

    def coords(self, phi_test: torch.Tensor) -> torch.Tensor:
        """Test features (n, d) in the eigenbasis, the part of the scores no λ changes: φ Φᵀ V (dual) or φ V."""
        z = phi_test.double()
        return (z @ self.features.double().T) @ self.basis if self.dual else z @ self.basis

    def scores(self, phi_test: torch.Tensor, lam: float) -> torch.Tensor:
        """φ (ΦᵀΦ + λ s I)⁻¹ Φᵀ for test features (n, d) → (n, N), λ relative to the mean eigenvalue s."""
        return self.solve(self.coords(phi_test), lam)

    def solve(self, coords: torch.Tensor, lam: float) -> torch.Tensor:
        """The scores from ``coords(φ)``: one rescale per λ."""
        lam = lam * self.scale
        if self.dual:  # φ Φᵀ (ΦΦᵀ + λI)⁻¹
            return (coords / (self.eig + lam)) @ self.basis.T
        return (coords / (self.eig + lam)) @ self.basis.T @ self.features.double().T  # φ (ΦᵀΦ + λI)⁻¹ Φᵀ

    def nbytes(self) -> int:
        return int(self.features.numel() * 4 + self.basis.numel() * 8 + self.eig.numel() * 8)


class GradientAttribution:
    """D-TRAK / TRAK scores of training units for images, as an estimator.

    ``fit(model, x, labels, units=…)`` computes the training features Φ (``model`` may be
    a list of models: their kernel-normalised scores are averaged);
    ``score(x, labels)`` returns unit scores (n, U) and keeps ``sample_scores_`` (n, N);
    ``top_k(k)`` as ``UnitInfluence``; ``select_lambda(…)`` picks λ on a tuning split.
    """

    def __init__(
        self,
        *,
        method: str = "dtrak",
        timesteps: int = 10,
        proj_dim: int = 2048,
        seed: int = 0,
        lam: float = 1e-2,
        projector: str = "auto",
        batch_size: int = 64,
    ):
        self.method = check_method(method)
        self.proj_dim = check_proj_dim(proj_dim)
        if timesteps < 1:
            raise SilodiffError(f"timesteps must be ≥ 1, got {timesteps}")
        if not lam > 0:
            raise SilodiffError(f"lam must be > 0, got {lam}")
        self.timesteps, self.seed, self.lam, self.projector = timesteps, seed, float(lam), projector
        self.batch_size = batch_size

    # ------------------------------------------------------------------ features
    def _setup(self, model: torch.nn.Module, projector: tuple | None = None) -> None:
        self.model_ = model.eval()
        self.params_ = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
        if not self.params_:
            raise SilodiffError("the model has no trainable parameters")
        self.buffers_ = {k: v.detach() for k, v in model.named_buffers()}
        self.grad_dim_ = sum(v.numel() for v in self.params_.values())
        t, _ = timestep_grid(self.timesteps)
        self.t_ = t
        s = noise_scheduler()
        dtype = next(iter(self.params_.values())).dtype
        abar = s.alphas_cumprod[t].to(dtype)
        self.a_, self.b_ = abar.sqrt(), (1 - abar).sqrt()  # (K,)
        self.noise_ = fixed_noise(self.seed, t.tolist(), model.image_shape).to(dtype)
        self.null_ = int(getattr(model, "num_classes", 0))
        proj, self.projector_ = projector or make_projector(self.grad_dim_, self.proj_dim, self.seed, self.projector)
        self._proj = proj
        self.vectorised_ = True

    def _f(self, params: dict, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f averaged over the K timesteps for ONE image x0 (c, h, w) and label y (0-dim)."""
        K = len(self.t_)
        view = (K, *([1] * x0.ndim))
        x_t = self.a_.view(view) * x0.unsqueeze(0) + self.b_.view(view) * self.noise_
        reset = getattr(self.model_, "reset", None)
        if reset is not None:
            reset()
        eps = torch.func.functional_call(self.model_, (params, self.buffers_), (x_t, self.t_, y.expand(K)))
        out = eps.pow(2) if self.method == "dtrak" else (eps - self.noise_).pow(2)
        return out.flatten(1).mean(1).mean()

    def gradients(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Per-sample g(z), flattened over parameters, (n, P)."""
        y = self._labels(labels, len(x))
        g = torch.func.grad(self._f)
        if self.vectorised_:
            try:
                grads = torch.func.vmap(g, in_dims=(None, 0, 0))(self.params_, x, y)
                return torch.cat([v.flatten(1) for v in grads.values()], 1)
            except Exception:  # data-dependent control flow (router, ensemble row selection): one at a time
                self.vectorised_ = False
        params = {k: v.detach().requires_grad_(True) for k, v in self.params_.items()}
        rows = []
        for i in range(len(x)):  # plain autograd: the model may read tensor storage (a router's run key)
            grads = torch.autograd.grad(self._f(params, x[i], y[i]), list(params.values()), allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if d is None else d).flatten() for p, d in zip(params.values(), grads)]))
        return torch.stack(rows)

    def _labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        if labels is None:
            return torch.full((n,), self.null_, dtype=torch.long)
        return torch.as_tensor(labels, dtype=torch.long)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """φ(z) = Pᵀ g(z) / √d for every image under the member set up last, (n, d)."""
        if not hasattr(self, "params_"):
            raise SilodiffError("call fit(model, x, labels) first")
        y = self._labels(labels, len(x))
        # gradients in vmap batches, projected in chunks of ≤ 2²⁵ floats (the projection regenerates P per call)
        chunk = int(max(1, 2**25 // self.grad_dim_))
        out = []
        for start in range(0, len(x), chunk):
            stop = min(start + chunk, len(x))
            g = torch.cat([self.gradients(x[a : min(a + self.batch_size, stop)], y[a : min(a + self.batch_size, stop)])
                           for a in range(start, stop, self.batch_size)])
            out.append(self._proj.project(g.float(), model_id=0) / math.sqrt(self.proj_dim))
        return torch.cat(out) if out else torch.zeros(0, self.proj_dim)

    def member_features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """φ_m(z) under every member m, M × (n, d)."""
        self._check_setup()
        if len(self.members_) == 1:
            return [self.features(x, labels)]
        out, vectorised = [], True
        for model in self.members_:
            self._setup(model, (self._proj, self.projector_))
            out.append(self.features(x, labels))
            vectorised = vectorised and self.vectorised_
        self.vectorised_ = vectorised
        return out

    def _check_setup(self) -> None:
        if not hasattr(self, "members_"):
            raise SilodiffError("call fit(model, x, labels) first")

    # ------------------------------------------------------------------ fit / score
    def fit(
        self,
        model: torch.nn.Module | Sequence[torch.nn.Module],
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        units: Sequence[Sequence[int]] | None = None,
        unit_names: Sequence[str] | None = None,
    ) -> GradientAttribution:
        """Training features Φ_m of the N training images ``x`` under each model; ``units[u]`` = row indices of unit u
        (default: one per row).  ``model``: one model, or a list of members whose scores ``score`` averages."""
        if len(x) == 0:
            raise SilodiffError("no training images to fit on")
        one = isinstance(model, torch.nn.Module) and not isinstance(model, torch.nn.ModuleList)
        members = check_members([model] if one else list(model))
        units = [[i] for i in range(len(x))] if units is None else [list(u) for u in units]
        bad = [i for u in units for i in u if not 0 <= i < len(x)]
        if bad or any(not u for u in units):
            raise SilodiffError("every unit needs ≥ 1 training row within 0..N−1")
        unit_names = list(unit_names) if unit_names is not None else [str(i) for i in range(len(units))]
        if len(unit_names) != len(units):
            raise SilodiffError(f"{len(unit_names)} unit names for {len(units)} units")
        t0, c0 = time.perf_counter(), time.process_time()
        self._setup(members[0])
        self.members_ = members
        self.kernels_ = [_Kernel(phi) for phi in self.member_features(x, labels)]  # one per member: Φ_m, (N, d)
        self.units_, self.unit_names_ = units, unit_names
        self._pool = torch.zeros(len(x), len(units), dtype=torch.float64)
        for u, rows in enumerate(units):
            self._pool[rows, u] = 1.0
        self.fit_seconds_ = {"wall": round(time.perf_counter() - t0, 3), "cpu": round(time.process_time() - c0, 3)}
        return self

    def sample_scores(self, phi_test: torch.Tensor | Sequence[torch.Tensor], lam: float | None = None) -> torch.Tensor:
        """τ(z)_j for test features → (n, N), averaged over members, with relative λ (default ``self.lam``).

        ``phi_test``: one (n, d) tensor per member (as ``member_features`` gives), or one tensor for one member.
        """
        return self._averaged(self._coords(phi_test), self.lam if lam is None else lam)

    def _coords(self, phi_test: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        phis = [phi_test] if isinstance(phi_test, torch.Tensor) else list(phi_test)
        if len(phis) != len(self.kernels_):
            raise SilodiffError(f"{len(phis)} feature sets for {len(self.kernels_)} members")
        return [kernel.coords(phi) for kernel, phi in zip(self.kernels_, phis)]

    def _averaged(self, coords: list[torch.Tensor], lam: float) -> torch.Tensor:
        """τ averaged over members, from each member's ``_Kernel.coords``."""
        tau = self.kernels_[0].solve(coords[0], lam)
        for kernel, c in zip(self.kernels_[1:], coords[1:]):
            tau = tau + kernel.solve(c, lam)
        return tau / len(self.kernels_)

    def unit_scores(self, sample_scores: torch.Tensor) -> np.ndarray:
        return (sample_scores @ self._pool).numpy()

    def score(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> np.ndarray:
        """Unit scores (n, U) for the images ``x``; keeps ``test_features_`` (per member), ``sample_scores_``, ``seconds_``."""
        self._check_setup()
        t0, c0 = time.perf_counter(), time.process_time()
        self.test_features_ = self.member_features(x, labels)
        self.sample_scores_ = self.sample_scores(self.test_features_)
        self.influence_ = self.unit_scores(self.sample_scores_)
        self.seconds_ = {"wall": round(time.perf_counter() - t0, 3), "cpu": round(time.process_time() - c0, 3)}
        return self.influence_

    def top_k(self, k: int = 5) -> np.ndarray:
        """Indices of the k highest-scoring units per image, highest first, (n, k)."""
        return np.argsort(-self.influence_, axis=1, kind="stable")[:, :k]

    def select_lambda(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        masks: np.ndarray,
        target: np.ndarray,
        lambdas: Sequence[float] = LAMBDA_GRID,
    ) -> float:
        """Set and return the relative λ maximising the LDS on a tuning split (never the test images).

        ``masks`` (S, U): the units each retrained subset kept; ``target`` (S, n): the
        retrained models' output on the tuning images (e.g. −denoising loss).
        """
        from .lds import linear_datamodeling_score

        coords = self._coords(self.member_features(x, labels))  # computed once: only the rescale depends on λ
        self.lambda_scan_ = {}
        for lam in lambdas:
            scores = self.unit_scores(self._averaged(coords, lam))
            self.lambda_scan_[float(lam)] = linear_datamodeling_score(scores, masks, target)["mean"]
        self.lam = max(self.lambda_scan_, key=lambda k: (np.nan_to_num(self.lambda_scan_[k], nan=-2), -k))
        return self.lam

    def stored_bytes(self) -> int:
        """Bytes the fitted estimator keeps: every member's Φ_m (float32) and eigenbasis (float64)."""
        self._check_setup()
        return sum(k.nbytes() for k in self.kernels_)
