"""Stable-Diffusion-format pipeline folders: read a user's own (checked), or build a tiny one from configs.

The text-to-image family (DESIGN.md) starts from a local diffusers folder in the
layout ``StableDiffusionPipeline.save_pretrained`` writes::

    model_index.json
    unet/          UNet2DConditionModel      ε_θ(z_t, t, c), c = the text encoder's hidden states
    vae/           AutoencoderKL             z = s · E(x), x̂ = D(z / s), s = vae.config.scaling_factor
    text_encoder/  CLIPTextModel             c = CLIP(tokens), (b, L, d)
    tokenizer/     CLIPTokenizer             L = tokenizer.model_max_length
    scheduler/     the noise schedule

A folder without ``vae/`` is the *pixel-space* variant (the UNet denoises 3-channel
images directly), and ``read_sd_pipeline`` says so.  SD 1.x / 2.x layouts (one
text encoder) are read; a folder with a second text encoder (SDXL) is refused
with one line.  Every check runs before anything is registered, and nothing is
ever downloaded: every part loads with ``local_files_only=True``.

``build_tiny_pipeline`` writes a real folder of the same layout from configs
alone (a tokenizer whose vocabulary is written at run time from the words it
must know), so tests and demos exercise exactly the path a user's Stable
Diffusion takes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SilodiffError

PARTS = ("unet", "text_encoder", "tokenizer", "scheduler")  # required; "vae" is optional (pixel-space variant)
SECOND_ENCODER = ("text_encoder_2", "tokenizer_2")  # SDXL's layout
SPECIAL = ("<|startoftext|>", "<|endoftext|>")


@dataclass
class TextToImageParts:
    """The loaded parts of one pipeline folder; ``vae`` is None for the pixel-space variant."""

    folder: Path
    unet: Any
    vae: Any | None
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    @property
    def pixel_space(self) -> bool:
        return self.vae is None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of what the UNet denoises: VAE latents, or the images themselves (pixel-space)."""
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.unet.config.in_channels), *size)

    def describe(self) -> dict[str, Any]:
        """What the catalog records about the folder (beside its weights' hash and provenance)."""
        return {"family": "text-to-image", "pixel_space": self.pixel_space, "latent_shape": list(self.latent_shape),
                "cross_attention_dim": int(self.unet.config.cross_attention_dim),
                "max_prompt_tokens": int(self.tokenizer.model_max_length),
                "vae_scaling_factor": None if self.vae is None else float(self.vae.config.scaling_factor)}


