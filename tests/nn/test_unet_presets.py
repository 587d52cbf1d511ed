"""UNet configurations: presets, JSON files with attention blocks, and the bad-config errors."""

from __future__ import annotations

import json

import pytest
import torch

from silodiff.config import build
from silodiff.errors import SilodiffError
from silodiff.nn.presets import PRESETS, count_parameters, unet_model_config
from silodiff.training import TrainConfig, new_state, train

ATTENTION_CONFIG = {
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": 4, "dropout": 0.1,
    "down_block_types": ["AttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "AttnUpBlock2D"],
}


def test_ddpm_cifar10_is_the_35_7m_parameter_model():
    model = build(unet_model_config("ddpm-cifar10", (3, 32, 32), 10, dry_run=False))
    unet = model.unet
    class_table = count_parameters(unet.class_embedding)
    assert round((count_parameters(model) - class_table) / 1e6, 1) == 35.7
    assert class_table == 11 * 512  # 10 classes + "no label", time-embedding width 4 × 128
    assert sum("Attn" in type(b).__name__ for b in unet.down_blocks) == 1
    assert unet.config.layers_per_block == 2 and list(unet.config.block_out_channels) == [128, 256, 256, 256]


@pytest.mark.parametrize("preset, shape", [("tiny", (3, 32, 32)), ("tiny", (1, 28, 28)), ("fashion-28", (1, 28, 28))])
def test_presets_build_for_their_sizes(preset, shape):
    model = build(unet_model_config(preset, shape, 10))
    out = model(torch.zeros(2, *shape), torch.tensor([3, 900]), torch.tensor([1, 10]))
    assert out.shape == (2, *shape)


def test_an_attention_config_file_builds_trains_and_round_trips_through_the_store(tmp_path, digits32):
    from silodiff.store import Store

    path = tmp_path / "unet.json"
    path.write_text(json.dumps({"_class_name": "UNet2DModel", **ATTENTION_CONFIG}))
    config = unet_model_config(path, (1, 8, 8), 10)
    assert config["unet"]["down_block_types"][0] == "AttnDownBlock2D"
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=16, device="cpu")
    state = train(new_state(build(config), cfg), digits32, cfg, progress=False)
    store = Store(tmp_path / "store")
    store.ingest(digits32, "digits")
    set_id = store.catalog.add_sample_set(digits32.sample_ids)
    digest = store.save(state.ema.model, "compartment", "attn", [set_id])
    loaded = store.load(digest)
    assert any("Attn" in type(b).__name__ for b in loaded.unet.down_blocks)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 500, 999])
    with torch.no_grad():  # the same weights (kernels may differ in the last bits)
        assert torch.allclose(loaded(x, t, None), state.ema.model.eval()(x, t, None), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.ema.model.state_dict().values()))


@pytest.mark.parametrize("spec, message", [
    ("huge", "unknown UNet preset 'huge'"),
    ({**ATTENTION_CONFIG, "norm_num_groups": 3}, "diffusers rejects the UNet config"),
    ({**ATTENTION_CONFIG, "not_a_setting": 1}, "diffusers rejects the UNet config"),
    ({**ATTENTION_CONFIG, "down_block_types": ["NoSuchBlock2D", "DownBlock2D"]}, "diffusers rejects the UNet config"),
    ({**ATTENTION_CONFIG, "in_channels": 3}, "sets in_channels=3 but the data need 1"),
    ({**ATTENTION_CONFIG, "class_embed_type": "identity"}, "class_embed_type 'identity' is not supported"),
])
def test_bad_configs_are_one_clear_error(spec, message):
    with pytest.raises(SilodiffError, match=message):
        unet_model_config(spec, (1, 8, 8), 10)


def test_an_image_size_the_config_cannot_take():
    with pytest.raises(SilodiffError, match=r"images of 28×28 cannot go through 4 UNet levels: each side must be a multiple of 8"):
        unet_model_config("ddpm-cifar10", (3, 28, 28), 10, dry_run=False)


def test_a_missing_or_broken_config_file(tmp_path):
    with pytest.raises(SilodiffError, match="does not exist"):
        unet_model_config(tmp_path / "none.json", (1, 8, 8), 10)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SilodiffError, match="cannot read the UNet config"):
        unet_model_config(tmp_path / "bad.json", (1, 8, 8), 10)


def test_presets_are_registered_by_name():
    assert set(PRESETS) == {"tiny", "fashion-28", "ddpm-cifar10"}
