"""Stable-Diffusion-format folders (``nn.sd_pipeline``): the tiny pipeline is a real diffusers folder that
``StableDiffusionPipeline`` itself loads and runs; ``read_sd_pipeline`` reads it, the pixel-space variant too,
and refuses what is not such a folder (SDXL, a class-conditional UNet, a width mismatch) with one line."""

from __future__ import annotations

import json

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.nn.sd_pipeline import build_tiny_pipeline, read_sd_pipeline, tiny_vocabulary

WORDS = ["a", "photo", "of", "dress", "sneaker", "bag"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd", WORDS)


def test_the_tiny_pipeline_is_a_folder_diffusers_itself_loads_and_runs(tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, local_files_only=True)
    out = pipe("a photo of a dress", num_inference_steps=2, height=16, width=16, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 16, 16, 3) and 0 <= out.min() and out.max() <= 1


def test_read_gives_the_parts_and_what_the_catalog_records(tiny_sd):
    parts = read_sd_pipeline(tiny_sd)
    assert not parts.pixel_space and parts.latent_shape == (4, 8, 8)
    info = parts.describe()
    assert info["cross_attention_dim"] == parts.text_encoder.config.hidden_size == 32
    assert info["max_prompt_tokens"] == 16 and info["family"] == "text-to-image"
    z = parts.vae.encode(torch.zeros(1, 3, 16, 16)).latent_dist.mean  # (1, 4, 8, 8): what the UNet denoises
    tokens = parts.tokenizer(["a photo of a bag"], padding="max_length", return_tensors="pt").input_ids
    c = parts.text_encoder(tokens).last_hidden_state  # (1, 16, 32)
    eps = parts.unet(z, torch.tensor([10]), encoder_hidden_states=c).sample
    assert eps.shape == z.shape == (1, 4, 8, 8)


def test_every_caption_word_is_one_token_and_other_text_still_tokenises(tiny_sd):
    tok = read_sd_pipeline(tiny_sd).tokenizer
    ids = tok("a photo of a sneaker").input_ids
    assert len(ids) == 2 + 5 and ids[0] == 0 and ids[-1] == 1  # start, the five words, end
    assert len(tok("zebra").input_ids) > 3  # unknown words fall back to letters, not to nothing
    vocab, merges = tiny_vocabulary(["Dress", "dress"])
    assert "dress</w>" in vocab and list(vocab)[:2] == ["<|startoftext|>", "<|endoftext|>"] and merges


def test_the_pixel_space_variant_has_no_vae_and_says_so(tmp_path):
    parts = read_sd_pipeline(build_tiny_pipeline(tmp_path / "px", WORDS, pixel_space=True))
    assert parts.pixel_space and parts.vae is None and parts.latent_shape == (3, 16, 16)
    assert parts.describe()["pixel_space"] is True and parts.describe()["vae_scaling_factor"] is None


def test_a_width_mismatch_between_unet_and_text_encoder_is_one_line(tmp_path):
    folder = build_tiny_pipeline(tmp_path / "bad", WORDS, cross_attention_dim=48)
    with pytest.raises(SilodiffError, match=r"cross-attention width \(48\) differs from its text encoder's hidden size \(32\)"):
        read_sd_pipeline(folder)


def test_an_sdxl_folder_is_refused_in_one_line(tmp_path, tiny_sd):
    index = json.loads((tiny_sd / "model_index.json").read_text())
    folder = tmp_path / "sdxl"
    folder.mkdir()
    index.update({"_class_name": "StableDiffusionXLPipeline", "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"]})
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(SilodiffError, match="two text encoders \\(SDXL\\) is not supported yet") as err:
        read_sd_pipeline(folder)
    assert "\n" not in str(err.value)


def test_what_is_not_a_pipeline_folder_is_refused_before_anything_loads(tmp_path, tiny_sd):
    with pytest.raises(SilodiffError, match="no such folder"):
        read_sd_pipeline(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SilodiffError, match="no model_index.json"):
        read_sd_pipeline(tmp_path / "empty")
    from diffusers import UNet2DModel  # a class-conditional UNet folder is no pipeline

    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), norm_num_groups=4,
                down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2).save_pretrained(tmp_path / "u")
    with pytest.raises(SilodiffError, match="no model_index.json"):
        read_sd_pipeline(tmp_path / "u")
    index = json.loads((tiny_sd / "model_index.json").read_text())
    del index["text_encoder"]
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(SilodiffError, match="missing unet/, text_encoder/, tokenizer/, scheduler/"):
        read_sd_pipeline(tmp_path / "partial")
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "model_index.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(SilodiffError, match="is not JSON"):
        read_sd_pipeline(tmp_path / "notjson")
