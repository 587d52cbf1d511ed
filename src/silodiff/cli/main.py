"""``silodiff``: one sub-command per noun; each command calls one library function.

The conventions (list options, ``--json``, training flags, exit codes) are in ``cli/common.py``.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SilodiffError
from .common import (
    DEBUG, DEFAULT_N, EXIT_BAD_INPUT, EXIT_VERIFY_FAILED, BatchSizeOpt, EpochsOpt, JsonOpt, LrOpt, NOpt, SeedOpt,
    StoreOpt, _names, _open, app, catalog_app, cli_errors, data_app, deprecated, emit, train_app,
    CombineOpt, CompileOpt, DeviceOpt, GradAccumOpt, HflipOpt, InitFromOpt, PatienceOpt, PrecisionOpt, ProvenanceOpt, UnetConfigOpt,
    ValFractionOpt, WorkersOpt, device_arg,
)

AssignOpt = Annotated[str, typer.Option(help="How samples get their source: by-class, random:K or single[:NAME] "
                                             "(folders name their own).")]
OldSourcesOpt = Annotated[str | None, typer.Option("--sources", hidden=True, help="Deprecated spelling of --assign.")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", envvar="SILODIFF_DEBUG",
                                               help="Show the traceback of an unexpected error.")] = False) -> None:
    """silodiff: training-data protection for image diffusion models."""
    DEBUG["on"] = debug


# ----------------------------------------------------------------------------- data
@data_app.command("ingest")
@cli_errors
def data_ingest(
    store: StoreOpt,
    dataset: Annotated[str, typer.Option(help="digits, fashion-mnist[:test], idx or folder.")] = "digits",
    assign: AssignOpt = "random:4",
    path: Annotated[str | None, typer.Option(help="IMAGES,LABELS for idx; ROOT for folder; the IDX folder for fashion-mnist.")] = None,
    limit: Annotated[int | None, typer.Option(help="Keep only the first N images.")] = None,
    readmit_forgotten: Annotated[bool, typer.Option(
        help="Store forgotten samples again (new consent, logged as an event); by default they are skipped.")] = False,
    as_json: JsonOpt = False,
    old_sources: OldSourcesOpt = None,
) -> None:
    """Load a data set and register its samples (pixels stored, ids in the catalog)."""
    from ..data import stream_dataset

    if old_sources is not None:
        deprecated("`data ingest --sources`", "--assign (--sources names rights on `keys create`)")
        assign = old_sources
    # a folder streams in chunk-sized parts (with a progress bar); the other data sets load at once
    parts = stream_dataset(dataset, sources=assign, limit=limit, path=path, progress=not as_json)
    first = next(parts, None)  # the first part read before the store is created (bad input leaves no store)
    data = itertools.chain([first] if first is not None else [], parts)
    st = _open(store, create=True)
    report = st.ingest_report(data, dataset, readmit_forgotten=readmit_forgotten)
    added = report["added"]
    emit({"dataset": dataset, **report, "sources": st.catalog.sources()}, as_json) if as_json else \
        emit(st.catalog.sources(), False, ["name", "n"], title=f"{added} new samples from {dataset}")
    for key, what in (("skipped_forgotten", "forgotten sample(s) skipped (--readmit-forgotten stores them again)"),
                      ("readmitted", "forgotten sample(s) re-admitted"),
                      ("held_elsewhere", "held by another source, not stored again")):
        if report[key] and not as_json:
            typer.echo(f"{report[key]} {what}")


@data_app.command("list")
@cli_errors
def data_list(store: StoreOpt, source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
              limit: Annotated[int | None, typer.Option(help="At most N samples.")] = None, as_json: JsonOpt = False) -> None:
    """Live samples: id, label and source (`data show ID` for one sample's details)."""
    rows = _open(store).catalog.sample_rows(source)
    rows = [{k: r[k] for k in ("sample_id", "label", "source")} for r in rows][:limit]
    emit(rows, as_json)


@data_app.command("show")
@cli_errors
def data_show(
    store: StoreOpt, sample_id: Annotated[str, typer.Argument(help="A sample id.")],
    png: Annotated[Path | None, typer.Option(help="Also write the image to this PNG file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """One sample: its catalog row and the active artifacts trained on it (optionally its image as a PNG)."""
    st = _open(store)
    row = st.catalog.sample(sample_id)
    if row is None:
        raise SilodiffError(f"unknown sample id {sample_id!r}")
    saw = st.catalog.artifacts_that_saw([sample_id], active=True)
    info = {**row, "artifacts": [{k: a[k] for k in ("hash", "kind", "name", "slice")} for a in saw]}
    if png is not None:
        from PIL import Image

        if row["forgotten_at"] is not None:
            raise SilodiffError(f"sample {sample_id} was forgotten: its pixels are gone")
        x = st.dataset([sample_id]).pixels[0]  # (c, h, w) uint8
        Image.fromarray(x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()).save(png)
        info["png"] = str(png)
    emit(info, as_json)


# ----------------------------------------------------------------------------- train
@train_app.command("compartments")
@cli_errors
def train_compartments_cmd(
    store: StoreOpt,
    plan: Annotated[str, typer.Option(help="Compartments by 'source' or 'shards:K'.")] = "source",
    slices: Annotated[int, typer.Option(help="SISA slices per compartment (checkpoint after each).")] = 2,
    epochs: EpochsOpt = 200,
    batch_size: BatchSizeOpt = 64,
    lr: LrOpt = 2e-3,
    backend: Annotated[str, typer.Option(help="serial, process or ray.")] = "serial",
    ray_address: Annotated[str | None, typer.Option(help="Ray: join this cluster ('auto', host:port, ray://host:10001; "
                                                         "default: start a local one). Workers open the same store path.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="Ray: CPUs per job (default 1).")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="Ray: GPUs per job, fractions share a GPU (default 0).")] = None,
    max_retries: Annotated[int | None, typer.Option(help="Ray: re-runs of a failed job, each resuming after its last slice (default 2).")] = None,
    ray_timeout: Annotated[float | None, typer.Option(help="Ray: seconds to wait for all jobs before cancelling the rest.")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Compartments to train, comma-separated (default: all).")] = None,
    replan: Annotated[bool, typer.Option(help="Re-plan compartments even if a plan exists.")] = False,
    agc: Annotated[bool, typer.Option(help="Anti-gradient control hook (memorisation defence, IET-AGC paper).")] = False,
    agc_lam: Annotated[float, typer.Option(help="AGC λ: skip a sample when loss·λ < the bank's loss at its t.")] = 2.0,
    from_base: Annotated[bool, typer.Option(help="Start each compartment from the base model (`train base`).")] = False,
    adapter: Annotated[str, typer.Option(help="With --from-base: none (full fine-tune) or lora (peft adapters, base frozen).")] = "none",
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 4,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA α (scale α/r; default r).")] = None,
    target_modules: Annotated[list[str] | None, typer.Option(help="LoRA: regexes of layer names, comma-separated (default: every linear, conv and embedding layer).")] = None,
    replay: Annotated[float, typer.Option(help="With --from-base: share of each batch drawn from the base's samples, "
                                                "in [0, 1) (keeps what the base knows; same steps).")] = 0.0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    unet_config: UnetConfigOpt = None,
    grad_accum: GradAccumOpt = 1,
    num_workers: WorkersOpt = 0,
    hflip: HflipOpt = False,
    compile_: CompileOpt = False,
    val_fraction: ValFractionOpt = None,
    patience: PatienceOpt = 8,
    init_from: InitFromOpt = None,
    provenance: ProvenanceOpt = None,
) -> None:
    """Train one model per compartment, each on its own samples only (from scratch, or from the base)."""
    from ..jobs import plan_compartments, train_compartments
    from ..jobs.compartments import model_config
    from ..training import TrainConfig

    ray = {k: v for k, v in {"address": ray_address, "num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries,
                             "timeout": ray_timeout}.items() if v is not None}
    if ray and backend != "ray":
        raise SilodiffError("--ray-address, --num-cpus, --num-gpus, --max-retries and --ray-timeout need --backend ray")
    lora = {"rank": rank, "alpha": lora_alpha, "targets": _names(target_modules, "--target-modules")} if adapter == "lora" else None
    if not from_base and (adapter != "none" or rank != 4 or lora_alpha is not None or target_modules or replay):
        raise SilodiffError("--adapter, --rank, --lora-alpha, --target-modules and --replay need --from-base")
    if from_base and unet_config:
        raise SilodiffError("--unet-config and --from-base: a compartment on a base has the base's architecture")
    if init_from is not None and (from_base or unet_config):
        raise SilodiffError("--init-from gives the architecture and the starting weights: drop --from-base / --unet-config")
    if provenance is not None and init_from is None:
        raise SilodiffError("--provenance describes --init-from: give both")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,
                         grad_accum=grad_accum, num_workers=num_workers, hflip=hflip, compile=compile_,
                         val_fraction=val_fraction, patience=patience, replay=replay)
    if not num_gpus:  # with --num-gpus the device is checked in each Ray task, on the GPU Ray assigns it
        config.check()
    st = _open(store)
    model = model_config(st, unet_config) if unet_config else None  # checked before anything is planned
    if from_base:  # refuse bad adapter options (and a missing base) before anything is planned or trained
        from ..jobs.base import active_base, from_base_model

        from_base_model(active_base(st), adapter, **(lora or {}))
    if init_from is not None:  # refuse a bad folder before anything is planned
        from ..jobs.compartments import num_classes, store_image_shape
        from ..nn.diffusers_io import check_fits, read_unet

        check_fits(read_unet(init_from)[0], store_image_shape(st), num_classes(st))
    if replan or not st.catalog.compartments():
        plan_compartments(st, by=plan, slices=slices, seed=seed)
    results = train_compartments(st, _names(only, "--only"), config=config, model=model,
                                 backend=backend, hooks=_agc(agc, agc_lam), from_base=from_base, adapter=adapter,
                                 lora=lora, init_from=init_from, provenance=provenance, **ray)
    rows = [{"compartment": r.name, "checkpoints": len(r.artifacts), "final": r.artifacts[-1] if r.artifacts else None,
             "steps": r.steps, "seconds": round(r.seconds, 2), "resumed_from_slice": r.resumed_from} for r in results]
    emit(rows, as_json)


@train_app.command("paragon")
@cli_errors
def train_paragon_cmd(
    store: StoreOpt, slices: Annotated[int, typer.Option(help="Slices (same schedule as compartments).")] = 2,
    epochs: EpochsOpt = 200, batch_size: BatchSizeOpt = 64, lr: LrOpt = 2e-3, seed: SeedOpt = 0,
    agc: Annotated[bool, typer.Option(help="Anti-gradient control hook (memorisation defence).")] = False,
    agc_lam: Annotated[float, typer.Option(help="AGC λ.")] = 2.0,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    unet_config: UnetConfigOpt = None,
    grad_accum: GradAccumOpt = 1,
    num_workers: WorkersOpt = 0,
    hflip: HflipOpt = False,
    compile_: CompileOpt = False,
    val_fraction: ValFractionOpt = None,
    patience: PatienceOpt = 8,
    data_parallel: Annotated[int, typer.Option("--data-parallel", help="Train in N processes, one per GPU "
                                               "(gloo processes without GPUs), gradients summed across them.")] = 1,
    init_from: InitFromOpt = None,
    provenance: ProvenanceOpt = None,
) -> None:
    """Train the monolithic paragon on all data (the baseline)."""
    from ..jobs import train_paragon
    from ..jobs.compartments import model_config
    from ..training import TrainConfig

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,
                         grad_accum=grad_accum, num_workers=num_workers, hflip=hflip, compile=compile_,
                         val_fraction=val_fraction, patience=patience).check()
    st = _open(store)
    model = model_config(st, unet_config) if unet_config else None
    r = train_paragon(st, config=config, model=model, slices=slices, seed=seed, hooks=_agc(agc, agc_lam),
                      data_parallel=data_parallel, init_from=init_from, provenance=provenance)
    emit({"paragon": r.artifacts[-1] if r.artifacts else None, "steps": r.steps, "seconds": round(r.seconds, 2)}, as_json)


def _agc(on: bool, lam: float) -> list[dict] | None:
    from ..defences.agc import agc_hooks

    return agc_hooks(lam) if on else None


@train_app.command("router")
@cli_errors
def train_router_cmd(store: StoreOpt, epochs: EpochsOpt = 100, batch_size: BatchSizeOpt = 64, lr: LrOpt = 2e-3,
                     seed: SeedOpt = 0, as_json: JsonOpt = False,
                     device: DeviceOpt = "auto",
                     heads: Annotated[bool, typer.Option(
                         "--heads", help="one head per compartment against the public data: a forget retrains "
                                         "only the heads that saw it")] = False,
                     with_base: Annotated[bool, typer.Option(
                         "--with-base", help="the base is one more class (its public data the heads' reference)")]
                     = False) -> None:
    """Train the router over all trained compartments: a shard classifier, or one head per compartment."""
    from ..composition import train_router
    from ..training import TrainConfig

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device_arg(device))
    emit({"router": train_router(_open(store), config=config, heads=heads, with_base=with_base)}, as_json)


# ----------------------------------------------------------------------------- sample
@app.command("sample")
@cli_errors
def sample_cmd(
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="Output folder for samples.png and samples.npz.")] = Path("samples"),
    model: Annotated[str, typer.Option(help="composed, paragon, a compartment name or an artifact hash.")] = "composed",
    allowed: Annotated[list[str] | None, typer.Option(help="Compartments to compose, comma-separated (default: all).")] = None,
    router: Annotated[str, typer.Option(help="classifier, trajectory or uniform.")] = "classifier",
    gate: Annotated[float, typer.Option(help="Sparse gating threshold on the weights.")] = 0.0,
    n: NOpt = DEFAULT_N,
    labels: Annotated[str, typer.Option(help="'all' (balanced), 'none' (unconditional) or comma-separated labels.")] = "all",
    sampler: Annotated[str, typer.Option(help="ddpm or ddim.")] = "ddpm",
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 100,
    eta: Annotated[float, typer.Option(help="DDIM eta (0 = deterministic).")] = 0.0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    cpsample: Annotated[bool, typer.Option(help="Classifier-protected sampling (needs protection classifiers).")] = False,
    alpha: Annotated[float, typer.Option(help="CPSample: guide when max(p, 1-p) > 1 - alpha.")] = 0.25,
    scale: Annotated[float, typer.Option(help="CPSample guidance scale s.")] = 1000.0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    with_base: Annotated[bool, typer.Option(
        "--with-base", help="The base model is one more member of the composition, weighted by the router.")] = False,
    combine: CombineOpt = "mixture",
) -> None:
    """Generate images: a PNG grid and an .npz (uint8 images, labels, per-image weights)."""
    from ..sample_files import run_sample

    device = device_arg(device, precision)
    emit(run_sample(_open(store), out, model=model, allowed=_names(allowed, "--allowed"), router=router, gate=gate, n=n, labels=labels,
                    sampler=sampler, steps=steps, eta=eta, seed=seed,
                    cpsample={"alpha": alpha, "scale": scale} if cpsample else None, device=device, precision=precision,
                    with_base=with_base, combine=combine), as_json)


@app.command("quality")
@cli_errors
def quality_cmd(
    store: StoreOpt,
    model: Annotated[str, typer.Option(help="composed, paragon, a compartment or a hash.")] = "composed",
    router: Annotated[str, typer.Option(help="classifier, trajectory or uniform.")] = "classifier",
    gate: Annotated[float, typer.Option(help="Sparse gating threshold.")] = 0.0,
    n: Annotated[int, typer.Option(help="Generated images.")] = 1000,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 100,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    combine: CombineOpt = "mixture",
) -> None:
    """FLD and class accuracy of a model's class-conditional samples against the store's data."""
    from ..audit.quality import evaluate_quality

    device = device_arg(device)
    emit(evaluate_quality(_open(store), model, router=router, gate=gate, n=n, steps=steps, seed=seed, device=device,
                          combine=combine), as_json)


# ----------------------------------------------------------------------------- catalog
@catalog_app.command("sources")
@cli_errors
def catalog_sources(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Sources and their live sample counts."""
    emit(_open(store).catalog.sources(), as_json)


@catalog_app.command("compartments")
@cli_errors
def catalog_compartments(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Compartments, their slices and status."""
    emit(_open(store).catalog.compartments(), as_json)


@catalog_app.command("artifacts")
@cli_errors
def catalog_artifacts(
    store: StoreOpt, kind: Annotated[str | None, typer.Option(help="Filter by kind.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include inactive artifacts.")] = False, as_json: JsonOpt = False,
) -> None:
    """Artifacts (active only unless --all), with the bytes a sampler reads (a LoRA checkpoint: its adapter only)."""
    from ..store.artifacts import WEIGHTS

    st = _open(store)
    rows = st.catalog.artifacts(kind, active=None if all_ else True)
    weights = {r["hash"]: st.artifacts.path(r["hash"]) / WEIGHTS for r in rows}
    rows = [{**{k: r[k] for k in ("hash", "kind", "name", "slice", "active", "lineage_hash", "created_at")},
             "bytes": weights[r["hash"]].stat().st_size if weights[r["hash"]].exists() else None} for r in rows]
    emit(rows, as_json)


@catalog_app.command("lineage")
@cli_errors
def catalog_lineage(store: StoreOpt, artifact: Annotated[str, typer.Argument(help="Artifact hash or prefix.")], as_json: JsonOpt = False) -> None:
    """Every sample id an artifact was trained on, and the external pretrained weights it started from."""
    from ..store.external import external_ancestors

    st = _open(store)
    ids = st.catalog.lineage(artifact)
    digest = st.catalog.artifact(artifact)["hash"]
    external = external_ancestors(st, digest)
    if as_json:
        emit({"artifact": digest, "n": len(ids), "sample_ids": ids, "external": external}, True)
        return
    if ids:
        typer.echo("\n".join(ids))
    for e in external:  # pretrained weights it started from: their data are not in this store
        typer.echo(f"external {e['hash']} {e['path']} (provenance: {e['provenance']}): {e['status']}")


@catalog_app.command("saw")
@cli_errors
def catalog_saw(store: StoreOpt, sample_id: Annotated[str, typer.Argument(help="A sample id.")],
                all_: Annotated[bool, typer.Option("--all", help="Include inactive artifacts.")] = False, as_json: JsonOpt = False) -> None:
    """Which artifacts were trained on a sample."""
    st = _open(store)
    if st.catalog.sample(sample_id) is None:
        raise SilodiffError(f"unknown sample id {sample_id!r}")
    rows = st.catalog.artifacts_that_saw([sample_id], active=None if all_ else True)
    emit([{k: r[k] for k in ("hash", "kind", "name", "slice", "active")} for r in rows], as_json)


@catalog_app.command("events")
@cli_errors
def catalog_events(store: StoreOpt, limit: Annotated[int, typer.Option(help="Most recent N.")] = 20, as_json: JsonOpt = False) -> None:
    """The append-only event log (most recent last)."""
    rows = _open(store).catalog.events(limit=limit)
    if as_json:  # full payloads, as JSON objects
        emit([{"seq": r["seq"], "ts": r["ts"], "kind": r["kind"], "payload": r["payload"]} for r in rows], True)
        return
    emit([{"seq": r["seq"], "ts": r["ts"], "kind": r["kind"], "payload": json.dumps(r["payload"])[:100]} for r in rows], False)


@catalog_app.command("verify")
@cli_errors
def catalog_verify(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Re-check the event log's hash chain."""
    ok, head = _open(store).catalog.verify_chain()
    emit({"ok": ok, "head": head}, as_json)
    if not ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


# ----------------------------------------------------------------------------- demo
@app.command("demo")
@cli_errors
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the store and the report.")] = Path("demo-out"),
    quick: Annotated[bool, typer.Option(help="A smaller, faster run (for tests).")] = False,
    full: Annotated[bool, typer.Option(help="The longer run: every router, the soup, three defences, three audits, two "
                                            "forgets, longer schedules.")] = False,
    ray: Annotated[bool, typer.Option(help="Also replay a compartment on a local Ray cluster.")] = False,
    skip: Annotated[list[str] | None, typer.Option(help="Feature steps to leave out, comma-separated.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job end to end on the embedded digits data; writes a Markdown + PNG report."""
    from ..demo import demo_plan, run_demo

    report = run_demo(out, plan=demo_plan(quick=quick, full=full), extra=("ray",) if ray else (),
                      skip=tuple(_names(skip, "--skip") or ()))
    emit({"report": str(report)}, True) if as_json else typer.echo(f"report: {report}")


# Feature commands live in their own modules (cli/<noun>.py); importing one registers it on `app`.
from . import features  # noqa: E402,F401


def _old_train_spelling(argv: list[str]) -> list[str]:
    """``train --method M …`` / ``train --protection-classifier …``: the spellings of the last release.

    They still work for this one release (with a note on stderr); the sub-command is ``train M``."""
    if len(argv) < 2 or argv[0] != "train":
        return argv
    rest = list(argv[1:])
    if "--protection-classifier" in rest:
        rest.remove("--protection-classifier")
        deprecated("`train --protection-classifier`", "`train protection-classifier`")
        return ["train", "protection-classifier", *rest]
    for i, a in enumerate(rest):
        if a in ("--method", "-m") and i + 1 < len(rest):
            method = rest[i + 1]
            del rest[i:i + 2]
        elif a.startswith("--method="):
            method = a.partition("=")[2]
            del rest[i]
        else:
            continue
        deprecated(f"`train --method {method}`", f"`train {'iet-agc --no-agc' if method == 'iet' else method}`")
        return ["train", *(["iet-agc", "--no-agc"] if method == "iet" else [method]), *rest]
    return argv


def main(argv: list[str] | None = None) -> None:
    args = _old_train_spelling(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args, prog_name="silodiff")
    except SilodiffError as exc:  # defensive: commands already convert these
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
