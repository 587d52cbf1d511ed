"""Export a trained model out of the store, in folders diffusers and peft load without silodiff.

``export_model(store, out, artifact=…|compartment=…|paragon=True|base=True|composition=[…])``:

- ``format="diffusers"`` (a UNet model; a LoRA compartment is merged into its base first):
  a ``DDPMPipeline`` folder (``model_index.json``, ``unet/``, ``scheduler/``) whose UNet is
  the model's *unconditional* ε (the "no label" class folded in: see ``nn.diffusers_io``),
  so ``DDPMPipeline.from_pretrained(out)`` samples; plus ``unet_conditional/``, the
  class-conditional ``UNet2DModel`` itself (``class_labels`` = the store's labels, the
  last class = no label).  An MLP denoiser has no diffusers class: one error line.
- ``format="peft"`` (a LoRA compartment): ``adapter/`` (a peft adapter over the
  base's ``UNet2DModel``) and ``base_unet/`` (that base, class-conditional), so
  ``PeftModel.from_pretrained(UNet2DModel.from_pretrained(out/"base_unet"), out/"adapter")``
  gives the compartment's ε.
- ``composition``: every member (as above, or silodiff's own safetensors + JSON for a
  model diffusers has no class for), the router, and ``composition.json`` (members,
  router, allowed set, gate, label counts); ``load_export(out)`` rebuilds the composed
  model.  diffusers alone has no composed pipeline.

Every export also writes ``silodiff_export.json`` (what was written, from which
artifact).  The folder is written under a temporary name next to ``out`` and renamed
into place; a non-empty ``out`` is refused unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import SilodiffError
from ..jobs.compartments import PARAGON
from ..nn.diffusers_io import conditional_unet, unconditional_unet
from ..nn.lora import LoraDenoiser
from ..sampling import make_scheduler
from ..store import Store
from ..store.artifacts import CONFIG, WEIGHTS, canonical_json, tensors_of
from ..store.lineage import active_base, final_checkpoint, member_label_counts, trained_compartments

FORMATS = ("diffusers", "peft")
MANIFEST, COMPOSITION = "silodiff_export.json", "composition.json"


def _target(store: Store, artifact: str | None, compartment: str | None, paragon: bool, base: bool) -> dict[str, Any]:
    chosen = [x for x in (artifact, compartment, paragon or None, base or None) if x]
    if len(chosen) != 1:
        raise SilodiffError("export exactly one of --artifact, --compartment, --paragon, --base or --composition")
    if artifact:
        return store.catalog.artifact(artifact)
    if compartment:
        if compartment not in trained_compartments(store):
            raise SilodiffError(f"not a trained compartment: {compartment!r}")
        return final_checkpoint(store, "compartment", compartment)
    if paragon:
        return final_checkpoint(store, "paragon", PARAGON)
    return store.catalog.artifact(active_base(store)["hash"])


def _timesteps(store: Store, digest: str) -> int:
    info = json.loads((store.artifacts.path(digest) / CONFIG).read_bytes()).get("info", {})
    return int((info.get("train") or {}).get("num_train_timesteps", 1000))


def _write_diffusers(model: torch.nn.Module, folder: Path, timesteps: int) -> dict[str, Any]:
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=unconditional_unet(model), scheduler=make_scheduler("ddpm", timesteps)).save_pretrained(str(folder))
    written = {"pipeline": ".", "unet": "unet", "scheduler": "scheduler"}
    if model.unet.class_embedding is not None:
        conditional_unet(model).save_pretrained(str(folder / "unet_conditional"))
        written["unet_conditional"] = "unet_conditional"
    return written


def _write_native(model: torch.nn.Module, folder: Path) -> dict[str, Any]:
    """silodiff's own format (safetensors + the config that rebuilds it): for models diffusers has no class for."""
    from safetensors.torch import save_file

    if isinstance(model, LoraDenoiser):
        model = model.merged()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors_of(model), str(folder / WEIGHTS))
    (folder / CONFIG).write_bytes(canonical_json({"model": model.config}))
    return {"silodiff": "."}


