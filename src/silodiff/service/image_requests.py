"""What the generation routes do: check limits, serve the request from one snapshot, log the event.

``generate``: ``silodiff.sampling``'s ``WeightRecorder`` collects the composed
model's weights w_i(x_t, t) at every step; per image we return the mean over the
trajectory and the last step.  ``attribute``: ``silodiff.attribution`` (router
weights, optionally exact leave-one-compartment-out) over the same snapshot.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from typing import Any

import numpy as np
import torch

from ..data import to_uint8
from ..errors import SilodiffError
from ..sampling import WeightRecorder, balanced_labels, generate
from .deps import ServiceState
from .errors import LimitExceeded, Unavailable
from .keys import Caller
from .schemas import AttributeRequest, GenerateRequest

log = logging.getLogger("silodiff.service")


def check_limits(settings, n: int, steps: int, runs: int = 1) -> None:
    """422 when a request is over one of the server's limits."""
    if n > settings.max_n:
        raise LimitExceeded("n", settings.max_n, n)
    if steps > settings.max_steps:
        raise LimitExceeded("steps", settings.max_steps, steps)
    if n * steps * runs > settings.max_image_steps:
        raise LimitExceeded(
            "images × steps" + (f" × {runs} runs" if runs > 1 else ""), settings.max_image_steps, n * steps * runs
        )


def request_labels(req: GenerateRequest, num_classes: int, held: list[int] | None = None) -> torch.Tensor:
    """The request's labels cycled to n; when omitted, balanced over ``held`` (the labels the caller's
    compartments hold; default all).  A label outside 0..C−1 → 422."""
    if req.labels is None:
        if held is not None and len(held) < num_classes:
            return torch.as_tensor(held)[balanced_labels(req.n, len(held))]
        return balanced_labels(req.n, num_classes)
    bad = [y for y in req.labels if y >= num_classes]
    if bad:
        raise SilodiffError(f"unknown label {bad[0]}: this store's labels are 0..{num_classes - 1}")
    return torch.as_tensor([req.labels[i % len(req.labels)] for i in range(req.n)])


def png_base64(image: torch.Tensor) -> str:
    """One (c, h, w) uint8 image as a base64 PNG."""
    from PIL import Image

    arr = image.numpy()
    pil = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0)))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _by_name(names: list[str], row: np.ndarray) -> dict[str, float]:
    return {n: round(float(w), 6) for n, w in zip(names, row)}


def run_generation(state: ServiceState, caller: Caller, req: GenerateRequest) -> dict[str, Any]:
    """Generate ``req.n`` images from the caller's compartments; returns the response body."""
    check_limits(state.settings, req.n, req.steps)
    t0 = time.perf_counter()
    cpsample = (req.cpsample.alpha, req.cpsample.scale) if req.cpsample is not None else None
    with state.active.serve(caller, req.compartments, req.router, req.gate, cpsample, req.with_base,
                            req.combine) as served:
        labels = request_labels(req, served.model.num_classes, served.held_labels)
        recorder = WeightRecorder()
        with state.slots:  # at most max_concurrent samplings: more threads than cores only contend
            images, _ = generate(
                served.model,
                req.n,
                labels=labels,
                sampler=req.sampler,
                steps=req.steps,
                seed=req.seed,
                callback=recorder,
            )
    guided = None
    if cpsample is not None:
        from ..defences.cpsample import guided_fraction

        guided = round(guided_fraction(served.model), 4)
    if req.combine == "soup":  # one model: each image drew on every member at its weight in the soup
        mean_w = last_w = np.tile([served.model.weights[n] for n in served.compartments], (req.n, 1))
    else:
        mean_w, last_w = recorder.result()  # (n, K) each
    pixels = to_uint8(images)  # (n, c, h, w) uint8
    seconds = round(time.perf_counter() - t0, 4)
    state.store.catalog.log_event(
        "generate",
        {
            "key": caller.name,
            "compartments": served.compartments,
            "artifacts": served.artifacts,
            "router": served.router,
            "seed": req.seed,
            "n": req.n,
            "steps": req.steps,
            "sampler": req.sampler,
            "labels": labels.tolist(),
            "cpsample": req.cpsample.model_dump() if req.cpsample else None,
            "seconds": seconds,
            "scope": served.scope,
        },
    )
    log.info(
        "generate for key %s: %d images from %s (router %s, seed %d) in %.2f s",
        caller.name,
        req.n,
        ",".join(served.compartments),
        served.router,
        req.seed,
        seconds,
    )
    return {
        "key": caller.name,
        "compartments": served.compartments,
        "artifacts": served.artifacts,
        "router": served.router,
        "combine": req.combine,
        "sampler": req.sampler,
        "steps": req.steps,
        "seed": req.seed,
        "generation": served.generation,
        "seconds": seconds,
        "guided_fraction": guided,
        "images": [
            {
                "index": i,
                "label": int(labels[i]),
                "png": png_base64(pixels[i]),
                "weights": _by_name(served.compartments, mean_w[i]),
                "weights_last": _by_name(served.compartments, last_w[i]),
            }
            for i in range(req.n)
        ],
    }


