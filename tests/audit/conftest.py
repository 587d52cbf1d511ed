"""Fixtures of the audit tests: a digits member / non-member split and tiny denoisers.

Everything runs single-threaded: on a 2-core box shared with other work,
torch's default two threads spin against each other and a 6 s fit takes minutes.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from silodiff.data import load_digits
from silodiff.nn import MLPDenoiser
from silodiff.training import TrainConfig, new_state, train


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _audit_single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def digits_split():
    """Digits shuffled (seeded): 16 training images and 400 held-out ones from the same distribution."""
    data = load_digits("single")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    ids = data.sample_ids
    return data.subset([ids[i] for i in order[:16]]), data.subset([ids[i] for i in order[16:416]])


def fit_tiny(data, steps: int, seed: int = 0) -> MLPDenoiser:
    """A small MLP denoiser trained ``steps`` full-batch steps with the one training loop."""
    with one_thread():
        torch.manual_seed(seed)
        model = MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=128, depth=2)
        config = TrainConfig(batch_size=16, lr=3e-3, label_dropout=0.0, seed=seed)
        state = new_state(model, config)
        train(state, data, config, steps=steps, progress=False)
    return state.model.eval()


@pytest.fixture(scope="session")
def overfit_model(digits_split):
    """400 steps on 16 images (batch 16: 400 passes over each image): it memorises them."""
    return fit_tiny(digits_split[0], steps=400)


@pytest.fixture(scope="session")
def untrained_model():
    torch.manual_seed(1)
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=128, depth=2).eval()


@pytest.fixture(scope="session")
def single_thread():
    """The ``one_thread`` context manager, for fixtures of wider scope than the autouse one."""
    return one_thread


@pytest.fixture(scope="session")
def tiny_fit():
    """``fit_tiny(data, steps, seed=0)``."""
    return fit_tiny
