"""The recipe hash of a job is pinned: checkpoints already in stores resume (and forgets retrain) only while a job
that trains the same way hashes the same.  These hashes were computed at 2888cf1, before ``SliceJob.extra`` became
typed fields, by the code of that commit (``recipe(SliceJob(..., extra={...}))``): a regression pin, not output of
the code under test.  Changing one means every stored checkpoint stops resuming."""

from __future__ import annotations

import pytest

from silodiff.jobs.slices import SliceJob, recipe
from silodiff.store.lineage import BaseRef

MODEL = {"kind": "mlp-denoiser", "image_shape": [1, 8, 8], "num_classes": 10, "width": 64}
TRAIN = {"epochs": 4, "lr": 0.002, "seed": 1, "batch_size": 16}
HOOKS = [{"module": "silodiff.defences.agc", "config": {"kind": "agc", "lam": 0.5}}]
BASE = BaseRef("b" * 64, ("s1", "s2"), ("i1", "i2", "i3"))

PINNED = {  # computed at 2888cf1 (see the module docstring)
    "plain": "2a24a5262dac6a03",
    "hooks": "4392043645b42b6d",
    "base": "f0d034f9ea2af6d4",
    "init_from": "b07916f435101deb",
    "all": "8318e9557e1abc3c",
}
CASES = {
    "plain": {},
    "hooks": {"hooks": HOOKS},
    "base": {"base": BASE},
    "init_from": {"init_from": "e" * 64},
    "all": {"hooks": HOOKS, "base": BASE, "init_from": "e" * 64, "data_parallel": 2, "sources": ["public"]},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_recipe_hash_of_existing_jobs_is_unchanged(case):
    job = SliceJob("/store", "compartment", "c", [["a", "b"], ["c"]], MODEL, TRAIN, **CASES[case])
    assert recipe(job) == PINNED[case]


def test_what_does_not_change_training_does_not_change_the_recipe():
    job = SliceJob("/store", "compartment", "c", [["a", "b"], ["c"]], MODEL, TRAIN, base=BASE)
    moved = SliceJob("/elsewhere", "compartment", "c", [["a"]], MODEL, TRAIN, threads=4, progress=False, data_parallel=2,
                     base=BaseRef(BASE.hash, ("other",), ("x",)))  # a base is named by its hash alone
    assert recipe(moved) == recipe(job) == PINNED["base"]
    assert recipe(SliceJob("/store", "compartment", "c", [["a"]], MODEL, {**TRAIN, "lr": 0.001})) != PINNED["plain"]
