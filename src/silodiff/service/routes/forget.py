"""``POST /v1/forget`` (admin): forget samples and/or sources as a background job (202 + the job).

The job calls ``silodiff.unlearning.forgetting``; its result is the certificate.
An admin key with limited sources may only forget data of those sources.
"""

from fastapi import APIRouter

from ...errors import SilodiffError
from ..deps import Admin, State
from ..errors import Forbidden, Unavailable
from ..schemas import ForgetRequest, JobOut

router = APIRouter(prefix="/v1", tags=["forget"])


@router.post("/forget", status_code=202, response_model=JobOut)
def forget(req: ForgetRequest, caller: Admin, state: State) -> dict:
    try:
        from ...unlearning import forget as forget_fn
    except ImportError:
        raise Unavailable("forgetting is not available in this build (silodiff.unlearning is missing)") from None
    catalog = state.store.catalog
    known = {s["name"] for s in catalog.sources()}
    for source in req.sources:
        if not caller.may_use({source}):
            raise Forbidden(f"source {source!r} is outside key {caller.name!r}'s rights")
        if source not in known:
            raise SilodiffError(f"unknown source {source!r}")
    for sid in req.sample_ids:
        row = catalog.sample(sid)
        if row is None or row["forgotten_at"] is not None:
            raise SilodiffError(f"sample {sid[:12]}… is not live in the store")
        if not caller.may_use({row["source"]}):
            raise Forbidden(f"sample {sid[:12]}… belongs to a source outside key {caller.name!r}'s rights")
    ids, sources = list(req.sample_ids), list(req.sources)
    params = {"sources": sources, "n_sample_ids": len(ids)}
    job = state.jobs.submit(
        "forget", caller.name, params, lambda: forget_fn(state.store, sample_ids=ids, sources=sources, progress=False)
    )
    return job.to_dict()
