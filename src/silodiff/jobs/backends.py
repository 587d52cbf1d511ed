"""Backends run independent training jobs: ``serial`` (default), ``process`` (a
local pool over the machine's cores) and ``ray`` (see ``silodiff.jobs.ray_backend``).
All of them run the same ``run_job`` and write to the same store, so the
artifacts and lineage they produce are identical for the same seeds.

Process-pool workers die with the process that started them, even when it is
SIGKILLed (the OOM killer): ``PR_SET_PDEATHSIG`` on Linux, and a watchdog
thread that exits when the parent pid changes elsewhere.  Serial and pool jobs
hold a lock file per job (``<store>/locks/<kind>-<name>.lock``, ``fcntl``), so
a rerun never trains a compartment while a surviving worker still does; it
waits, then resumes after that worker's last checkpoint.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import SilodiffError
from ..store.locks import file_lock
from .slices import JobResult, SliceJob, run_job

PR_SET_PDEATHSIG = 1  # linux/prctl.h

BACKENDS = ("serial", "process", "ray")


def job_lock_path(job: SliceJob) -> Path:
    """The lock file a job holds while it trains (one per kind and name, per store)."""
    return Path(job.store) / "locks" / re.sub(r"[^A-Za-z0-9._-]", "_", f"{job.kind}-{job.name}.lock")


def run_job_locked(job: SliceJob) -> JobResult:
    """``run_job`` holding the job's lock: a second runner of the same job waits, then resumes."""
    path = job_lock_path(job)
    path.parent.mkdir(exist_ok=True)
    with file_lock(path):
        return run_job(job)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # re-parented: the process that started us is gone
            os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent: int) -> None:
    """Pool-worker initializer: this process dies when ``parent`` does (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still holds
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent,), name="silodiff-parent-watchdog", daemon=True).start()


def run_jobs(jobs: Sequence[SliceJob], backend: str = "serial", *, workers: int | None = None, **options) -> list[JobResult]:
    """Run jobs and return their results in job order."""
    check_backend(backend, options)
    if backend == "serial":
        return [run_job_locked(job) for job in jobs]
    if backend == "process":
        workers = workers or min(len(jobs), os.cpu_count() or 1)
        for job in jobs:
            job.progress = False
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                     initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                return list(pool.map(run_job_locked, jobs))
        except BrokenProcessPool:
            raise SilodiffError(
                "a worker of the process backend died; it starts fresh interpreters (spawn), so a script that "
                "calls it must guard its top level with `if __name__ == \"__main__\":` (or use backend='serial')"
            ) from None
    if backend == "ray":
        from .ray_backend import run_jobs_ray

        return run_jobs_ray(jobs, **options)


def check_backend(backend: str, options: dict) -> None:
    """Refuse an unknown backend, and Ray's options (``run_jobs_ray``'s keywords) on another backend
    (``options`` may hold ``run_jobs``' own ``workers``)."""
    if backend not in BACKENDS:
        raise SilodiffError(f"unknown backend {backend!r}: use one of {BACKENDS}")
    if set(options) - {"workers"} and backend != "ray":
        raise SilodiffError("--ray-address, --num-cpus, --num-gpus, --max-retries and --ray-timeout need --backend ray")