def _write_peft(model: torch.nn.Module, folder: Path, what: str) -> dict[str, Any]:
    if not isinstance(model, LoraDenoiser):
        raise SilodiffError(f"{what} is not a LoRA adapter: --format peft needs a compartment trained with "
                            "--from-base --adapter lora (use --format diffusers)")
    base = model.base_model()
    if getattr(base, "unet", None) is None:
        raise SilodiffError(f"{what} adapts an MLP base: diffusers has no class for it, so there is no peft export")
    conditional_unet(base).save_pretrained(str(folder / "base_unet"))
    model.export_peft(folder / "adapter", unet_only=True)
    return {"adapter": "adapter", "base_unet": "base_unet"}


def _manifest(row: dict[str, Any], model: torch.nn.Module, fmt: str, written: dict[str, Any]) -> dict[str, Any]:
    return {"format": fmt, "artifact": row["hash"], "kind": row["kind"], "name": row["name"], "slice": row["slice"],
            "model": model.config.get("kind"), "merged_lora": isinstance(model, LoraDenoiser) and fmt == "diffusers",
            "image_shape": list(model.image_shape), "num_classes": model.num_classes, "null_label": model.num_classes,
            "folders": written}


class _Staging:
    """A temporary folder beside ``out``, renamed onto it when everything is written (removed on any error)."""

    def __init__(self, out: Path, force: bool):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            if not force:
                raise SilodiffError(f"{self.out} exists and is not empty: choose another --out or pass --force")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.force = force

    def __enter__(self) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        return self.tmp

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old.{os.getpid()}")
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old is not None and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()


def export_model(
    store: Store, out: str | Path, *, artifact: str | None = None, compartment: str | None = None,
    paragon: bool = False, base: bool = False, composition: Sequence[str] | bool | None = None,
    format: str = "diffusers", router: str = "classifier", gate: float = 0.0, force: bool = False,
) -> dict[str, Any]:
    """Write one model (or a composition) to ``out``; returns the manifest written beside it."""
    if format not in FORMATS:
        raise SilodiffError(f"unknown export format {format!r}: use {' or '.join(FORMATS)}")
    if composition is not None and composition is not False:
        if artifact or compartment or paragon or base:
            raise SilodiffError("export exactly one of --artifact, --compartment, --paragon, --base or --composition")
        return _export_composition(store, Path(out), None if composition is True else list(composition),
                                   format, router, gate, force)
    row = _target(store, artifact, compartment, paragon, base)
    model = store.load(row["hash"])
    what = f"{row['kind']} {row['name']} ({row['hash'][:12]})"
    with _Staging(Path(out), force) as tmp:
        if format == "peft":
            written = _write_peft(model, tmp, what)
        else:
            plain = model.merged() if isinstance(model, LoraDenoiser) else model
            if getattr(plain, "unet", None) is None:
                kind = plain.config.get("kind")
                is_a = "an MLP denoiser" if kind == "mlp-denoiser" else f"a {kind} model"
                raise SilodiffError(f"{what} is {is_a}: diffusers has no model class for it, only UNet denoisers "
                                    "export (train with --unet-config; a composition export keeps it in silodiff's "
                                    "own format)")
            written = _write_diffusers(plain, tmp, _timesteps(store, row["hash"]))
        manifest = _manifest(row, model, format, written)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return {**manifest, "out": str(out)}


