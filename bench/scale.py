"""Scale benchmark (issue 16): silodiff's one training loop against a bare diffusers-style loop, and composed sampling.

    python bench/scale.py [--quick]

Protocol (fixed before running):

CPU section (always; torch pinned to 1 thread so both loops get the same share of a loaded 2-core machine):
- data: the first N = 512 Fashion-MNIST training images (28×28, Debian's dataset-fashion-mnist), 10 classes;
- model: the ``fashion-28`` UNet preset (2.7M parameters), class-conditional, same seed for both loops;
- silodiff: ``train(new_state(model, cfg), data, cfg, steps=S)``: DataLoader of uint8 rows, label dropout 0.1,
  per-sample ε-loss, AdamW (lr 2e-4), grad-norm clip 1.0, EMA (0.995);
- bare loop, written like diffusers' ``examples/unconditional_image_generation/train_unconditional.py``:
  ``DataLoader(TensorDataset(images in [-1, 1], labels), shuffle=True)``, the same ``UNet2DModel`` (class labels
  given), ``DDPMScheduler.add_noise``, ``F.mse_loss``, AdamW (lr 2e-4), ``clip_grad_norm_(1.0)``,
  ``diffusers.training_utils.EMAModel`` (decay 0.995), same batch size;
- each measurement: W = 2 warm-up steps (not timed), then S timed optimizer steps at batch size B = 16;
  the two loops alternate R = 3 times (silodiff, bare, silodiff, bare, ...) and the ratio is
  median(silodiff images/s) / median(bare images/s) → ``cpu.train_ratio_vs_diffusers_loop`` (target ≥ 0.95);
- sampling: K = 8 compartments of the same preset (random initialisations: throughput does not depend on the
  weights) composed with the trajectory-filter router over a prior in which every compartment holds every label,
  n = 16 class-conditional images, 10 DDPM steps; images/s dense (gate 0: every member on every row, every step)
  and gated (gate 0.5: rows drop to the members the trajectory picks) against one single model; two repeats,
  best of two.

GPU section (only when ``torch.cuda.is_available()``; never written otherwise):
- the ``ddpm-cifar10`` preset (35.7M parameters) at 32×32 RGB on random images (throughput does not depend on
  content; no CIFAR-10 download here), B = 128, the same two loops in fp32 and bf16 → ``gpu.train_ratio_vs_
  diffusers_loop`` per precision (target ≥ 0.95), silodiff images/s, the bf16 speedup, peak memory;
- torch.compile (bf16, after a longer warm-up that holds the compilation) against eager bf16;
- K = 8 composed sampling dense and gated (n = 64, 50 DDPM steps) against one model;
- 4 compartments trained as Ray jobs sharing the GPU (``--num-gpus 0.25``) against the same 4 run serially.

Results: ``bench/results/scale.json`` and ``.md`` with the git commit and exact command.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import scratch_dir, write_results  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from silodiff.config import build  # noqa: E402
from silodiff.data import load_fashion_mnist  # noqa: E402
from silodiff.devices import autocast, describe  # noqa: E402
from silodiff.nn.presets import count_parameters, unet_model_config  # noqa: E402
from silodiff.training import TrainConfig, new_state, noise_scheduler, train  # noqa: E402

LR, EMA_DECAY = 2e-4, 0.995


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def silodiff_run(config: dict, data, device: torch.device, precision: str, batch: int, steps: int, warmup: int,
                 compile: bool = False) -> float:
    """Images/s of silodiff's loop (``steps`` timed optimizer steps after ``warmup``)."""
    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=batch, lr=LR, ema_decay=EMA_DECAY, device=str(device), precision=precision, seed=0,
                      compile=compile)
    state = new_state(build(config), cfg)
    train(state, data, cfg, steps=warmup, progress=False)
    sync(device)
    t0 = time.perf_counter()
    train(state, data, cfg, steps=steps, progress=False)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def diffusers_run(config: dict, data, device: torch.device, precision: str, batch: int, steps: int, warmup: int) -> float:
    """Images/s of a bare loop written like diffusers' unconditional training example, same model and batches."""
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = build(config).unet.to(device)  # the same UNet2DModel
    scheduler = noise_scheduler()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    ema = EMAModel(model.parameters(), decay=EMA_DECAY, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    ema.to(device)
    dataset = torch.utils.data.TensorDataset(data.x(), data.labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))

    def batches():
        while True:
            yield from loader

    it = batches()
    model.train()

    def step():
        clean, labels = next(it)
        clean, labels = clean.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        noise = torch.randn(clean.shape, device=device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), device=device).long()
        noisy = scheduler.add_noise(clean, noise, t)
        with autocast(device, precision):
            pred = model(noisy, t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ema.step(model.parameters())

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def train_ratio(config, data, device, precision, batch, steps, warmup, repeats) -> dict:
    ours, bare = [], []
    for _ in range(repeats):  # alternate, so load changes hit both loops alike
        ours.append(silodiff_run(config, data, device, precision, batch, steps, warmup))
        bare.append(diffusers_run(config, data, device, precision, batch, steps, warmup))
    s, b = statistics.median(ours), statistics.median(bare)
    return {"silodiff_images_per_s": round(s, 2), "diffusers_loop_images_per_s": round(b, 2), "ratio": round(s / b, 3),
            "silodiff_runs": [round(v, 2) for v in ours], "diffusers_runs": [round(v, 2) for v in bare]}


def sampling(config: dict, device: torch.device, n: int, steps: int, k: int = 8, repeats: int = 2) -> dict:
    """Images/s of one model and of K composed members, dense and gated (trajectory-filter router)."""
    from silodiff.composition.composed import ComposedDenoiser
    from silodiff.composition.routers import TrajectoryFilter
    from silodiff.sampling import generate

    members = {}
    for i in range(k):
        torch.manual_seed(i)
        members[f"c{i}"] = build(config).eval().to(device)
    single = members["c0"]
    num_classes = single.num_classes
    labels = torch.arange(n) % num_classes
    counts = torch.ones(k, num_classes)

    def rate(model) -> float:
        best = 0.0
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            generate(model, n, labels=labels, steps=steps, seed=0, batch_size=n)
            sync(device)
            best = max(best, n / (time.perf_counter() - t0))
        return best

    out = {"n": n, "steps": steps, "k": k, "single_images_per_s": round(rate(single), 3)}
    for name, gate in (("dense", 0.0), ("gated", 0.5)):
        composed = ComposedDenoiser(members, TrajectoryFilter(), counts, gate=gate).to(device)
        out[f"k{k}_{name}_images_per_s"] = round(rate(composed), 3)
        evals = composed.calls.sum().item() / max(1, repeats * n * steps)
        out[f"k{k}_{name}_member_evals_per_row_step"] = round(evals, 3)
    out["gated_over_dense"] = round(out[f"k{k}_gated_images_per_s"] / out[f"k{k}_dense_images_per_s"], 3)
    out["gated_over_single"] = round(out[f"k{k}_gated_images_per_s"] / out["single_images_per_s"], 3)
    return out


def cpu_section(quick: bool) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_fashion_mnist("train", sources="single:fashion", limit=128 if quick else 512)
        config = unet_model_config("fashion-28", data.image_shape, 10)
        device = torch.device("cpu")
        steps, repeats = (3, 1) if quick else (8, 3)
        result = {"device": "cpu", "threads": 1, "preset": "fashion-28", "parameters": count_parameters(build(config)),
                  "n_images": len(data), "batch_size": 16, "timed_steps": steps, "warmup_steps": 2, "repeats": repeats}
        result["train"] = train_ratio(config, data, device, "fp32", 16, steps, 2, repeats)
        result["train_ratio_vs_diffusers_loop"] = result["train"]["ratio"]
        result["sampling"] = sampling(config, device, n=8 if quick else 16, steps=4 if quick else 10, repeats=1 if quick else 2)
        return result
    finally:
        torch.set_num_threads(threads)


def gpu_section(quick: bool) -> dict:
    from silodiff.data import SampleSet

    device = torch.device("cuda", 0)
    g = torch.Generator().manual_seed(0)
    n = 2048
    pixels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    data = SampleSet(pixels, torch.arange(n) % 10, [f"{i:064x}" for i in range(n)], ["gpu"] * n)
    config = unet_model_config("ddpm-cifar10", (3, 32, 32), 10)
    batch, steps, warmup, repeats = (64, 5, 2, 1) if quick else (128, 30, 5, 3)
    out = {"device": describe(device), "preset": "ddpm-cifar10", "parameters": count_parameters(build(config)),
           "data": "random 32×32 RGB (throughput only)", "batch_size": batch, "timed_steps": steps, "repeats": repeats}
    for precision in ("fp32", "bf16"):
        torch.cuda.reset_peak_memory_stats(device)
        out[precision] = train_ratio(config, data, device, precision, batch, steps, warmup, repeats)
        out[precision]["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    out["train_ratio_vs_diffusers_loop"] = {p: out[p]["ratio"] for p in ("fp32", "bf16")}
    out["train_images_per_s"] = {p: out[p]["silodiff_images_per_s"] for p in ("fp32", "bf16")}
    out["bf16_speedup"] = round(out["bf16"]["silodiff_images_per_s"] / out["fp32"]["silodiff_images_per_s"], 3)
    # torch.compile: kept as an option only if it pays; compile time is in the warm-up, not in the timed steps
    compiled = silodiff_run(config, data, device, "bf16", batch, steps, warmup + 3, compile=True)
    out["compile_bf16_images_per_s"] = round(compiled, 2)
    out["compile_speedup_bf16"] = round(compiled / out["bf16"]["silodiff_images_per_s"], 3)
    out["sampling"] = sampling(config, device, n=16 if quick else 64, steps=10 if quick else 50)
    out["ray_shared_gpu"] = ray_shared_gpu(data, quick)
    return out


def ray_shared_gpu(data, quick: bool) -> dict:
    """4 compartments as Ray jobs with --num-gpus 0.25 each, against the same 4 trained one after another."""
    try:
        from silodiff.jobs import plan_compartments, train_compartments
        from silodiff.jobs.ray_backend import import_ray
        from silodiff.store import Store

        import_ray()
    except Exception as exc:  # noqa: BLE001 - Ray is an optional extra
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    root = scratch_dir("silodiff-scale-")
    sub = data.subset(data.sample_ids[: 512 if quick else 2048])
    sub = type(sub)(sub.pixels, sub.labels, sub.sample_ids, [f"s{i % 4}" for i in range(len(sub))])
    model = unet_model_config("ddpm-cifar10", (3, 32, 32), 10)
    config = TrainConfig(epochs=1 if quick else 2, batch_size=64, lr=LR)
    out = {}
    for backend, options in (("serial", {}), ("ray", {"num_gpus": 0.25, "num_cpus": 1})):
        store = Store(root / backend)
        store.ingest(sub, "random")
        plan_compartments(store, by="source", slices=1)
        t0 = time.perf_counter()
        results = train_compartments(store, config=config, model=model, backend=backend, progress=False, **options)
        out[f"{backend}_s"] = round(time.perf_counter() - t0, 2)
        out[f"{backend}_train_s"] = {r.name: round(r.seconds, 2) for r in results}
    out["ray_over_serial"] = round(out["serial_s"] / out["ray_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (checks the script, not the figures)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section even where CUDA is available")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU section (a short device check)")
    args = parser.parse_args()
    results = {"commit": git_commit(), "quick": args.quick}
    rows = []
    if not args.gpu_only:
        from silodiff.errors import SilodiffError

        try:
            results["cpu"] = cpu_section(args.quick)
        except SilodiffError as exc:  # e.g. no Fashion-MNIST on a device machine without a package index
            results["cpu"] = {"skipped": str(exc)}
            rows.append(("cpu", "skipped", str(exc)))
    if torch.cuda.is_available() and not args.no_gpu:
        results["gpu"] = gpu_section(args.quick)
    cpu = results.get("cpu", {})
    rows += [] if "train" not in cpu else [
        ("cpu.train_ratio_vs_diffusers_loop", cpu["train_ratio_vs_diffusers_loop"], "≥ 0.95"),
        ("cpu.silodiff train images/s", cpu["train"]["silodiff_images_per_s"], "fashion-28, B = 16, 1 thread"),
        ("cpu.diffusers-loop train images/s", cpu["train"]["diffusers_loop_images_per_s"], "same model and batches"),
        ("cpu.sampling single images/s", cpu["sampling"]["single_images_per_s"],
         f"n = {cpu['sampling']['n']}, {cpu['sampling']['steps']} steps"),
        ("cpu.sampling K=8 dense images/s", cpu["sampling"]["k8_dense_images_per_s"],
         f"{cpu['sampling']['k8_dense_member_evals_per_row_step']} member evaluations per row-step"),
        ("cpu.sampling K=8 gated images/s", cpu["sampling"]["k8_gated_images_per_s"],
         f"{cpu['sampling']['k8_gated_member_evals_per_row_step']} member evaluations per row-step"),
    ]
    if "gpu" in results:
        gpu = results["gpu"]
        rows += [
            ("gpu.device", gpu["device"], ""),
            ("gpu.train_ratio_vs_diffusers_loop fp32", gpu["train_ratio_vs_diffusers_loop"]["fp32"], "≥ 0.95"),
            ("gpu.train_ratio_vs_diffusers_loop bf16", gpu["train_ratio_vs_diffusers_loop"]["bf16"], "≥ 0.95"),
            ("gpu.train images/s fp32", gpu["train_images_per_s"]["fp32"], f"ddpm-cifar10, B = {gpu['batch_size']}"),
            ("gpu.train images/s bf16", gpu["train_images_per_s"]["bf16"], ""),
            ("gpu.bf16 speedup", gpu["bf16_speedup"], "bf16 / fp32 images/s"),
            ("gpu.torch.compile speedup (bf16)", gpu["compile_speedup_bf16"], "compiled / eager images/s, warm"),
            ("gpu.peak memory GiB fp32 / bf16", f"{gpu['fp32']['peak_memory_gib']} / {gpu['bf16']['peak_memory_gib']}", ""),
            ("gpu.sampling single images/s", gpu["sampling"]["single_images_per_s"], ""),
            ("gpu.sampling K=8 dense images/s", gpu["sampling"]["k8_dense_images_per_s"], ""),
            ("gpu.sampling K=8 gated images/s", gpu["sampling"]["k8_gated_images_per_s"], ""),
            ("gpu.4 compartments: Ray (0.25 GPU each) vs serial", gpu["ray_shared_gpu"], ""),
        ]
    notes = [f"git commit {results['commit']}",
             "No GPU section: this run had no CUDA device (it is written only when one is present)." if "gpu" not in results
             else f"GPU: {results['gpu']['device']}",
             "Ratios are of medians of alternating runs in the same process; the machine is shared, so absolute "
             "images/s move with its load while the ratio is the comparison."]
    write_results("scale-quick" if args.quick else "scale", results, rows, notes)


if __name__ == "__main__":
    main()
