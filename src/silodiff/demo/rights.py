"""The service step of ``silodiff demo``: two customers with different rights, served over real HTTP.

1. create two API keys, each with rights over half of the store's sources;
2. start the real server (uvicorn on 127.0.0.1, a free port, in a thread);
3. per key: list the compartments, generate a few images, and ask for a
   compartment outside the rights (→ 403) — all over HTTP;
4. stop the server; return a Markdown section and write its pictures to ``out``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..store import Store
from .plan import DemoPlan


def _log(msg: str) -> None:
    print(f"[demo] service: {msg}", flush=True)


def _unique(store: Store, name: str) -> str:
    from ..service.keys import list_keys

    taken = {k["name"] for k in list_keys(store)}
    k, candidate = 1, name
    while candidate in taken:
        k += 1
        candidate = f"{name}-{k}"
    return candidate


def _decode(images: list[dict[str, Any]]) -> torch.Tensor:
    """Base64 PNGs → (n, c, h, w) in [-1, 1]."""
    from PIL import Image

    arrays = [np.asarray(Image.open(io.BytesIO(base64.b64decode(im["png"])))) for im in images]
    x = torch.from_numpy(np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])).float()
    return x / 127.5 - 1


def demo_step(store: Store, out: Path, plan: DemoPlan) -> str:
    """Serve two keys with different rights over HTTP and show each gets only its compartments."""
    import httpx

    from ..service.app import create_app
    from ..service.keys import create_key
    from ..service.server import background_server
    from ..service.settings import Settings
    from ..viz import save_grid, save_weight_bars

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = store.source_names()
    if len(sources) < 2:
        raise ValueError("the service demo needs a store with at least two sources")
    halves = {"customer-a": sources[: len(sources) // 2], "customer-b": sources[len(sources) // 2 :]}
    keys = {}
    for name, rights in halves.items():
        record, keys[name] = create_key(store, _unique(store, f"demo-{name}"), rights)
        _log(f"key {record['name']} may use {', '.join(rights)}")
    steps, n = plan.rights.steps, plan.rights.n
    rows, pictures = [], []
    with background_server(create_app(Settings(store=store.root), store)) as base:
        _log(f"server up at {base}")
        with httpx.Client(base_url=base, timeout=300) as http:
            for name, key in keys.items():
                h = {"X-API-Key": key}
                listed = [c["name"] for c in http.get("/v1/compartments", headers=h).json()["compartments"]]
                r = http.post("/v1/generate", headers=h, json={"n": n, "steps": steps, "seed": 0})
                r.raise_for_status()
                body = r.json()
                other = next(k for k in keys if k != name)
                forbidden = [s for s in halves[other] if s in {c["name"] for c in store.catalog.compartments()}][:1]
                denied = (
                    http.post("/v1/generate", headers=h, json={"n": 1, "steps": 2, "compartments": forbidden})
                    if forbidden
                    else None
                )
                grid = save_grid(
                    _decode(body["images"]), out / f"service-{name}.png", nrow=n, title=f"{name} over HTTP"
                )
                weights = np.asarray([[im["weights"][c] for c in body["compartments"]] for im in body["images"]])
                bars = save_weight_bars(
                    weights[: min(n, 6)],
                    body["compartments"],
                    out / f"service-{name}-weights.png",
                    title=f"{name}: compartment weight per image",
                )
                pictures.append((name, grid, bars))
                rows.append(
                    {
                        "key": name,
                        "rights": halves[name],
                        "listed": listed,
                        "served_by": body["compartments"],
                        "router": body["router"],
                        "seconds": body["seconds"],
                        "forbidden": f"{forbidden[0]} → {denied.status_code}" if denied is not None else "—",
                    }
                )
                _log(
                    f"{name}: listed {listed}, generated {n} images from {body['compartments']} "
                    f"in {body['seconds']} s; "
                    f"{rows[-1]['forbidden']}"
                )
    _log("server stopped")
    ok = all(r["listed"] == r["served_by"] and set(r["served_by"]) <= set(r["rights"]) for r in rows)
    lines = [
        "## Serving two customers with different rights (HTTP service)",
        "",
        "Two API keys, each allowed half of the sources; the real server (uvicorn on 127.0.0.1) answered every "
        "request below over HTTP. A key's requests are composed only from the compartments whose training "
        "lineage lies within its rights; the shard-classifier router saw every source, so these keys get the "
        "trajectory-filter router instead.",
        "",
        "| key | rights (sources) | GET /v1/compartments | generation served by | router | seconds "
        "| other key's compartment |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['key']} | {', '.join(r['rights'])} | {', '.join(r['listed'])} | {', '.join(r['served_by'])} | "
        f"{r['router']} | {r['seconds']} | {r['forbidden']} |"
        for r in rows
    ]
    lines += ["", f"Each key got only its own compartments: {ok}", ""]
    for name, grid, bars in pictures:
        lines += [f"**{name}**", "", f"![{name}]({grid.name})", "", f"![{name} weights]({bars.name})", ""]
    return "\n".join(lines)
