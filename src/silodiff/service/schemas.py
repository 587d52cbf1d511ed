"""Request and response bodies (pydantic): strict types, unknown fields refused, finite floats only (→ 422).

Server limits (``max_n``, ``max_steps``, …) are configurable, so they are checked
in ``image_requests.py`` rather than here; what is here holds for every server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Label = Annotated[int, Field(ge=0, description="A class index.")]


class CPSampleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    alpha: float = Field(
        0.25, gt=0.0, le=1.0, description="Guide where the protection classifier's confidence > 1 − alpha."
    )
    scale: float = Field(1000.0, ge=0.0, le=1e6, description="Guidance scale s.")


class SampleRequest(BaseModel):
    """What every generation-like request shares."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    n: int = Field(4, ge=1, description="Number of images.")
    labels: list[Label] | None = Field(
        None, min_length=1, description="Class labels, cycled to n; omitted: balanced over the labels the allowed "
        "compartments hold (0, 1, …, C−1, 0, … when they hold every label)"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of the noise trajectory: same request, same images.")
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    steps: int = Field(50, ge=1, le=1000, description="Sampling steps.")
    compartments: list[str] | None = Field(
        None, min_length=1, description="A subset of the key's compartments; omitted: all."
    )
    router: Literal["auto", "classifier", "trajectory", "uniform"] = Field(
        "auto",
        description="auto: the shard classifier if the key may use all its training data, else the trajectory filter.",
    )
    gate: float = Field(0.0, ge=0.0, lt=1.0, description="Sparse gating: drop members whose weight is below this.")


class GenerateRequest(SampleRequest):
    cpsample: CPSampleOptions | None = Field(
        None,
        description="Guide sampling away from training images with each compartment's protection classifier "
        "(CPSample).",
    )
    with_base: bool = Field(
        False,
        description="The store's base model is one more member of the mixture (named base), weighted by the router "
        "like the others; the key's rights must cover its sources unless they are public.",
    )
    combine: Literal["mixture", "soup"] = Field(
        "mixture",
        description="mixture: the members' outputs weighted by the router; soup: LoRA compartments of one base "
        "averaged into one model by their sample counts (no router: router and gate do not apply).",
    )


class AttributeRequest(SampleRequest):
    leave_one_out: bool = Field(False, description="Also resample without each compartment (same noise): K more runs.")
    method: Literal["compartments", "ensemble", "dtrak", "trak"] = Field(
        "compartments",
        description="compartments (router weights / leave-one-out), or training units by the encoded ensemble "
        "(signed contrast), D-TRAK or TRAK (gradient features of the composition over the allowed compartments).",
    )
    models: Literal["single", "ensemble", "compartments"] = Field(
        "single",
        description="dtrak / trak: whose gradient features, scores averaged over them: single (the composition), "
        "ensemble (the encoded ensemble's members; needs rights over every source they saw) or compartments "
        "(each compartment within the key's rights; only their units are scored).",
    )
    unit: Literal["sample", "source"] = Field("sample", description="Units for ensemble / dtrak / trak.")
    top_k: int = Field(5, ge=1, le=50, description="Top units per image (ensemble / dtrak / trak).")
    proj_dim: int = Field(512, ge=1, le=8192, description="dtrak / trak: random projection dimension.")

    @model_validator(mode="after")
    def _models_with_gradients(self) -> "AttributeRequest":
        if self.models != "single" and self.method not in ("dtrak", "trak"):
            raise ValueError(f"models {self.models} applies to method dtrak or trak")
        return self


class ForgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    sample_ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(default_factory=list)
    sources: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids_or_sources(self) -> "ForgetRequest":
        if not self.sample_ids and not self.sources:
            raise ValueError("give sample_ids and/or sources to forget")
        return self


class ErrorOut(BaseModel):
    """Every error answer: a message (or pydantic's list of field errors for a bad body); an answer over a
    configured limit (413 body bytes, 422 body depth / images / steps) also names the limit, what is allowed and what
    came."""

    detail: str | list[dict[str, Any]]
    limit: str | None = None
    allowed: int | None = None
    got: int | None = None


ERRORS = {
    400: "A body that cannot be read as text (e.g. not UTF-8).",
    401: "No key, or an unknown or revoked key.",
    403: "Outside the key's rights.",
    404: "No such job or compartment (or one the key may not see).",
    413: "The request body is over the server's limit (checked before the key).",
    422: "A bad body (or one nested over 32 levels), or a request over one of the server's limits.",
    429: "Over the key's rate limit (see Retry-After).",
    501: "A feature this build lacks.",
    503: "The active set kept changing under the request; retry.",
}


class ImageOut(BaseModel):
    index: int
    label: int | None
    png: str = Field(description="The image as a base64 PNG.")
    weights: dict[str, float] = Field(description="Compartment weight per compartment, averaged over the trajectory "
                                      "(a soup: each compartment's weight in the averaged model).")
    weights_last: dict[str, float] = Field(description="Compartment weights at the last step.")


class GenerateResponse(BaseModel):
    key: str
    compartments: list[str]
    artifacts: dict[str, str] = Field(
        description="The artifact hash of every member (and the router) that served this."
    )
    router: str = Field(description="The router that weighted the members; none for a soup.")
    combine: str = Field("mixture", description="mixture or soup.")
    sampler: str
    steps: int
    seed: int
    generation: int = Field(description="Bumped each time a service job switches the active set.")
    guided_fraction: float | None = Field(None, description="With cpsample: the fraction of member evaluations guided.")
    seconds: float
    images: list[ImageOut]


class JobOut(BaseModel):
    id: str
    kind: str
    owner: str
    params: dict
    scope: list[str] = Field(description="The sources whose data the job concerns.")
    status: Literal["queued", "running", "done", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    seconds: float | None
    result: dict | None
    error: str | None