def run_attribution(state: ServiceState, caller: Caller, req: AttributeRequest, attempts: int = 3) -> dict[str, Any]:
    """Which of the caller's compartments each image of a generation request drew on.

    ``silodiff.attribution`` composes the models itself, so the snapshot is checked
    optimistically: the artifacts before and after the run must be the same (an
    active set only ever moves forward), else the run is repeated.
    """
    try:
        from ..attribution.compartments import attribute_generation
    except ImportError:  # an older build: the router weights of the generation itself
        body = run_generation(state, caller, GenerateRequest(**req.model_dump(exclude={"leave_one_out"})))
        return {
            "compartments": body["compartments"],
            "artifacts": body["artifacts"],
            "router": body["router"],
            "method": "router-weights",
            "images": [
                {
                    "index": im["index"],
                    "label": im["label"],
                    "weights_mean": im["weights"],
                    "weights_last": im["weights_last"],
                    "top_by_weight": max(im["weights"], key=im["weights"].get),
                }
                for im in body["images"]
            ],
        }
    for _ in range(attempts):
        before = state.active.artifacts(caller, req.compartments, req.router)
        names = [n for n in before if n != "router"]
        check_limits(
            state.settings, req.n, req.steps, runs=1 + (len(names) if req.leave_one_out and len(names) > 1 else 0)
        )
        router = "classifier" if "router" in before else ("trajectory" if req.router == "auto" else req.router)
        labels = request_labels(req, _num_classes(state))
        t0 = time.perf_counter()
        with state.active.lock.read(), state.slots:
            try:
                result = attribute_generation(
                    state.store,
                    labels=labels.tolist(),
                    seed=req.seed,
                    allowed=names,
                    router=router,
                    sampler=req.sampler,
                    steps=req.steps,
                    leave_one_out=req.leave_one_out,
                    device=state.settings.device,
                )
            except SilodiffError:
                if state.active.artifacts(caller, req.compartments, req.router) == before:
                    raise
                continue  # the active set switched (and old files went) under the run: redo it
        if state.active.artifacts(caller, req.compartments, req.router) != before:
            continue
        state.store.catalog.log_event(
            "attribute",
            {
                "key": caller.name,
                "compartments": names,
                "artifacts": before,
                "router": router,
                "seed": req.seed,
                "n": req.n,
                "steps": req.steps,
                "sampler": req.sampler,
                "leave_one_out": req.leave_one_out,
                "seconds": round(time.perf_counter() - t0, 4),
                "scope": state.active.scope(before.values()),
            },
        )
        return {**result, "artifacts": before, "method": "leave-one-out" if req.leave_one_out else "router-weights"}
    raise Unavailable("the active set kept changing during attribution; retry")


def _num_classes(state: ServiceState) -> int:
    from ..store.lineage import num_classes

    return num_classes(state.store)
