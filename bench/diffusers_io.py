"""diffusers in and out, and lean serving checkpoints (issue 17, items 2-4).

Protocol (fixed before the run):
- Data: N synthetic 1×28×28 images (uint8 noise, 10 classes, 2 sources); model: the ``fashion-28`` UNet preset
  (a 28×28 UNet with attention at 7×7); one compartment trained for ``--epochs`` epochs, one slice, on the CPU.
  Its final checkpoint is the artifact every figure is measured on.
- Serving: bytes a cold load of that artifact reads (``/proc/self/io`` ``rchar`` delta around
  ``ArtifactStore.load_module``, the per-process hash cache emptied first; the tensors are memory-mapped after
  the streamed hash, so this counts each file sampling opens once) over the bytes of the whole checkpoint on
  disk.  ``serve_bytes_ratio`` is the new layout's (target ≤ 0.5); ``serve_bytes_ratio_old_layout`` the same
  checkpoint rewritten in the layout before the split (one file with the training state inside), which must
  still load.
- Cold-load time: median of ``--reps`` interleaved loads of each layout (hash cache emptied before each; the OS
  page cache is warm for both); ``cold_load_speedup`` = old / new, and the cached reload (same process, files
  unchanged) for the new layout.
- Round trip: ``export --compartment``, then ``UNet2DModel.from_pretrained(out/unet_conditional)``; ε on 16 fixed
  (x_t, t, label) rows, labels including "no label", against silodiff's model: ``roundtrip_max_abs_diff``
  (target ≤ 1e-5); the pipeline's unconditional ``unet/`` against the model's unconditional ε; and import back
  (what ``--init-from`` runs: ``import_unet``, then the stored external artifact): ``import_back_max_abs_diff``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import scratch_dir, write_results


def _rchar() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _store(root: Path, n: int, epochs: int):
    import silodiff as sd
    from silodiff.data import SampleSet
    from silodiff.jobs.models import model_config

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    store = sd.Store(root)
    store.ingest(SampleSet.from_arrays(pixels, labels.tolist(), [f"s{i % 2}" for i in range(n)]), "synthetic")
    sd.plan_compartments(store, by="source", slices=1)
    config = sd.TrainConfig(epochs=epochs, batch_size=32, device="cpu")
    sd.train_compartments(store, ["s0"], config=config, model=model_config(store, "fashion-28"), progress=False)
    return store


def _old_layout(store, digest: str, root: Path) -> tuple[object, str]:
    """The same checkpoint in the layout before the split: train/ tensors inside model.safetensors."""
    import silodiff as sd
    from safetensors.torch import save as st_save

    from silodiff.store.artifacts import CONFIG, WEIGHTS, canonical_json

    tensors, config = store.artifacts.get(digest)
    config = {k: v for k, v in config.items() if k != "train_state"}
    cfg, weights = canonical_json(config), st_save(tensors)
    old_digest = hashlib.sha256(cfg + weights).hexdigest()
    old = sd.Store(root)
    folder = old.artifacts.path(old_digest)
    folder.mkdir(parents=True)
    (folder / WEIGHTS).write_bytes(weights)
    (folder / CONFIG).write_bytes(cfg)
    return old, old_digest


def _cold_load(store, digest: str) -> tuple[float, int | None]:
    from silodiff.store import artifacts

    artifacts._VERIFIED.clear()
    before, t0 = _rchar(), time.perf_counter()
    store.artifacts.load_module(digest)
    seconds, after = time.perf_counter() - t0, _rchar()
    return seconds, (after - before) if before is not None and after is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import silodiff as sd
    from diffusers import DDPMPipeline, UNet2DModel

    from silodiff.jobs.pretrained import import_unet

    root = scratch_dir("bench-diffusers-io-")
    t0 = time.perf_counter()
    store = _store(root / "new", args.n, args.epochs)
    train_s = time.perf_counter() - t0
    digest = sd.load_denoiser(store, "s0").artifact_hash
    old, old_digest = _old_layout(store, digest, root / "old")
    sizes = store.artifacts.bytes_on_disk(digest)
    old_sizes = old.artifacts.bytes_on_disk(old_digest)

    # serving: bytes read and time of a cold load, both layouts, interleaved
    new_runs, old_runs = [], []
    for _ in range(args.reps):
        new_runs.append(_cold_load(store, digest))
        old_runs.append(_cold_load(old, old_digest))
    cached = []
    for _ in range(args.reps):  # the hash cache is warm now: no file is hashed again
        t1 = time.perf_counter()
        store.artifacts.load_module(digest)
        cached.append(time.perf_counter() - t1)
    cached_s = statistics.median(cached)
    new_bytes, old_bytes = new_runs[0][1], old_runs[0][1]
    new_s = statistics.median(r[0] for r in new_runs)
    old_s = statistics.median(r[0] for r in old_runs)

    # the diffusers round trip
    model = sd.load_denoiser(store, "s0")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    y = torch.arange(16) % 11  # 10 = no label
    out = root / "export"
    sd.export(store, out, compartment="s0")
    unet = UNet2DModel.from_pretrained(str(out / "unet_conditional"), local_files_only=True)
    plain = UNet2DModel.from_pretrained(str(out / "unet"), local_files_only=True)
    record = import_unet(store, out / "unet_conditional", "bench: exported from this store")
    back = store.load(record["hash"])
    with torch.no_grad():
        eps = model(x, t, y)
        roundtrip = float((unet(x, t, class_labels=y).sample - eps).abs().max())
        unconditional = float((plain(x, t).sample - model(x, t, None)).abs().max())
        import_back = float((back(x, t, y) - eps).abs().max())
    pipe = DDPMPipeline.from_pretrained(str(out), local_files_only=True)
    images = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images

    total, old_total = sum(sizes.values()), sum(old_sizes.values())
    results = {
        "n_images": args.n, "epochs": args.epochs, "train_seconds": round(train_s, 2),
        "checkpoint_bytes": total, "files": sizes, "old_layout_bytes": old_total,
        "serve_bytes_read": new_bytes, "serve_bytes_read_old_layout": old_bytes,
        "serve_bytes_ratio": round(new_bytes / total, 4) if new_bytes is not None else None,
        "serve_bytes_ratio_old_layout": round(old_bytes / old_total, 4) if old_bytes is not None else None,
        "serve_file_bytes_ratio": round((sizes["model.safetensors"] + sizes["config.json"]) / total, 4),
        "cold_load_s_old_layout": round(old_s, 4), "cold_load_s": round(new_s, 4),
        "cold_load_speedup": round(old_s / new_s, 3), "cached_load_s": round(cached_s, 4),
        "roundtrip_max_abs_diff": roundtrip, "unconditional_pipeline_max_abs_diff": unconditional,
        "import_back_max_abs_diff": import_back, "pipeline_images_shape": list(images.shape),
    }
    rows = [
        ("serve_bytes_ratio", results["serve_bytes_ratio"], "≤ 0.5 (bytes a cold load reads / checkpoint bytes)"),
        ("serve_bytes_ratio_old_layout", results["serve_bytes_ratio_old_layout"], "the layout before the split"),
        ("cold_load_s_old_layout", results["cold_load_s_old_layout"], f"median of {args.reps}"),
        ("cold_load_s", results["cold_load_s"], f"median of {args.reps}"),
        ("cold_load_speedup", results["cold_load_speedup"], "old / new, same run"),
        ("cached_load_s", results["cached_load_s"], f"reload in the same process (hash cached), median of {args.reps}"),
        ("roundtrip_max_abs_diff", roundtrip, "≤ 1e-5 (export → UNet2DModel.from_pretrained, 16 rows)"),
        ("unconditional_pipeline_max_abs_diff", unconditional, "DDPMPipeline's unet/ vs the model's unconditional ε"),
        ("import_back_max_abs_diff", import_back, "≤ 1e-5 (exported UNet → --init-from's import)"),
    ]
    notes = [
        f"Checkpoint of the fashion-28 UNet after {args.epochs} epochs on {args.n} synthetic 28×28 images: "
        f"{', '.join(f'{k} {v / 1e6:.2f} MB' for k, v in sizes.items())}.",
        "Bytes read: /proc/self/io rchar around ArtifactStore.load_module with the hash cache emptied; the hash "
        "streams each file sampling opens once, then safetensors memory-maps the tensors (the OS page cache is "
        "warm in both layouts, so the times compare the work done, not the disk).",
        f"DDPMPipeline.from_pretrained(export folder) ran 5 steps: images {list(images.shape)}.",
    ]
    write_results("diffusers-io", results, rows, notes)
    if results["serve_bytes_ratio"] is None or results["serve_bytes_ratio"] > 0.5 or roundtrip > 1e-5 \
            or import_back > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
