"""External artifacts: pretrained weights that came from outside the store (``--init-from``).

An imported diffusers UNet is saved as an ordinary content-addressed artifact of
kind ``external`` (so resuming and retraining never depend on the user's folder),
with no lineage: the store holds none of the data it was trained on, so nothing
here can forget it.  What the user declared is kept in its ``config.json``
(``info.external``: the source folder, the sha256 of its weight file, its diffusers
config and a provenance text).  A checkpoint that starts from it records
``info.init_from``; one built on a base inherits the base's.  Reading these never
imports torch.
"""

from __future__ import annotations

import json
from typing import Any

EXTERNAL = "external"
NOTE = "external, not forgettable here"


def artifact_info(store, digest: str) -> dict[str, Any]:
    """The free-form ``info`` an artifact was saved with (its ``config.json``, not hash-checked), {} when unreadable."""
    try:
        return json.loads((store.artifacts.path(digest) / "config.json").read_bytes()).get("info", {})
    except (OSError, ValueError):
        return {}


def external_record(store, digest: str) -> dict[str, Any]:
    """What an external artifact declares (hash, path, weights sha256, provenance, the note)."""
    ext = artifact_info(store, digest).get("external", {})
    return {"hash": digest, "path": ext.get("path"), "weights_sha256": ext.get("weights_sha256"),
            "provenance": ext.get("provenance"), "status": NOTE}


def external_ancestors(store, digest: str) -> list[dict[str, Any]]:
    """The external artifacts a checkpoint descends from (directly, or through the base it was built on)."""
    seen, out, todo = set(), [], [digest]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        info = artifact_info(store, current)
        if "external" in info:
            out.append(external_record(store, current))
        todo += [h for h in (info.get("init_from"), info.get("base")) if h]
    return out
