"""Issue 19, item 3: process-backend workers die with their parent, and a rerun never races a survivor.

The parent is SIGKILLed for real (as the OOM killer would) while its pool
worker trains; the worker must be gone within seconds.  A job's lock file
makes a second runner of the same job wait for the first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from silodiff.data import load_digits
from silodiff.jobs import plan_compartments
from silodiff.jobs.backends import job_lock_path, run_jobs
from silodiff.jobs.slices import slice_jobs
from silodiff.store import Store
from silodiff.store.locks import file_lock
from silodiff.training import TrainConfig

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")

TRAIN = """
import sys
from silodiff import Store
from silodiff.jobs import train_compartments
from silodiff.nn import MLPDenoiser
from silodiff.training import TrainConfig
if __name__ == "__main__":
    model = MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1).config
    train_compartments(Store(sys.argv[1], create=False), config=TrainConfig(epochs=100000, batch_size=8), model=model,
                       backend="process", workers=1, progress=False)
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _planned(root: Path, sources: str = "random:2") -> Store:
    store = Store(root)
    store.ingest(load_digits(sources, limit=24), "digits")
    plan_compartments(store, by="source", slices=1)
    return store


def test_pool_workers_die_with_a_killed_parent(tmp_path):
    store = _planned(tmp_path / "store", "single:a")  # one compartment, one worker: two interpreters in all
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    parent = subprocess.Popen([sys.executable, str(script), str(store.root)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the worker holds its job's lock (it is training)
            workers = [p for p in _children(parent.pid) if "spawn_main" in _cmdline(p)]
            if workers and (store.root / "locks" / "compartment-a.lock").exists():
                break
            time.sleep(0.2)
        assert workers, "the pool never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "pool workers outlived their killed parent"
    finally:
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_second_runner_of_a_job_waits_for_the_first(tmp_path, tiny_model_config):
    store = _planned(tmp_path / "store")
    (job,) = slice_jobs(store, "compartment", {"source-0": store.catalog.slices("source-0")}, TrainConfig(epochs=1, batch_size=8),
                   tiny_model_config, False)
    path = job_lock_path(job)
    path.parent.mkdir(exist_ok=True)
    released = threading.Event()
    started = []

    def other_runner():  # stands for a surviving worker of a killed run: holds the lock 1.5 s
        with file_lock(path):
            started.append(True)
            time.sleep(1.5)
            released.set()

    holder = threading.Thread(target=other_runner)
    holder.start()
    while not started:
        time.sleep(0.01)
    run_jobs([job], "serial")
    assert released.is_set(), "the job ran while another runner held its lock"
    holder.join()
