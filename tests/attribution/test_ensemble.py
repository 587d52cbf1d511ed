import pytest
import torch

from silodiff.attribution import EnsembleDenoiser
from silodiff.errors import SilodiffError
from silodiff.nn import MLPDenoiser


@pytest.fixture
def members():
    torch.manual_seed(0)
    return [MLPDenoiser(hidden=16, depth=1) for _ in range(4)]


def test_mean_of_members_and_row_weights(members):
    ens = EnsembleDenoiser(members)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([10, 500, 900]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        each = torch.stack([m(x, t, y) for m in members])  # (M, b, c, h, w)
        assert torch.allclose(ens(x, t, y), each.mean(0), atol=1e-6)
        # (M,) weights = weighted mean; (b, M) rows = a different sub-ensemble per row
        w = torch.tensor([1.0, 0.0, 3.0, 0.0])
        assert torch.allclose(ens.with_weights(w)(x, t, y), (each[0] + 3 * each[2]) / 4, atol=1e-6)
        rows = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
        out = ens.with_weights(rows)(x, t, y)
        assert torch.allclose(out[0], each[:2, 0].mean(0), atol=1e-6)
        assert torch.allclose(out[1], each[2:, 1].mean(0), atol=1e-6)
        assert torch.allclose(out[2], each[:, 2].mean(0), atol=1e-6)


def test_members_with_zero_weight_are_never_evaluated(members):
    ens = EnsembleDenoiser(members)
    sub = ens.subset([1, 3])
    with torch.no_grad():
        sub(torch.randn(5, 1, 8, 8), 100, None)
    assert ens.calls == [0, 5, 0, 5]  # views share the counters


@pytest.mark.parametrize("w", [torch.ones(3), torch.tensor([1.0, -1, 1, 1]), torch.zeros(4)])
def test_bad_weights_are_refused(members, w):
    with pytest.raises(SilodiffError):
        EnsembleDenoiser(members, w)


def test_loss_follows_the_denoiser_contract(members):
    from silodiff.training import noise_scheduler

    ens = EnsembleDenoiser(members)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = ens.loss(x0, None, torch.tensor([1, 2, 3, 4]), torch.randn_like(x0), noise_scheduler())
    assert loss.shape == (4,) and torch.isfinite(loss).all()
