"""LoRA adapters (peft) on a frozen base denoiser: exact at init, adapter-only state,
training moves only the adapter, store round trip through the base, peft export parity."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.nn.lora import LoraDenoiser, adaptable_modules
from silodiff.training import TrainConfig, train
from silodiff.training.loop import new_state


def _inputs(shape=(1, 8, 8), b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, *shape, generator=g), torch.tensor([0, 5, 50, 300, 700, 999][:b]), torch.arange(b) % 10


def _adapted(base, **kw):
    model = LoraDenoiser(base=base.config, base_hash=None, **kw)
    model.load_base(base.state_dict())
    return model


def _perturb(model, seed=1):
    """Give the adapter non-zero weights (B starts at 0, so an untrained adapter is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_an_untrained_adapter_is_the_base_and_only_the_adapter_trains(request, arch):
    base = request.getfixturevalue(arch).eval()
    model = _adapted(base, rank=2).eval()
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), base(x, t, y))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # the state dict is the adapter alone, and small next to the base
    state = model.state_dict()
    assert state and all("lora_" in k for k in state)
    full = sum(v.numel() for v in base.state_dict().values())
    assert sum(v.numel() for v in state.values()) < 0.5 * full


def test_training_moves_the_adapter_and_never_the_base(tiny_mlp, digits32):
    model = _adapted(tiny_mlp, rank=4)
    before_base = {k: v.clone() for k, v in model.base_state_dict().items()}
    before_adapter = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    state = train(new_state(model, config), digits32, config, steps=5, progress=False)
    after_base = state.model.base_state_dict()
    for k, v in before_base.items():
        torch.testing.assert_close(after_base[k], v, rtol=0, atol=0)
    moved = [k for k, v in state.model.state_dict().items() if not torch.equal(v, before_adapter[k])]
    assert moved, "no adapter weight changed in 5 steps"
    # the EMA copy is adapter-only too and loads back
    model.load_state_dict(state.ema.model.state_dict())


def test_store_round_trip_loads_the_base_first(tmp_path, tiny_unet):
    from silodiff.store.artifacts import ArtifactStore, tensors_of

    artifacts = ArtifactStore(tmp_path / "artifacts")
    base_hash = artifacts.save_module(tiny_unet)
    model = LoraDenoiser(base=tiny_unet.config, base_hash=base_hash, rank=2)
    model.load_base(tiny_unet.state_dict())
    _perturb(model)
    digest = artifacts.save_module(model)
    stored, _ = artifacts.get(digest)
    assert set(stored) == set(tensors_of(model)) and all("lora_" in k for k in stored)  # the adapter alone
    loaded = artifacts.load_module(digest)
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, y), model.eval()(x, t, y))
        assert not torch.allclose(loaded(x, t, y), tiny_unet.eval()(x, t, y))


def test_store_refuses_an_adapter_whose_base_is_gone(tmp_path, tiny_mlp):
    from silodiff.store.artifacts import ArtifactStore

    artifacts = ArtifactStore(tmp_path / "artifacts")
    base_hash = artifacts.save_module(tiny_mlp)
    digest = artifacts.save_module(_adapted_with_hash(tiny_mlp, base_hash))
    artifacts.delete(base_hash)
    with pytest.raises(SilodiffError, match="missing"):
        artifacts.load_module(digest)


def _adapted_with_hash(base, base_hash):
    model = LoraDenoiser(base=base.config, base_hash=base_hash, rank=2)
    model.load_base(base.state_dict())
    return model


@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_peft_export_loads_with_peft_and_gives_the_same_eps(request, tmp_path, arch):
    from peft import PeftModel

    from silodiff.config import build

    base = request.getfixturevalue(arch).eval()
    model = _adapted(base, rank=3, alpha=6.0)
    _perturb(model)
    folder = model.export_peft(tmp_path / "adapter")
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    fresh_base = build(dict(base.config))
    fresh_base.load_state_dict(base.state_dict())
    loaded = PeftModel.from_pretrained(fresh_base, str(folder)).eval()
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, y), model.eval()(x, t, y), rtol=0, atol=1e-5)


