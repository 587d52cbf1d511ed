"""Scale-out backend: one Ray task per training job (a compartment, the paragon or an ensemble member).

Ray (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI
Applications") schedules each ``SliceJob`` as one task that runs the same
top-level ``run_job`` as the serial backend, so a job trained on a cluster
writes the same checkpoints (same artifact hashes for the same seeds: jobs pin
their torch threads) with the same lineage.  The workers write into the store
themselves, so every node must open the same store path (a shared filesystem);
only the small ``JobResult`` travels back.

``run_jobs_ray(jobs, address=, num_cpus=, num_gpus=, max_retries=, timeout=)``:
  1. connect: reuse a Ray session this process already holds, join the cluster
     at ``address`` ("auto", "host:port", "ray://host:10001"; default: the
     ``RAY_ADDRESS`` environment variable), or else start a private local one,
     shut down again at the end;
  2. submit one task per job with its resource request (``num_cpus`` and a
     fractional ``num_gpus`` per task) and ``max_retries``: Ray re-runs a task
     whose worker died or which raised.  A re-run resumes after the job's last
     registered slice, since ``run_job`` registers each slice's checkpoint in
     one catalog transaction once its file is in place (temp-then-rename);
     a ``SilodiffError`` (bad input or state, e.g. an empty compartment) is
     not retried: it would fail the same way again;
  3. wait for all tasks, at most ``timeout`` seconds; tasks still running then
     are cancelled (their finished slices stay registered);
  4. results come back in job order; when a job failed for good the others
     still finish, then ``JobsFailed`` names each failed job and its cause.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import SilodiffError
from .failures import JobsFailed
from .slices import JobResult, SliceJob, run_job

INSTALL_HINT = "pip install 'silodiff[ray]'"


def import_ray():
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError as exc:  # ray is an optional extra
        raise SilodiffError(f"the ray backend needs Ray, which is not installed: {INSTALL_HINT} ({exc})") from None
    return ray


def train_job(job: SliceJob) -> tuple[JobResult | None, str | None]:
    """The body of one Ray task: ``run_job``; a SilodiffError comes back as a value (no retry)."""
    try:
        return run_job(job), None
    except SilodiffError as exc:
        return None, str(exc)


def _label(job: SliceJob) -> str:
    return f"{job.kind} {job.name!r}"


def _cause(ray, exc: BaseException, attempts: int) -> str:
    """One line: what went wrong in the task, after how many attempts."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None) or exc
        what = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    elif isinstance(exc, ray.exceptions.TaskCancelledError):
        what = "cancelled"
    else:  # WorkerCrashedError, node failures, …
        what = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return f"failed after {attempts} attempt(s): {what}"


def _connect(ray, address: str | None, init_options: dict[str, Any]) -> bool:
    """Join or start a cluster; True when this call started the session (and must shut it down)."""
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, **init_options}
    try:
        # address=None → "local": always a fresh private cluster, never someone else's on this machine
        ray.init(address=address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SilodiffError(f"cannot connect to the Ray cluster at {address or 'local'}: {exc}") from None
    return True


def _check_feasible(ray, num_cpus: float, num_gpus: float) -> None:
    """A task no node can hold would wait for ever: say so instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= num_cpus and r.get("GPU", 0) >= num_gpus for r in nodes):
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
        raise SilodiffError(f"no Ray node can run a task asking for {num_cpus:g} CPU and {num_gpus:g} GPU (nodes: {have})")


def _cancel(ray, refs: list, grace: float = 10.0) -> None:
    """Stop tasks before returning, so no worker still writes to the store afterwards.

    First a KeyboardInterrupt in each task (open catalog transactions roll back),
    then, for a task still running after ``grace`` seconds, its worker is killed.
    """
    for ref in refs:
        ray.cancel(ref)
    _, stuck = ray.wait(refs, num_returns=len(refs), timeout=grace)
    for ref in stuck:
        ray.cancel(ref, force=True)
    if stuck:
        ray.wait(stuck, num_returns=len(stuck), timeout=grace)
    for ref in refs:  # collect the cancellation errors, so Ray does not print them as unhandled
        try:
            ray.get(ref, timeout=0)
        except Exception:  # noqa: BLE001 - TaskCancelledError, or whatever the task died of
            pass


def run_jobs_ray(
    jobs: Sequence[SliceJob],
    *,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 2,
    timeout: float | None = None,
    init_options: dict[str, Any] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` as Ray tasks (see the module docstring); results in job order, or ``JobsFailed``."""
    if num_cpus <= 0 or num_gpus < 0:
        raise SilodiffError(f"num_cpus must be > 0 and num_gpus ≥ 0, got {num_cpus} and {num_gpus}")
    if max_retries < 0:
        raise SilodiffError(f"max_retries must be ≥ 0, got {max_retries}")
    if timeout is not None and timeout <= 0:
        raise SilodiffError(f"timeout must be > 0 seconds, got {timeout}")
    ray = import_ray()
    if not jobs:
        return []
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own convention for "join this cluster"
    # Ray prints retries and worker deaths on stdout: send them to stderr, stdout stays the caller's (--json)
    with contextlib.redirect_stdout(sys.stderr):
        started = _connect(ray, address, dict(init_options or {}))
        try:
            if address is None:  # a joined cluster may autoscale: only a local one is checked up front
                _check_feasible(ray, num_cpus, num_gpus)
            return _run(ray, list(jobs), num_cpus, num_gpus, max_retries, timeout)
        finally:
            if started:
                ray.shutdown()


def _run(ray, jobs: list[SliceJob], num_cpus: float, num_gpus: float, max_retries: int, timeout: float | None) -> list[JobResult]:
    # 2. one task per job; workers print nothing (no progress bars), results are tiny
    remote = ray.remote(train_job)
    options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries, "retry_exceptions": True}
    refs = [remote.options(**options, name=f"silodiff:{j.kind}:{j.name}").remote(replace(j, progress=False)) for j in jobs]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[JobResult | None] = [None] * len(jobs)
    failures: dict[str, str] = {}
    # 3. collect as they finish, until the deadline
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(refs)
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, pending = ray.wait(pending, num_returns=1, timeout=left)
        if not ready:  # deadline passed: cancel the rest (finished slices stay registered)
            _cancel(ray, pending)
            for ref in pending:
                failures[_label(jobs[index[ref]])] = f"timed out after {timeout:g} s (cancelled)"
            break
        i = index[ready[0]]
        try:
            result, error = ray.get(ready[0])
        except (ray.exceptions.RayError, OSError) as exc:
            failures[_label(jobs[i])] = _cause(ray, exc, max_retries + 1)
            continue
        if error is not None:
            failures[_label(jobs[i])] = f"failed: {error}"
        results[i] = result
    # 4. the others finished; now say which did not
    if failures:
        ordered = {_label(j): failures[_label(j)] for j in jobs if _label(j) in failures}
        raise JobsFailed(ordered, results)
    return results
