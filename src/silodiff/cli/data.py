"""``silodiff data ingest | list | show``: load a data set into a store and look at its samples."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SilodiffError
from .common import JsonOpt, StoreOpt, _open, cli_errors, emit, sub_app

data_app = sub_app("Ingest and inspect training data.")

AssignOpt = Annotated[str, typer.Option(help="How samples get their source: by-class, random:K or single[:NAME] "
                                             "(folders name their own).")]


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
) -> None:
    """Load a data set and register its samples (pixels stored, ids in the catalog)."""
    from ..data import stream_dataset

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
