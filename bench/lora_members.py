"""LoRA compartments on one base: bytes per compartment, and how to evaluate K adapters at sampling time.

Protocol (fixed before the run):
- Models: silodiff's default denoisers, the UNet for 1×28×28 (Fashion-MNIST size; block channels 32/64/64)
  and the MLP for 1×8×8 (digits), 10 classes.  K = 8 LoRA adapters of rank 4 on every linear, conv and
  embedding layer, weights drawn at random (the cost of a forward pass does not depend on their values).
- One composed evaluation = every member on the same b = 32 rows (a dense composition, gate 0), the
  sampler's unit of work.  Four ways, the same ε (checked to 1e-4 in the run):
  1. ``separate``: K LoRA denoisers, each holding its own copy of the base (K models);
  2. ``merged``: K plain denoisers with the adapters merged into the weights (K full fine-tunes' cost);
  3. ``one-by-one``: one base, switching the active adapter K times;
  4. ``mixed``: one base, one peft mixed-adapter batch of K·b rows (``AdapterBank``, what ``compose`` uses).
- A fifth row, added later: ``soup``, the K adapters averaged into one model in weight space
  (``compose(combine="soup")``, ``nn.lora.adapter_soup``).  It is another composition (its ε is the averaged
  model's, so it is not checked against the others): one model on the b rows, built once per load (its build time
  is reported).
- Time: median of 7 interleaved repetitions, one thread, after 2 warm-up passes; figures are ratios to
  ``merged`` measured in the same run.  Memory: bytes of the parameters each way holds.
- ``lora_bytes_ratio``: adapter bytes / full model bytes (fp32), the #15 headline key (target ≤ 0.05).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import write_results

K, ROWS, RANK, REPS = 8, 32, 4, 7


def _adapters(base, k: int, rank: int):
    from silodiff.nn.lora import LoraDenoiser

    out = {}
    for i in range(k):
        model = LoraDenoiser(base=base.config, base_hash="0" * 64, rank=rank)
        model.load_base(base.state_dict())
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
        out[f"c{i}"] = model.eval()
    return out


def _merged(adapter):
    """A plain denoiser with the adapter folded into its weights (what a full fine-tune would hold)."""
    from silodiff.config import build

    model = build(dict(adapter.config["base"]))
    tmp = _copy(adapter)
    from peft.tuners.lora import LoraLayer

    for m in tmp.modules():
        if isinstance(m, LoraLayer):
            m.merge()
    model.load_state_dict(tmp.base_state_dict())  # base_layer weights now hold W + (α/r) B A
    return model.eval()


def _copy(adapter):
    import copy

    return copy.deepcopy(adapter)


def _bytes(modules) -> int:
    seen, total = set(), 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size()
    return total


def measure(arch: str) -> dict:
    from silodiff.nn import default_denoiser
    from silodiff.nn.lora import AdapterBank, adapter_soup

    shape = (1, 28, 28) if arch == "unet" else (1, 8, 8)
    torch.manual_seed(0)
    base = default_denoiser(shape, 10).eval()
    adapters = _adapters(base, K, RANK)
    merged = {n: _merged(a) for n, a in adapters.items()}
    bank = AdapterBank(adapters)
    names = list(adapters)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, *shape, generator=g)
    t, y = torch.randint(0, 1000, (ROWS,), generator=g), torch.randint(0, 10, (ROWS,), generator=g)
    xs, ts, ys = x.repeat(K, 1, 1, 1), t.repeat(K), y.repeat(K)
    rows = [n for n in names for _ in range(ROWS)]
    t0 = time.perf_counter()
    soup = adapter_soup(adapters, {n: 1 / K for n in names})
    soup_build = time.perf_counter() - t0
    ways = {
        "separate": lambda: torch.cat([adapters[n](x, t, y) for n in names]),
        "merged": lambda: torch.cat([merged[n](x, t, y) for n in names]),
        "one-by-one": lambda: bank.forward_one_by_one(xs, ts, ys, rows),
        "mixed": lambda: bank(xs, ts, ys, rows),
        "soup": lambda: soup(x, t, y),
    }
    with torch.no_grad():
        ref = ways["merged"]()
        for name, fn in ways.items():
            if name == "soup":  # another composition: one averaged model, not the K members
                fn()
                continue
            err = (fn() - ref).abs().max().item()
            assert err < 1e-4, f"{arch} {name}: ε differs by {err}"
            fn()
        times = {n: [] for n in ways}
        for _ in range(REPS):
            for name, fn in ways.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    adapter_bytes = sum(v.numel() * v.element_size() for v in adapters[names[0]].state_dict().values())
    full_bytes = _bytes([base])
    return {
        "seconds_per_composed_eval": {n: round(v, 5) for n, v in med.items()},
        "time_over_merged": {n: round(v / med["merged"], 3) for n, v in med.items()},
        "held_bytes": {"separate": _bytes(adapters.values()), "merged": _bytes(merged.values()),
                       "one-by-one": _bytes([bank]), "mixed": _bytes([bank]), "soup": _bytes([soup])},
        "soup_build_seconds": round(soup_build, 5),
        "adapter_bytes": adapter_bytes, "full_model_bytes": full_bytes,
        "lora_bytes_ratio": round(adapter_bytes / full_bytes, 4),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    results = {arch: measure(arch) for arch in ("unet", "mlp")}
    results["headline"] = {"lora_bytes_ratio": results["unet"]["lora_bytes_ratio"],
                           "lora_bytes_ratio_mlp": results["mlp"]["lora_bytes_ratio"]}
    rows = []
    for arch in ("unet", "mlp"):
        r = results[arch]
        rows.append((f"{arch}: adapter bytes / full model bytes (rank {RANK})", r["lora_bytes_ratio"], "≤ 0.05 (#15)"))
        for way in ("separate", "merged", "one-by-one", "mixed", "soup"):
            rows.append((f"{arch}: {way}, time over merged / MB held", f"{r['time_over_merged'][way]} / "
                         f"{r['held_bytes'][way] / 2**20:.2f}", f"{r['seconds_per_composed_eval'][way] * 1e3:.1f} ms"))
    write_results("lora-members", results, rows, [
        f"K = {K} adapters, rank {RANK}, every member on the same {ROWS} rows; median of {REPS} interleaved runs, 1 thread.",
        "mixed = one base and one peft mixed-adapter batch (AdapterBank, what compose uses for LoRA members).",
        "soup = the K adapters averaged into one model (compose(combine='soup')): another composition, one pass on "
        f"the b rows; built once per load in {results['unet']['soup_build_seconds'] * 1e3:.0f} ms (UNet), "
        f"{results['mlp']['soup_build_seconds'] * 1e3:.0f} ms (MLP).",
    ])


if __name__ == "__main__":
    main()
