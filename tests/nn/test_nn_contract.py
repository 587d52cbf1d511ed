"""Networks: the denoiser contract (ε = model(x_t, t, labels), per-sample loss),
null labels, config rebuild, and the classifiers' shapes."""

from __future__ import annotations

import pytest
import torch

from silodiff.config import build
from silodiff.errors import SilodiffError
from silodiff.nn import FeatureCNN, MLPDenoiser, NoisyClassifier, UNetDenoiser, default_denoiser
from silodiff.training import noise_scheduler


@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_denoiser_contract(request, arch):
    model = request.getfixturevalue(arch).eval()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    t, labels = torch.tensor([0, 1, 10, 500, 999]), torch.tensor([0, 1, 2, 3, 4])
    eps = model(x0, t, labels)
    assert eps.shape == x0.shape and torch.isfinite(eps).all()
    assert model(x0, 7, labels).shape == x0.shape  # a scalar t broadcasts
    # None means the null class (index num_classes)
    with torch.no_grad():
        torch.testing.assert_close(model(x0, t, None), model(x0, t, torch.full((5,), 10)))
        assert not torch.allclose(model(x0, t, None), model(x0, t, labels))
    # the loss is per sample, (b,), and equals the ε-MSE on the noised input
    scheduler = noise_scheduler()
    loss = model.loss(x0, labels, t, noise, scheduler)
    assert loss.shape == (5,)
    with torch.no_grad():
        expected = (model(scheduler.add_noise(x0, noise, t), t, labels) - noise).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(loss.detach(), expected)
    # rows are independent: the loss of one row does not depend on the others
    torch.testing.assert_close(model.loss(x0[:2], labels[:2], t[:2], noise[:2], scheduler).detach(), loss[:2].detach(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_config_rebuilds_the_architecture(request, arch):
    model = request.getfixturevalue(arch)
    clone = build(model.config)
    assert type(clone) is type(model) and clone.config == model.config
    assert [p.shape for p in clone.parameters()] == [p.shape for p in model.parameters()]
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x, 3, None), model.eval()(x, 3, None))


def test_build_unknown_kind():
    with pytest.raises(SilodiffError, match="unknown model kind 'resnet'"):
        build({"kind": "resnet"})


def test_default_denoiser_by_image_size():
    assert isinstance(default_denoiser((1, 8, 8), 10), MLPDenoiser)
    assert isinstance(default_denoiser((1, 28, 28), 10), UNetDenoiser)


def test_classifier_shapes():
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    noisy = NoisyClassifier(image_shape=(1, 8, 8), num_outputs=4, num_classes=10, width=8)
    assert noisy(x, t, torch.tensor([1, 2, 3])).shape == (3, 4) and noisy(x, 5).shape == (3, 4)
    unconditional = NoisyClassifier(image_shape=(1, 2, 2), num_outputs=2, width=8)
    assert unconditional(torch.randn(3, 1, 2, 2), t).shape == (3, 2)
    fcnn = FeatureCNN(image_shape=(1, 8, 8), num_classes=10, width=8, feature_dim=12)
    assert fcnn.features(x).shape == (3, 12) and fcnn(x).shape == (3, 10)
