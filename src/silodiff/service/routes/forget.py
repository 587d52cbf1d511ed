"""``POST /v1/forget`` (admin): forget samples and/or sources as a background job (202 + the job).

The job calls ``silodiff.unlearning.forgetting``; its result is the certificate.
An admin key with limited sources may only forget data of those sources.

No membership oracle: a ``sample_id`` is a hash of an image and its label, so
anyone holding an image can compute it.  A sample id that is unknown, already
forgotten, or of a source outside the key's rights gets one and the same
answer (422, the same body: the id's position, never the id or its source), so
the answer says nothing about another owner's data.  A source outside a scoped
admin's rights is a 403 whether or not it exists.
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
    scope = set(req.sources)
    for i, sid in enumerate(req.sample_ids):
        row = catalog.sample(sid)
        if row is None or row["forgotten_at"] is not None or not caller.may_use({row["source"]}):
            raise SilodiffError(f"sample_ids[{i}] is not a live sample of the sources key {caller.name!r} may forget")
        scope.add(row["source"])
    ids, sources = list(req.sample_ids), list(req.sources)
    params = {"sources": sources, "n_sample_ids": len(ids)}
    job = state.jobs.submit(
        "forget",
        caller.name,
        params,
        lambda: forget_fn(state.store, sample_ids=ids, sources=sources, progress=False),
        scope=scope,
    )
    return job.to_dict()
