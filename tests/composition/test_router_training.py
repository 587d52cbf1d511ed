"""The shard-classifier router trained from a store (``train_router``).

With class-disjoint compartments the label alone names the compartment; a router
that is fed the label must still learn to read the image, or unconditional
sampling and attribution get only the prior (the label shortcut).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from routing_helpers import router_weights

import silodiff as sd
from silodiff.composition import ClassifierRouter, UniformRouter, compose
from silodiff.data import SampleSet
from silodiff.training import TrainConfig


class ZeroLogits(torch.nn.Module):
    def forward(self, x, t, labels=None):
        return torch.zeros(len(x), 3)


def test_a_classifier_with_no_evidence_gives_the_label_prior():
    """Logits are the likelihood part only: with zero logits the router is the uniform (prior) router."""
    log_prior = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.4, 0.6]]).log()  # (b, K); row 1: λ_0(y) = 0
    classifier, uniform = ClassifierRouter(ZeroLogits(), [0, 1, 2]), UniformRouter()
    classifier.reset(log_prior)
    uniform.reset(log_prior)
    x = torch.randn(2, 1, 8, 8)
    w = classifier.weights(x, torch.tensor([5, 5]), None)
    assert torch.allclose(w, uniform.weights(x, None, None)) and w[1, 0] == 0


@pytest.fixture(scope="module")
def class_store(tmp_path_factory):
    """Digits 0 and 1, one compartment each (sources by class), tiny MLPs, a trained router."""
    digits = sd.load_digits("by-class")
    keep = np.flatnonzero(digits.labels.numpy() < 2)
    data = SampleSet(digits.pixels[keep], digits.labels[keep], [digits.sample_ids[i] for i in keep],
                     [digits.sources[i] for i in keep])
    store = sd.Store(tmp_path_factory.mktemp("by-class") / "store")
    store.ingest(data, "digits")
    sd.plan_compartments(store, by="source", slices=1)
    sd.train_compartments(store, config=TrainConfig(epochs=1), progress=False)  # the router needs trained members
    sd.train_router(store, config=TrainConfig(epochs=15, seed=0), progress=False)
    return store, data


def test_router_reads_the_image_when_the_label_would_say_it_all(class_store):
    store, data = class_store
    model = compose(store, router="classifier")
    x0, truth = data.x(), torch.as_tensor([model.names.index(s) for s in data.sources])
    x_t, t, w = router_weights(model, x0)  # unconditional: the null label
    assert (w.argmax(1) == truth).float().mean() > 0.9
    # conditional: λ_i(y) is one-hot here, so the label decides exactly
    model.router.reset(model._log_prior(data.labels, len(x0)))
    with torch.no_grad():
        w = model.router.weights(x_t, t, data.labels)
    assert torch.equal(w.argmax(1), truth) and torch.all(w.max(1).values == 1)
