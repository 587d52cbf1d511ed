"""``JobsFailed``: what every backend raises when some jobs failed for good while the others finished."""

from __future__ import annotations

from ..errors import SilodiffError
from .slices import JobResult


class JobsFailed(SilodiffError):
    """Some jobs failed for good while the others finished.

    ``failures``: {"compartment 'c'": cause}; ``results``: job order, None where a job failed.
    """

    def __init__(self, failures: dict[str, str], results: list[JobResult | None]) -> None:
        self.failures, self.results = failures, results
        causes = "; ".join(f"{name} {cause}" for name, cause in failures.items())
        done = sum(r is not None for r in results)
        super().__init__(f"{len(failures)} of {len(results)} job(s) failed, {done} finished: {causes}")
