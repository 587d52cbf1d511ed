"""Loss contrasts of an encoded ensemble from one pass of each member (METHODS.md §3; issue 18).

For an image x, a grid timestep t and a noise draw ε, let e_m = ε_m(x_t, t, y) − ε be
member m's residual (D pixels).  A sub-ensemble with weights w (normalised,
ŵ = w / Σw) predicts Σ_m ŵ_m ε_m, so its ε-loss is

    ℓ_w(x) = (1/D) ‖Σ_m ŵ_m e_m‖² = ŵᵀ Ḡ ŵ,     Ḡ_mk = mean over (t, ε) of ⟨e_m, e_k⟩ / D.

So ONE evaluation of every member on the grid gives the exact loss of every
sub-ensemble (``subset_losses``), with the noise drawn exactly as
``training.loss_grid`` draws it (same seed → the same numbers as running each
sub-ensemble).  Contrasts for unit j with code c_j (members that saw j):

- ``full``    ℓ_{1−c_j} − ℓ_1            loss change without j's members (signed);
- ``matched`` |ℓ_{c_j} − ℓ_{1−c_j}|      the equal-halves contrast, unsigned;
- ``signed``  ℓ_{1−c_j} − ℓ_{c_j}        the half that never saw j against the half that did:
  positive = the members that saw j fit x better.  It is a difference of two
  losses of equal-sized halves, so a sum over units is a sum of signed
  predicted loss changes, which is what the LDS adds up;

Because both halves hold exactly M/2 members, ŵ = c/(M/2) and ŵ = (1−c)/(M/2), so

    signed_j = (4/M²) (1ᵀḠ1 − 2 c_jᵀ Ḡ1)

is LINEAR in the code c_j: the first-order shortcut of the signed contrast (expanding
the scale-invariant ℓ(w) at w = 1, ∂ℓ/∂w_m = 2(Ḡ1)_m/M² − 2·1ᵀḠ1/M³, gives
−4 Σ_m c_jm ∂ℓ/∂w_m) is exact, and one vector Ḡ1 per image scores every unit.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SilodiffError
from ..training import noise_scheduler

LOSS_CONTRASTS = ("full", "matched", "signed")


@torch.no_grad()
def member_gram(
    members: torch.nn.ModuleList | list,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    timesteps: torch.Tensor | list[int],
    *,
    draws: int = 2,
    seed: int = 0,
) -> torch.Tensor:
    """Ḡ per image, (n, M, M), float64; noise per (t, draw) from a generator seeded ``seed`` (as ``loss_grid``)."""
    if draws < 1:
        raise SilodiffError(f"draws must be ≥ 1, got {draws}")
    scheduler, gen = noise_scheduler(), torch.Generator().manual_seed(seed)
    ts = [int(t) for t in timesteps]
    n, D = len(x0), x0[0].numel()
    gram = torch.zeros(n, len(members), len(members), dtype=torch.float64)
    for t in ts:
        t_rows = torch.full((n,), t, dtype=torch.long)
        for _ in range(draws):
            noise = torch.randn(x0.shape, generator=gen)
            x_t = scheduler.add_noise(x0, noise, t_rows)
            e = torch.stack([(m(x_t, t_rows, labels) - noise).flatten(1) for m in members], 1).double()  # (n, M, D)
            gram += e @ e.transpose(1, 2) / D
    return gram / (len(ts) * draws)


def subset_losses(gram: torch.Tensor, weights: np.ndarray | torch.Tensor) -> np.ndarray:
    """ε-loss of each sub-ensemble (rows of member weights (S, M)) on each image, (n, S)."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.ndim != 2 or w.shape[1] != gram.shape[-1]:
        raise SilodiffError(f"weights must be (S, {gram.shape[-1]}), got {tuple(w.shape)}")
    w = w / w.sum(1, keepdim=True)
    return torch.einsum("sm,nmk,sk->ns", w, gram, w).numpy()


def loss_contrasts(gram: torch.Tensor, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Every contrast of the module docstring for every image and unit, {name: (n, U)}."""
    codes = np.asarray(codes, dtype=bool)
    M = codes.shape[1]
    if gram.shape[-1] != M:
        raise SilodiffError(f"the Gram matrix has {gram.shape[-1]} members, the codes {M}")
    seen, without = subset_losses(gram, codes), subset_losses(gram, ~codes)  # (n, U) each
    base = subset_losses(gram, np.ones((1, M)))  # (n, 1)
    return {"full": without - base, "matched": np.abs(seen - without), "signed": without - seen}
