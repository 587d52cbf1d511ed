"""Data larger than memory (issue 17): peak memory against data size, streaming cost, forgetting I/O, NN search.

    python bench/data_scale.py [--n 45000] [--nn-queries 500] [--nn-size 0] [--quick]

Synthetic RGB 32×32 images (a random 8×8 colour layout, upsampled, plus pixel noise: images with
near neighbours, unlike uniform noise), 10 labels, 4 sources, ingested streamed in parts of 8,192.

Figures (bench/results/data_scale.json + data_scale.md):
- peak_rss_ratio_4x_data: peak RSS of one process that ingests a store of 4N images and trains one
  epoch on it, over the same at N (each in a fresh subprocess, ``resource.getrusage``); both stores
  streamed (SILODIFF_IN_MEMORY_MB=0); N is chosen so that 4N images as float32 exceed 2 GB. Target ≤ 1.2.
- stream_throughput_ratio: training samples/s streamed from the chunks over samples/s with the same
  store in memory (the N store, which fits), same model and config. Target ≥ 0.9.
- forget_rewrite_fraction: bytes of chunk files written by forgetting one sample of the 4N store, over
  the bytes of its data. Target ≤ 0.05.
- nn_search_over_faiss_flat: silodiff's exact search (faiss, streamed from the 4N store's chunks, with
  the exact re-ranking) over a plain faiss ``IndexFlatL2`` holding every training image in memory, same
  queries, same run. Target ≤ 1.1.
- The approximate index (IVF-SQ8) recall@1 against the exact search, and its time (index build
  included), on a store of ``--nn-size`` images (0: the 4N store); the exact search streams it, so
  this size is bounded by disk, not memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import scratch_dir, write_results  # noqa: E402

HERE = Path(__file__).resolve()
PART = 4096


def synthetic(n: int, seed: int):
    """``n`` synthetic RGB 32×32 images as SampleSet parts of ``PART`` (never all in memory)."""
    import torch

    from silodiff.data import SampleSet

    rng = np.random.default_rng(seed)
    for start in range(0, n, PART):
        b = min(PART, n - start)
        low = torch.from_numpy(rng.integers(0, 256, size=(b, 3, 8, 8)).astype(np.float32))
        up = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).numpy()
        up += rng.standard_normal(size=up.shape, dtype=np.float32) * 8
        px = np.clip(up, 0, 255, out=up).astype(np.uint8)
        del low, up
        labels = rng.integers(0, 10, size=b)
        yield SampleSet.from_arrays(px, labels, [f"s{k}" for k in rng.integers(0, 4, size=b)])


def _config(epochs: float = 1):
    from silodiff.training import TrainConfig

    return TrainConfig(epochs=int(epochs), batch_size=256, device="cpu", seed=0, lr=1e-3)


def _model():
    from silodiff.nn import MLPDenoiser

    return MLPDenoiser(image_shape=(3, 32, 32), num_classes=10, hidden=256, depth=2)


def phase_ingest_train(root: str, n: int) -> dict:
    """In a fresh process: ingest n images (streamed), train one epoch on the store (streamed); peak RSS."""
    import torch

    from silodiff.store import Store
    from silodiff.training import new_state, train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    store = Store(root)
    store.ingest(synthetic(n, seed=n), "synthetic")
    t_ingest = time.perf_counter() - t0
    rss_ingest = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    data = store.training_set()
    streamed = type(data).__name__ == "ChunkedSamples"
    state = new_state(_model(), _config())
    t0 = time.perf_counter()
    train(state, data, _config(), progress=False)
    t_train = time.perf_counter() - t0
    return {"n": n, "streamed": streamed, "ingest_s": t_ingest, "train_epoch_s": t_train, "steps": state.step,
            "peak_rss_after_ingest": rss_ingest, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "data_bytes": sum(p.stat().st_size for p in Path(root, "data").rglob("*.safetensors"))}


def phase_throughput(root: str, steps: int) -> dict:
    """Samples/s of the same training, in memory and streamed, on one store (alternated, best of 2)."""
    import torch

    from silodiff.store import Store
    from silodiff.training import new_state, train

    torch.set_num_threads(1)
    store = Store(root, create=False)
    in_memory, streamed = store.dataset(), store.samples()
    best = {"in_memory": 0.0, "streamed": 0.0}
    for _ in range(2):
        for name, data in (("in_memory", in_memory), ("streamed", streamed)):
            state = new_state(_model(), _config())
            t0 = time.perf_counter()
            train(state, data, _config(), steps=steps, progress=False)
            best[name] = max(best[name], steps * 256 / (time.perf_counter() - t0))
    return best


def _subprocess(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if out.returncode != 0:
        raise SystemExit(f"phase {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def forget_fraction(root: str) -> dict:
    from silodiff.store import Store
    from silodiff.unlearning import forget

    store = Store(root, create=False)
    before = {p: p.stat().st_size for p in store.data_dir.rglob("*.safetensors")}
    sid = store.catalog.sample_rows()[len(before)]["sample_id"]
    t0 = time.perf_counter()
    forget(store, sample_ids=[sid])
    seconds = time.perf_counter() - t0
    after = {p: p.stat().st_size for p in store.data_dir.rglob("*.safetensors")}
    written = sum(size for p, size in after.items() if p not in before)
    return {"bytes_written": written, "store_bytes": sum(before.values()), "chunks": len(before),
            "chunks_replaced": len(set(before) - set(after)), "seconds": seconds,
            "fraction": written / sum(before.values())}


def _queries(n: int, d: int) -> np.ndarray:
    q = np.concatenate([p.pixels.flatten(1).numpy() for p in synthetic(n, seed=123)]).astype(np.float32) / 255
    assert q.shape[1] == d
    return q


def _exact_search(root: str, queries: int):
    """(the store's streamed samples, the queries, silodiff's exact top-1, its seconds)."""
    import faiss

    from silodiff.audit import nn_search as search
    from silodiff.store import Store

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    base = Store(root, create=False).samples()
    q = _queries(queries, 3 * 32 * 32)
    t0 = time.perf_counter()
    _, exact, _ = search.knn(q, base, 1, approximate=False)
    return base, q, exact, time.perf_counter() - t0


def nn_vs_flat(root: str, queries: int) -> dict:
    """silodiff's exact search (streamed from the chunks) against a faiss IndexFlatL2 holding everything."""
    import faiss

    from silodiff.audit import nn_search as search

    base, q, exact, seconds = _exact_search(root, queries)
    out = {"training_images": len(base), "queries": queries, "silodiff_exact_s": seconds}
    rows = np.empty((len(base), q.shape[1]), dtype=np.float32)  # loading the pixels is not timed
    for pos, r in search.base_batches(base)[2]():
        rows[pos] = r
    t0 = time.perf_counter()
    index = faiss.IndexFlatL2(q.shape[1])
    index.add(rows)
    ref = index.search(q, 1)[1][:, 0]
    out["faiss_flat_s"] = time.perf_counter() - t0
    out["top1_agreement_with_faiss_flat"] = float((exact[:, 0] == ref).mean())
    return out