def check_sd_folder(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(the folder, its ``model_index.json``) if ``path`` holds a Stable-Diffusion-format pipeline, else one
    ``SilodiffError`` line that says what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise SilodiffError(f"--init-from {path}: no such folder")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise SilodiffError(f"--init-from {path}: not a Stable-Diffusion-format pipeline folder (no model_index.json)")
    try:
        index = json.loads(index_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SilodiffError(f"--init-from {path}: model_index.json is not JSON ({exc})") from None
    if any(_names_part(index, k) for k in SECOND_ENCODER):
        raise SilodiffError(f"--init-from {path}: a pipeline with two text encoders (SDXL) is not supported yet; "
                            "SD 1.x / 2.x folders (one text encoder) are")
    missing = [p for p in PARTS if not _names_part(index, p) or not (folder / p).is_dir()]
    if missing:
        raise SilodiffError(f"--init-from {path}: not a Stable-Diffusion-format pipeline folder "
                            f"(missing {', '.join(p + '/' for p in missing)})")
    return folder, index


def read_sd_pipeline(path: str | Path) -> TextToImageParts:
    """Load and check a local Stable-Diffusion-format folder (``check_sd_folder``, then the parts).

    Checks: the UNet's cross-attention width is the text encoder's hidden size; its input channels are
    the VAE's latent channels (or 3 without a VAE)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder, index = check_sd_folder(path)
    local = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **local)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **local)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **local)
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **local)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **local) if _names_part(index, "vae") else None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SilodiffError(f"--init-from {path}: a part does not load ({first})") from None
    width, hidden = unet.config.cross_attention_dim, text_encoder.config.hidden_size
    if width != hidden:
        raise SilodiffError(f"--init-from {path}: the UNet's cross-attention width ({width}) differs from its text "
                            f"encoder's hidden size ({hidden})")
    channels = 3 if vae is None else vae.config.latent_channels
    if unet.config.in_channels != channels:
        what = "images (no vae/: pixel-space)" if vae is None else "the VAE's latent channels"
        raise SilodiffError(f"--init-from {path}: the UNet takes {unet.config.in_channels} channels but "
                            f"{what} have {channels}")
    return TextToImageParts(folder, unet, vae, text_encoder, tokenizer, scheduler)


def tiny_vocabulary(words: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary and its merges, learned from ``words`` with the ``tokenizers`` library's BPE
    trainer until every word is one token (``word</w>``); every letter and digit is in it as well (alone
    and word-final), so any other text still tokenises, letter by letter."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()  # splits "t-shirt" as CLIP's own pattern does: t, -, shirt
    bpe.train_from_iterator(sorted({w.lower() for w in words}), trainers.BpeTrainer(
        vocab_size=1_000_000, min_frequency=0, special_tokens=list(SPECIAL), end_of_word_suffix="</w>",
        show_progress=False))
    vocab = dict(sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]))
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(f"{c}</w>", len(vocab))
    with tempfile.TemporaryDirectory() as tmp:  # the model's own writer gives the merges in CLIP's text form
        merges = Path(bpe.model.save(tmp)[1]).read_text().splitlines()[1:]
    return vocab, merges


def build_tiny_pipeline(
    folder: str | Path,
    words: Iterable[str],
    *,
    image_size: int = 16,
    pixel_space: bool = False,
    width: int = 32,
    cross_attention_dim: int | None = None,
    max_tokens: int = 16,
    seed: int = 0,
) -> Path:
    """Write a small Stable-Diffusion-format folder built from configs (nothing downloaded) and return it.

    ``words``: what the tokenizer must know as single tokens (e.g. the words of the captions).
    ``image_size``: the RGB images' side; the VAE halves it (latents (4, image_size/2, image_size/2)),
    or with ``pixel_space`` there is no VAE and the UNet denoises the (3, image_size, image_size) images.
    ``cross_attention_dim`` (default ``width``) other than ``width`` makes a deliberately broken pipeline
    (for the check ``read_sd_pipeline`` makes).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    if image_size % 4 or image_size < 8:
        raise SilodiffError(f"image_size must be a multiple of 4, at least 8; got {image_size}")
    torch.manual_seed(seed)
    vocab, merges = tiny_vocabulary(words)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer" / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
                              model_max_length=max_tokens)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=max_tokens, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = None if pixel_space else AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=image_size)
    channels = 3 if pixel_space else 4
    unet = UNet2DConditionModel(
        sample_size=image_size if pixel_space else image_size // 2, in_channels=channels, out_channels=channels,
        block_out_channels=(width, 2 * width), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim or width, attention_head_dim=8, norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False)
    parts = {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
    if vae is not None:
        parts["vae"] = vae
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": _diffusers_version(),
             "requires_safety_checker": False, "safety_checker": [None, None], "feature_extractor": [None, None],
             **{name: _library_and_class(part) for name, part in parts.items()}}
    if vae is None:
        index["vae"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def _names_part(index: dict[str, Any], part: str) -> bool:
    """Whether ``model_index.json`` names a component for ``part`` (``[null, null]`` names none)."""
    entry = index.get(part)
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def _library_and_class(part: Any) -> list[str]:
    """``model_index.json``'s [library, class] of one part."""
    return [type(part).__module__.split(".")[0], type(part).__name__]


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
