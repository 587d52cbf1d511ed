"""Background jobs of the service (forgetting): one worker thread, so jobs on a store run one at a time.

A job moves queued → running → done | failed.  Its result (a forget's
certificate) is recorded only inside ``ActiveSet.switched()``, so a client that
reads ``done`` knows no request is still served by the old weights.  Jobs live
in memory; their start and end are also catalog events.

Each job has a ``scope``: the sources whose data it concerns (a forget's named
sources and the sources of its sample ids).  A key sees a job when
``Caller.may_see(scope)``: an all-source admin sees every job, a scoped admin
only jobs within its sources; any other job answers 404 exactly like an
unknown id, so a job id says nothing about whether it exists.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from ..store import Store
from ..store.catalog import now
from .active import ActiveSet
from .errors import NotFound
from .keys import Caller


@dataclass
class Job:
    id: str
    kind: str
    owner: str  # the key's name
    params: dict[str, Any]
    scope: list[str] = field(default_factory=list)  # the sources whose data the job concerns
    status: str = "queued"
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobRunner:
    def __init__(self, store: Store, active: ActiveSet):
        self.store, self.active = store, active
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silodiff-job")

    def submit(
        self,
        kind: str,
        owner: str,
        params: dict[str, Any],
        fn: Callable[[], dict[str, Any]],
        scope: list[str] | set[str] = (),
    ) -> Job:
        job = Job(uuid.uuid4().hex, kind, owner, params, sorted(set(scope)))
        with self._lock:
            self._jobs[job.id] = job
        self.store.catalog.log_event(
            "service-job",
            {"job": job.id, "kind": kind, "key": owner, "status": "queued", **params, "scope": job.scope},
        )
        self._pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn: Callable[[], dict[str, Any]]) -> None:
        job.status, job.started_at = "running", now()
        t0 = time.perf_counter()
        result, error = None, None
        try:
            result = fn()
        except Exception as exc:  # a failed job reports its error; the server keeps serving
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        job.finished_at, job.seconds = now(), round(time.perf_counter() - t0, 3)
        status = "failed" if error else "done"
        self.store.catalog.log_event(
            "service-job",
            {
                "job": job.id,
                "kind": job.kind,
                "key": job.owner,
                "status": status,
                "seconds": job.seconds,
                "error": error,
                "scope": job.scope,
            },
        )
        if error:
            job.error, job.status = error, "failed"
            return
        with self.active.switched():  # 3. no request on the old snapshot survives "done"
            job.result, job.status = result, "done"

    def get(self, job_id: str, caller: Caller | None = None) -> Job:
        """The job ``job_id``; with ``caller``, only if that key may see it (404 otherwise, as for no job)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (caller is not None and not caller.may_see(job.scope)):
            raise NotFound(f"no job {job_id!r}")
        return job

    def list(self, caller: Caller | None = None) -> list[Job]:
        """Every job (``caller``: those it may see), oldest first."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.created_at)
        return [j for j in jobs if caller is None or caller.may_see(j.scope)]

    def wait(self, job_id: str, timeout: float = 600.0) -> Job:
        """Block until a job has finished (tests, the demo and the benchmark use it)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
        return job

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
