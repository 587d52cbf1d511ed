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

from pathlib import Path
from typing import Any

from ..errors import SilodiffError
from ..store import Store
from ..store.external import EXTERNAL
from ..store.lineage import num_classes, store_image_shape


def import_unet(store: Store, path: str | Path, provenance: str | None = None) -> dict[str, Any]:
    """Register the diffusers UNet at ``path`` as an external artifact; returns {hash, model, ...}."""
    from ..nn.diffusers_io import weights_sha256

    unet, folder, model = _read(store, path, provenance)
    external = {"path": str(folder.resolve()), "weights_sha256": weights_sha256(folder),
                "diffusers_config": {k: v for k, v in dict(unet.config).items()},
                "provenance": provenance or "not declared"}
    name = folder.resolve().name if folder.name != "unet" else folder.resolve().parent.name
    digest = store.save(model, EXTERNAL, name, [], info={"external": external},
                        metrics={"external": True, "weights_sha256": external["weights_sha256"],
                                 "path": external["path"], "provenance": external["provenance"]})
    return {"hash": digest, "model": model.config, **external}


def _read(store: Store, path: str | Path, provenance: str | None):
    """(the diffusers UNet, its folder, the silodiff denoiser built from it): checked, nothing registered."""
    from ..nn.diffusers_io import denoiser_from_unet, read_unet

    if provenance is not None and not provenance.strip():
        raise SilodiffError("--provenance is empty: say where the pretrained weights come from")
    unet, folder = read_unet(path)
    return unet, folder, denoiser_from_unet(unet, store_image_shape(store), num_classes(store))


def check_init(store: Store, init_from: str | Path | None, provenance: str | None, model: dict | None) -> None:
    """Refuse bad ``--init-from`` input (the options, the folder, whether it fits the store) without registering it."""
    _check_options(init_from, provenance, model)
    if init_from is not None:
        _read(store, init_from, provenance)


def init_model(store: Store, init_from: str | Path | None, provenance: str | None,
               model: dict | None) -> tuple[dict | None, str | None]:
    """The model config and the external artifact for ``--init-from`` (``(model, None)`` without it)."""
    _check_options(init_from, provenance, model)
    if init_from is None:
        return model, None
    record = import_unet(store, init_from, provenance)
    return record["model"], record["hash"]


def _check_options(init_from: str | Path | None, provenance: str | None, model: dict | None) -> None:
    if init_from is None and provenance is not None:
        raise SilodiffError("--provenance describes --init-from: give both")
    if init_from is not None and model is not None:
        raise SilodiffError("--init-from and --unet-config: the architecture comes from the pretrained UNet")
