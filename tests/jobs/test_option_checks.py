"""Bad options are refused by the library, before anything is planned or registered (the CLI only maps the
``SilodiffError`` to one line): compartment training and the backends."""

from __future__ import annotations

import pytest

from silodiff.errors import SilodiffError
from silodiff.jobs import run_jobs, train_compartments
from silodiff.training import TrainConfig

CONFIG = TrainConfig(epochs=1, batch_size=16)


@pytest.mark.parametrize("options, message", [
    ({"num_cpus": 2}, "need --backend ray"),
    ({"backend": "spark"}, "unknown backend"),
    ({"config": TrainConfig(epochs=0)}, "epochs must be ≥ 1"),
    ({"adapter": "lora"}, "need --from-base"),
    ({"lora": {"rank": 8}}, "need --from-base"),
    ({"config": TrainConfig(epochs=1, replay=0.5)}, "and --replay need --from-base"),
    ({"provenance": "a museum"}, "--provenance describes --init-from"),
    ({"init_from": "no-such-folder"}, "no-such-folder"),
    ({"from_base": True, "model": {"kind": "mlp-denoiser"}}, "--unet-config and --from-base"),
    ({"from_base": True, "init_from": "x"}, "--init-from and --from-base"),
    ({"from_base": True, "lora": {"rank": 8}}, "need --adapter lora"),
])
def test_bad_options_plan_and_register_nothing(tmp_store, options, message):
    options = {"config": CONFIG, "progress": False, **options}
    with pytest.raises(SilodiffError, match=message):
        train_compartments(tmp_store, plan="source", slices=1, **options)
    assert tmp_store.catalog.compartments() == [] and tmp_store.catalog.artifacts(active=None) == []


def test_the_plan_is_made_once_the_options_pass(tmp_store):
    (result,) = train_compartments(tmp_store, ["source-0"], plan="source", slices=1, config=CONFIG, progress=False)
    assert result.name == "source-0" and len(result.artifacts) == 1
    assert sorted(c["name"] for c in tmp_store.catalog.compartments()) == ["source-0", "source-1"]


def test_ray_options_need_the_ray_backend():
    with pytest.raises(SilodiffError, match="need --backend ray"):
        run_jobs([], "serial", address="auto")
    assert run_jobs([], "process", workers=1) == []  # run_jobs' own option is no Ray option
