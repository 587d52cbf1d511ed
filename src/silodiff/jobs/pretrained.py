"""``--init-from DIR``: start a model from a pretrained diffusers ``UNet2DModel`` (a local folder, never a download).

``import_unet(store, path, provenance)`` checks the folder (a diffusers UNet, or a
pipeline folder holding ``unet/``), checks that it fits the store's images and
classes (``nn.diffusers_io.check_fits``), and only then registers it as an artifact
of kind ``external`` (``store.external``): the weights as a ``unet-denoiser``, the
sha256 of the folder's weight file, its diffusers config, its path and the
provenance text the user declares.  Jobs started from it record ``init_from`` and
load those weights before their first slice; their lineage is still only the
store's samples they saw.  Bad input registers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SilodiffError
from ..store import Store
from ..store.external import EXTERNAL
from ..store.lineage import num_classes, store_image_shape


@dataclass(frozen=True)
class Pretrained:
    """A checked ``--init-from`` folder, not registered yet: the diffusers UNet, its folder, the silodiff denoiser
    built from it and the provenance declared for it."""

    unet: Any
    folder: Path
    model: Any
    provenance: str | None


def import_unet(store: Store, path: str | Path, provenance: str | None = None) -> dict[str, Any]:
    """Register the diffusers UNet at ``path`` as an external artifact; returns {hash, model, ...}."""
    return _register(store, _read(store, path, provenance))


def _register(store: Store, pretrained: Pretrained) -> dict[str, Any]:
    from ..nn.diffusers_io import weights_sha256

    unet, folder, model = pretrained.unet, pretrained.folder, pretrained.model
    external = {"path": str(folder.resolve()), "weights_sha256": weights_sha256(folder),
                "diffusers_config": {k: v for k, v in dict(unet.config).items()},
                "provenance": pretrained.provenance or "not declared"}
    name = folder.resolve().name if folder.name != "unet" else folder.resolve().parent.name
    digest = store.save(model, EXTERNAL, name, [], info={"external": external},
                        metrics={"external": True, "weights_sha256": external["weights_sha256"],
                                 "path": external["path"], "provenance": external["provenance"]})
    return {"hash": digest, "model": model.config, **external}


def _read(store: Store, path: str | Path, provenance: str | None) -> Pretrained:
    """The folder read and checked against the store; nothing registered."""
    from ..nn.diffusers_io import denoiser_from_unet, read_unet

    if provenance is not None and not provenance.strip():
        raise SilodiffError("--provenance is empty: say where the pretrained weights come from")
    unet, folder = read_unet(path)
    return Pretrained(unet, folder, denoiser_from_unet(unet, store_image_shape(store), num_classes(store)), provenance)


def check_init(store: Store, init_from: str | Path | None, provenance: str | None,
               model: dict | None) -> Pretrained | None:
    """Refuse bad ``--init-from`` input (the options, the folder, whether it fits the store) without registering
    it; the folder as read (None without ``init_from``), for ``init_model`` to register without reading it again."""
    _check_options(init_from, provenance, model)
    return None if init_from is None else _read(store, init_from, provenance)


def init_model(store: Store, init_from: str | Path | None, provenance: str | None, model: dict | None,
               checked: Pretrained | None = None) -> tuple[dict | None, str | None]:
    """The model config and the external artifact for ``--init-from`` (``(model, None)`` without it);
    ``checked``: what ``check_init`` already read for the same arguments."""
    checked = checked or check_init(store, init_from, provenance, model)
    if checked is None:
        return model, None
    record = _register(store, checked)
    return record["model"], record["hash"]


def _check_options(init_from: str | Path | None, provenance: str | None, model: dict | None) -> None:
    if init_from is None and provenance is not None:
        raise SilodiffError("--provenance describes --init-from: give both")
    if init_from is not None and model is not None:
        raise SilodiffError("--init-from and --unet-config: the architecture comes from the pretrained UNet")
