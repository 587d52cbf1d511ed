"""Issue 19, item 15: a batch whose every sample a hook drops (AGC) must not step the weights."""

from __future__ import annotations

import torch

from silodiff.training import TrainConfig, new_state, train


class DropAllAfterFirstStep:
    """Keeps the first batch (so AdamW has momentum), then drops every sample; records the weights after step 1."""

    def __init__(self):
        self.after_first = None

    def on_batch(self, batch):
        return torch.full((len(batch["rows"]),), self.after_first is None)

    def on_step(self, state):
        if self.after_first is None:
            self.after_first = [p.detach().clone() for p in state.model.parameters()]


def test_an_all_skipped_batch_does_not_move_the_weights(digits32, tiny_mlp):
    config = TrainConfig(epochs=1, batch_size=8, ema_decay=0.9)
    state = new_state(tiny_mlp, config)
    hook = DropAllAfterFirstStep()
    train(state, digits32, config, steps=4, hooks=[hook], progress=False)
    assert hook.after_first is not None and state.step == 4
    for before, after in zip(hook.after_first, state.model.parameters()):
        assert torch.equal(before, after.detach())
