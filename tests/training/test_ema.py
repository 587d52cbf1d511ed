"""The EMA tracks a model's trainable parameters with the warm-up decay, and leaves a frozen part as it is."""

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