def test_targets_select_layers_and_bad_input_is_one_clear_error(tiny_mlp):
    model = LoraDenoiser(base=tiny_mlp.config, rank=2, targets=["inp", r"blocks\.\d+\.2"])
    assert model.target_names == ["inp", "blocks.0.2"]
    assert set(model.target_names) <= set(adaptable_modules(tiny_mlp))
    with pytest.raises(SilodiffError, match="rank must be ≥ 1"):
        LoraDenoiser(base=tiny_mlp.config, rank=0)
    with pytest.raises(SilodiffError, match="match no linear"):
        LoraDenoiser(base=tiny_mlp.config, targets=["attention"])
    with pytest.raises(SilodiffError, match="valid regex"):
        LoraDenoiser(base=tiny_mlp.config, targets=["("])
    with pytest.raises(SilodiffError, match="do not fit"):
        LoraDenoiser(base=tiny_mlp.config).load_base({"inp.weight": torch.zeros(1)})


@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_an_adapter_bank_gives_each_members_eps_in_one_mixed_batch(request, arch):
    from silodiff.nn.lora import AdapterBank

    base = request.getfixturevalue(arch).eval()
    adapters = {}
    for k, name in enumerate(["source-1", "source-2", "source-3"]):
        model = LoraDenoiser(base=base.config, base_hash="b" * 64, rank=2 + k)
        model.load_base(base.state_dict())
        _perturb(model, seed=k + 1)
        adapters[name] = model.eval()
    bank = AdapterBank(adapters)
    x, t, y = _inputs()
    rows = ["source-2", None, "source-1", "source-3", "source-2", None]  # None: the base alone
    with torch.no_grad():
        mixed = bank(x, t, y, rows)
        one_by_one = bank.forward_one_by_one(x, t, y, rows)
        for i, name in enumerate(rows):
            expected = (base if name is None else adapters[name])(x[i:i + 1], t[i:i + 1], y[i:i + 1])
            torch.testing.assert_close(mixed[i:i + 1], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(one_by_one, mixed, rtol=1e-5, atol=1e-5)
    # one base in memory: the bank holds the base's weights once plus K adapters
    base_numel = sum(v.numel() for v in base.state_dict().values())
    bank_numel = sum(p.numel() for p in bank.parameters())
    adapters_numel = sum(sum(v.numel() for v in a.state_dict().values()) for a in adapters.values())
    assert bank_numel == base_numel + adapters_numel


@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_an_adapter_soup_adds_each_weighted_update_to_the_base_weights(request, arch):
    from silodiff.nn.lora import adapter_soup

    base = request.getfixturevalue(arch).eval()
    adapters = {}
    for k, name in enumerate(["source-1", "source-2"]):
        model = LoraDenoiser(base=base.config, base_hash="b" * 64, rank=2 + k, alpha=3.0)
        model.load_base(base.state_dict())
        _perturb(model, seed=k + 1)
        adapters[name] = model.eval()
    # peft's own merge_and_unload gives each adapter's update ΔW_i = merged_i − W_base, by another code path
    updates = [{k: v - base.state_dict()[k] for k, v in a.merged().state_dict().items()} for a in adapters.values()]
    soup = adapter_soup(adapters, {"source-1": 0.25, "source-2": 0.5})
    adapted = {n.removesuffix(".base_layer") for n, _ in adapters["source-1"].base.named_modules() if "base_layer" in n}
    assert adapted  # some layers carry adapters, and exactly those moved
    for key, value in soup.state_dict().items():
        expected = base.state_dict()[key] + 0.25 * updates[0][key] + 0.5 * updates[1][key]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        if key.rsplit(".", 1)[0] not in adapted:
            assert torch.equal(value, base.state_dict()[key])
    # one adapter at weight 1 is that adapter's model; the soup is a plain denoiser of the base's kind
    x, t, y = _inputs()
    with torch.no_grad():
        one = adapter_soup({"source-2": adapters["source-2"]}, {"source-2": 1.0})
        torch.testing.assert_close(one(x, t, y), adapters["source-2"](x, t, y), rtol=1e-4, atol=1e-5)
    assert type(soup) is type(base) and not any("lora_" in k for k in soup.state_dict())
    with pytest.raises(SilodiffError, match="one weight per adapter"):
        adapter_soup(adapters, {"source-1": 1.0})
    with pytest.raises(SilodiffError, match="≥ 0"):
        adapter_soup(adapters, {"source-1": 1.0, "source-2": -0.5})
