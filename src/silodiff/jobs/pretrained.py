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
    from ..nn.diffusers_io import denoiser_from_unet, read_unet, weights_sha256

    if provenance is not None and not provenance.strip():
        raise SilodiffError("--provenance is empty: say where the pretrained weights come from")
    unet, folder = read_unet(path)
    model = denoiser_from_unet(unet, store_image_shape(store), num_classes(store))
    external = {"path": str(folder.resolve()), "weights_sha256": weights_sha256(folder),
                "diffusers_config": {k: v for k, v in dict(unet.config).items()},
                "provenance": provenance or "not declared"}
    name = folder.resolve().name if folder.name != "unet" else folder.resolve().parent.name
    digest = store.save(model, EXTERNAL, name, [], info={"external": external},
                        metrics={"external": True, "weights_sha256": external["weights_sha256"],
                                 "path": external["path"], "provenance": external["provenance"]})
    return {"hash": digest, "model": model.config, **external}


def init_model(store: Store, init_from: str | Path | None, provenance: str | None,
               model: dict | None) -> tuple[dict | None, str | None]:
    """The model config and the external artifact for ``--init-from`` (``(model, None)`` without it)."""
    if init_from is None:
        if provenance is not None:
            raise SilodiffError("--provenance describes --init-from: give both")
        return model, None
    if model is not None:
        raise SilodiffError("--init-from and --unet-config: the architecture comes from the pretrained UNet")
    record = import_unet(store, init_from, provenance)
    return record["model"], record["hash"]