def _export_composition(store: Store, out: Path, allowed: list[str] | None, fmt: str, router: str, gate: float,
                        force: bool) -> dict[str, Any]:
    from ..composition import compose

    if fmt != "diffusers":
        raise SilodiffError("a composition exports with --format diffusers (its LoRA members are merged)")
    composed = compose(store, allowed, router=router, gate=gate, share=False)
    hashes = dict(composed.artifact_hashes)
    with _Staging(out, force) as tmp:
        members = {}
        for name, member in zip(composed.names, composed.members):
            row = store.catalog.artifact(hashes[name])
            folder = tmp / "members" / name
            plain = member.merged() if isinstance(member, LoraDenoiser) else member
            if getattr(plain, "unet", None) is not None:
                written = _write_diffusers(plain, folder, _timesteps(store, row["hash"]))
                fmt_member = "diffusers"
            else:
                written = _write_native(plain, folder)
                fmt_member = "silodiff"
            members[name] = {"artifact": row["hash"], "folder": f"members/{name}", "format": fmt_member,
                             "files": written}
        router_entry: dict[str, Any] = {"kind": router}
        if router == "classifier":
            classifier = composed.router.classifier
            _write_native(classifier, tmp / "router")
            router_entry.update(artifact=hashes["router"], folder="router", columns=composed.router.columns.tolist(),
                                compartments=classifier.info.get("compartments", []))
        manifest = {
            "format": "silodiff-composition", "allowed": composed.names, "members": members, "router": router_entry,
            "gate": gate, "num_classes": composed.num_classes, "image_shape": list(composed.image_shape),
            "label_counts": _label_counts(store, composed.names),
            "note": "diffusers has no composed pipeline: load this folder with silodiff.load_export",
        }
        (tmp / COMPOSITION).write_text(json.dumps(manifest, indent=2))
        (tmp / MANIFEST).write_text(json.dumps({"format": "composition", "file": COMPOSITION,
                                                "allowed": composed.names}, indent=2))
    return {**manifest, "out": str(out)}


def _label_counts(store: Store, names: list[str]) -> list[list[int]]:
    n = store.num_classes or 0
    rows = []
    for name in names:
        counts = member_label_counts(store, name)
        rows.append([int(counts.get(y, 0)) for y in range(n)])
    return rows


def load_export(path: str | Path, device: str | torch.device | None = None) -> torch.nn.Module:
    """The model an export folder holds, as a silodiff denoiser: one model, or the composed model."""
    from diffusers import UNet2DModel

    from ..composition import ComposedDenoiser
    from ..composition.routers import ClassifierRouter, TrajectoryFilter, UniformRouter
    from ..nn.diffusers_io import denoiser_from_unet

    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        raise SilodiffError(f"{path} is not a silodiff export (no readable {MANIFEST})") from None

    def one(folder: Path, spec: dict[str, Any], shape: list[int], classes: int) -> torch.nn.Module:
        if spec.get("format") == "silodiff":  # a member diffusers has no class for
            return _read_native(folder)
        sub = "unet_conditional" if (folder / "unet_conditional").is_dir() else "unet"
        unet = UNet2DModel.from_pretrained(str(folder / sub), local_files_only=True)
        return denoiser_from_unet(unet, tuple(shape), classes)

    if manifest.get("format") == "composition":
        comp = json.loads((path / COMPOSITION).read_text())
        members = {n: one(path / m["folder"], m, comp["image_shape"], comp["num_classes"])
                   for n, m in comp["members"].items()}
        r = comp["router"]
        if r["kind"] == "classifier":
            chosen = ClassifierRouter(_read_native(path / r["folder"]), r["columns"])
        else:
            chosen = TrajectoryFilter() if r["kind"] == "trajectory" else UniformRouter()
        model = ComposedDenoiser(members, chosen, torch.tensor(comp["label_counts"], dtype=torch.float32),
                                 gate=comp["gate"])
    elif manifest.get("format") == "diffusers":
        model = one(path, manifest, manifest["image_shape"], manifest["num_classes"])
    else:
        raise SilodiffError(f"{path}: a {manifest.get('format')!r} export is loaded with peft, not load_export")
    if device is not None:
        from ..devices import resolve_device

        model = model.to(resolve_device(device))
    return model.eval()


def _read_native(folder: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    from ..config import build

    model = build(json.loads((folder / CONFIG).read_text())["model"])
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.eval()
