"""Backends run independent training jobs: ``serial`` (default), ``process`` (a
local pool over the machine's cores) and ``ray`` (see ``silodiff.jobs.ray_backend``).
All of them run the same ``run_job`` and write to the same store, so the
artifacts and lineage they produce are identical for the same seeds.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import SilodiffError
from .slices import JobResult, SliceJob, run_job

BACKENDS = ("serial", "process", "ray")


class JobsFailed(SilodiffError):
    """Some jobs failed for good while the others finished.

    ``failures``: {"compartment 'c'": cause}; ``results``: job order, None where a job failed.
    """

    def __init__(self, failures: dict[str, str], results: list[JobResult | None]) -> None:
        self.failures, self.results = failures, results
        causes = "; ".join(f"{name} {cause}" for name, cause in failures.items())
        done = sum(r is not None for r in results)
        super().__init__(f"{len(failures)} of {len(results)} job(s) failed, {done} finished: {causes}")


def run_jobs(jobs: Sequence[SliceJob], backend: str = "serial", *, workers: int | None = None, **options) -> list[JobResult]:
    """Run jobs and return their results in job order."""
    if backend == "serial":
        return [run_job(job) for job in jobs]
    if backend == "process":
        workers = workers or min(len(jobs), os.cpu_count() or 1)
        for job in jobs:
            job.progress = False
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                return list(pool.map(run_job, jobs))
        except BrokenProcessPool:
            raise SilodiffError(
                "a worker of the process backend died; it starts fresh interpreters (spawn), so a script that "
                "calls it must guard its top level with `if __name__ == \"__main__\":` (or use backend='serial')"
            ) from None
    if backend == "ray":
        from .ray_backend import run_jobs_ray

        return run_jobs_ray(jobs, **options)
    raise SilodiffError(f"unknown backend {backend!r}: use one of {BACKENDS}")