def ivf_recall(root: str, queries: int) -> dict:
    """The approximate index against silodiff's exact search: recall@1 and time, at two nprobe values."""
    from silodiff.audit import nn_search as search

    base, q, exact, seconds = _exact_search(root, queries)
    out = {"training_images": len(base), "queries": queries, "exact_s": seconds}
    t0 = time.perf_counter()
    index = search.build_ivf(base)
    out["ivf_build_s"] = time.perf_counter() - t0
    for nprobe in (8, 32):
        t0 = time.perf_counter()
        _, approx, info = search.knn(q, base, 1, nprobe=nprobe, ivf=index)
        out[f"ivf_nprobe{nprobe}"] = {"search_s": time.perf_counter() - t0, "nlist": info["nlist"],
                                      "recall_at_1": float((approx[:, 0] == exact[:, 0]).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=45000, help="N: the small store (the large one holds 4N)")
    ap.add_argument("--nn-queries", type=int, default=500)
    ap.add_argument("--nn-size", type=int, default=0,
                    help="training images of the store the IVF recall is measured on (0: the 4N store)")
    ap.add_argument("--throughput-steps", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "ingest-train":
        print(json.dumps(phase_ingest_train(args.root, args.n)))
        return
    if args.phase == "throughput":
        print(json.dumps(phase_throughput(args.root, args.throughput_steps)))
        return
    if args.quick:
        args.n, args.nn_queries, args.throughput_steps = 3000, 50, 10
    n = args.n
    scratch = scratch_dir("silodiff-data-scale-")
    results: dict = {"n": n, "float_bytes_4n": 4 * n * 3 * 32 * 32 * 4}
    stream_env = {"SILODIFF_IN_MEMORY_MB": "0"}
    small = _subprocess(["--phase", "ingest-train", "--root", str(scratch / "n"), "--n", str(n)], stream_env)
    large = _subprocess(["--phase", "ingest-train", "--root", str(scratch / "4n"), "--n", str(4 * n)], stream_env)
    results["ingest_train_n"], results["ingest_train_4n"] = small, large
    results["peak_rss_ratio_4x_data"] = large["peak_rss"] / small["peak_rss"]
    print(json.dumps({"peak": results["peak_rss_ratio_4x_data"], "small": small, "large": large}), flush=True)
    tp = _subprocess(["--phase", "throughput", "--root", str(scratch / "n"),
                      "--throughput-steps", str(args.throughput_steps)])
    results["throughput_samples_per_s"] = tp
    results["stream_throughput_ratio"] = tp["streamed"] / tp["in_memory"]
    print(json.dumps(tp), flush=True)
    ff = forget_fraction(str(scratch / "4n"))
    results["forget"] = ff
    results["forget_rewrite_fraction"] = ff["fraction"]
    print(json.dumps(ff), flush=True)
    nn = nn_vs_flat(str(scratch / "4n"), args.nn_queries)
    results["nn_search"] = nn
    results["nn_search_over_faiss_flat"] = nn["silodiff_exact_s"] / nn["faiss_flat_s"]
    print(json.dumps(nn), flush=True)
    ivf_root = scratch / "4n"
    if args.nn_size:
        from silodiff.store import Store

        ivf_root = scratch / "nn"
        t0 = time.perf_counter()
        Store(ivf_root).ingest(synthetic(args.nn_size, seed=7), "synthetic")
        results["nn_store_ingest_s"] = time.perf_counter() - t0
    ivf = ivf_recall(str(ivf_root), args.nn_queries)
    results["ivf"] = ivf
    rows = [
        ("N / 4N images (RGB 32×32)", f"{n} / {4 * n}", f"4N as float32: {results['float_bytes_4n'] / 2**30:.2f} GiB"),
        ("peak_rss_ratio_4x_data", results["peak_rss_ratio_4x_data"], "target ≤ 1.2"),
        ("peak RSS at N / 4N (MiB)", f"{small['peak_rss'] / 2**20:.0f} / {large['peak_rss'] / 2**20:.0f}",
         "ingest + one training epoch, each in its own process"),
        ("stream_throughput_ratio", results["stream_throughput_ratio"], "target ≥ 0.9"),
        ("forget_rewrite_fraction", results["forget_rewrite_fraction"], "target ≤ 0.05"),
        ("nn_search_over_faiss_flat", results["nn_search_over_faiss_flat"], "target ≤ 1.1"),
        ("NN search size (against faiss flat)", f"{nn['queries']} queries × {nn['training_images']} training images",
         f"silodiff {nn['silodiff_exact_s']:.1f} s, faiss flat {nn['faiss_flat_s']:.1f} s, "
         f"top-1 agreement {nn['top1_agreement_with_faiss_flat']:.3f}"),
        ("IVF-SQ8 recall@1 (nprobe 8 / 32)",
         f"{ivf['ivf_nprobe8']['recall_at_1']:.3f} / {ivf['ivf_nprobe32']['recall_at_1']:.3f}",
         f"against exact, {ivf['queries']} queries × {ivf['training_images']} training images, nlist "
         f"{ivf['ivf_nprobe8']['nlist']}"),
        ("IVF-SQ8 search / exact search time (nprobe 8 / 32)",
         f"{ivf['ivf_nprobe8']['search_s'] / ivf['exact_s']:.2f} / {ivf['ivf_nprobe32']['search_s'] / ivf['exact_s']:.2f}",
         f"exact {ivf['exact_s']:.1f} s (streamed from the chunks); building the IVF index {ivf['ivf_build_s']:.1f} s"),
    ]
    notes = [
        "Both stores are streamed from their chunks (SILODIFF_IN_MEMORY_MB=0); by default a training set up to "
        "256 MiB of uint8 pixels is loaded into memory instead.",
        f"One training epoch: MLPDenoiser(hidden=256, depth=2), batch 256, CPU, 1 thread; ingest streamed in parts of {PART}.",
        "The NN search reference is a faiss IndexFlatL2 holding every training image as float32 in memory "
        "(its add and search timed, loading the pixels not), on the 4N store.",
        "Queries are fresh images of the same synthetic distribution; its nearest neighbours are nearly "
        "equidistant (high intrinsic dimension), which is hard for an IVF index: recall on real images differs.",
    ]
    if args.quick:
        notes.insert(0, "--quick: tiny sizes, a smoke test only (not a measurement).")
    write_results("data_scale", results, rows, notes)


if __name__ == "__main__":
    main()
