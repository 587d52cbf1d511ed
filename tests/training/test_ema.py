"""The EMA tracks a model's trainable parameters with the warm-up decay, and leaves a frozen part as it is; it equals
diffusers' EMAModel (update_after_step=-1) to 1e-6 (``EMA``'s docstring says why ours is kept)."""

import torch

from silodiff.training.state import EMA


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # a frozen base, as under a LoRA adapter
    return model


def test_ema_follows_the_warmup_formula_on_trainable_parameters():
    model = _model()
    ema = EMA(model, decay=0.9)
    expected = [p.detach().clone() for p in model[1].parameters()]
    for step in range(1, 6):
        with torch.no_grad():
            for p in model[1].parameters():
                p.add_(1.0)
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model[1].parameters())]
    for got, want in zip(ema.model[1].parameters(), expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(ema.model[0].weight, model[0].weight)


def test_ema_rebinds_to_another_model():
    model, other = _model(), _model()
    ema = EMA(model, decay=0.5)
    ema.update(model, 100)
    with torch.no_grad():
        other[1].weight.fill_(3.0)
    ema.update(other, 100)  # the pairs follow the model passed, not the first one
    torch.testing.assert_close(ema.model[1].weight, 0.5 * model[1].weight + 0.5 * 3.0)


# -- parity with diffusers' EMAModel ---------------------------------------------------------------------------------
def _train_both(steps: int, decay: float, **ema_model_options):
    """Our EMA and diffusers' EMAModel over the same AdamW trajectory of a tiny model (a frozen layer included);
    returns (ours, theirs) as lists of the trainable parameters' averages."""
    from diffusers.training_utils import EMAModel

    model = _model()
    trainable = [p for p in model.parameters() if p.requires_grad]
    ours = EMA(model, decay)
    theirs = EMAModel(trainable, decay=decay, **ema_model_options)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        x = torch.randn(16, 4, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        ours.update(model, step)
        theirs.step(trainable)
    return [p.detach() for p in ours.model[1].parameters()], theirs.shadow_params


def test_the_ema_equals_diffusers_ema_model_with_its_first_update_at_step_one():
    """EMAModel's decay at its k-th update is min(decay, (1+s)/(10+s)) with s = k − update_after_step − 1, and 0
    (a plain copy) while s ≤ 0; ours is min(decay, (1+k)/(10+k)) from the first step.  With update_after_step=−1
    the schedules are the same, and the weights agree to 1e-6 over a run that passes the cap (1+k)/(10+k) = 0.99
    at k = 890."""
    ours, theirs = _train_both(1000, 0.99, update_after_step=-1, foreach=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_diffusers_defaults_are_another_schedule():
    """Its defaults skip one step (the first update copies the weights: decay 0), and its warm-up
    1 − (1 + k/γ)^−p is another curve: neither gives our weights."""
    ours, _ = _train_both(30, 0.99)
    for options in ({}, {"use_ema_warmup": True, "update_after_step": -1}):
        _, theirs = _train_both(30, 0.99, **options)
        assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs)) > 1e-4, options  # parity: 1e-6
