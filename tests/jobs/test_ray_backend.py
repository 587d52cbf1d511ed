"""The Ray backend on a real local cluster (``ray.init(num_cpus=2)``, shared by the module).

Faults are injected inside the Ray workers by a start-up hook that wraps the
checkpoint writer: a chosen job raises just before saving a chosen slice, the
first ``times`` attempts (or always), so a retry has to resume mid-job.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from silodiff.data import load_digits
from silodiff.errors import SilodiffError
from silodiff.nn import MLPDenoiser
from silodiff.jobs import JobsFailed, plan_compartments, run_jobs, train_compartments
from silodiff.store import Store
from silodiff.training import TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=16)
TIMEOUT = 300  # seconds: no test may hang on the cluster
FAULTS_ENV = "SILODIFF_TEST_FAULTS"


def _inject_faults() -> None:
    """Ray worker start-up hook: fail a chosen job before it saves a chosen slice (like a crash mid-job)."""
    import silodiff.jobs.slices as slices

    original = slices._save_checkpoint

    def save(store, job, state, r, *args, **kwargs):
        plan = Path(os.environ[FAULTS_ENV])
        key = f"{job.store}:{job.name}"
        fault = json.loads(plan.read_text()).get(key) if plan.exists() else None
        if fault and r == fault["slice"]:
            counter = plan.parent / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".count")
            n = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(n + 1))
            if fault["times"] is None or n < fault["times"]:
                raise RuntimeError(f"injected fault in {job.name} slice {r}")
        return original(store, job, state, r, *args, **kwargs)

    slices._save_checkpoint = save


class Faults:
    """Writes the fault plan the workers read; counts attempts that reached the faulty slice."""

    def __init__(self, folder: Path) -> None:
        self.plan = folder / "faults.json"

    def set(self, store: Store, name: str, slice: int, times: int | None) -> None:
        plan = json.loads(self.plan.read_text()) if self.plan.exists() else {}
        plan[f"{store.root}:{name}"] = {"slice": slice, "times": times}
        self.plan.write_text(json.dumps(plan))

    def clear(self, store: Store, name: str) -> None:
        plan = json.loads(self.plan.read_text())
        plan.pop(f"{store.root}:{name}")
        self.plan.write_text(json.dumps(plan))

    def attempts(self, store: Store, name: str) -> int:
        counter = self.plan.parent / (hashlib.sha256(f"{store.root}:{name}".encode()).hexdigest()[:16] + ".count")
        return int(counter.read_text()) if counter.exists() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One real local Ray cluster (2 CPUs) for the module, with the fault hook in every worker."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'silodiff[ray]'")
    folder = tmp_path_factory.mktemp("faults")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels by value
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": _inject_faults, "env_vars": {FAULTS_ENV: str(folder / "faults.json")}})
    yield Faults(folder)
    ray.shutdown()


def _store(root: Path) -> Store:
    """3 compartments × 2 slices over 90 digits."""
    store = Store(root)
    store.ingest(load_digits("random:3", limit=90), "digits")
    plan_compartments(store, by="source", slices=2)
    return store


def _model() -> dict:
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=32, depth=1).config


def _catalog(store: Store) -> set[tuple]:
    """(kind, name, slice, hash, lineage sets) of the active artifacts."""
    return {(a["kind"], a["name"], a["slice"], a["hash"], tuple(sorted(store.catalog.lineage_sets(a["hash"]))))
            for a in store.catalog.artifacts()}


def _consistent(store: Store, staging_empty: bool = True) -> None:
    """Every registered artifact is complete on disk and verifies; no staging left; the event chain holds."""
    for a in store.catalog.artifacts(active=None):
        store.artifacts.get(a["hash"])  # raises on a missing or modified file
    assert not staging_empty or not list(store.artifacts.tmp.iterdir())
    assert store.catalog.verify_chain()[0]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The reference: the same store trained with the serial backend."""
    store = _store(tmp_path_factory.mktemp("serial") / "store")
    train_compartments(store, config=CONFIG, model=_model(), progress=False)
    return store


def test_same_hashes_and_lineage_as_serial(cluster, serial, tmp_path):
    store = _store(tmp_path / "store")
    results = train_compartments(store, config=CONFIG, model=_model(), backend="ray", timeout=TIMEOUT)
    assert [r.name for r in results] == ["source-0", "source-1", "source-2"]
    assert all(len(r.artifacts) == 2 and r.resumed_from == 0 for r in results)
    assert _catalog(store) == _catalog(serial) and len(_catalog(store)) == 6
    assert {c["name"] for c in store.catalog.compartments("trained")} == {"source-0", "source-1", "source-2"}
    _consistent(store)


def test_ensemble_members_same_hashes_as_serial(cluster, tmp_path):
    from silodiff.attribution.encoded import train_encoded

    catalogs = []
    for backend in ("serial", "ray"):
        store = _store(tmp_path / backend)
        plan, results = train_encoded(store, members=4, unit="source", config=CONFIG, model=_model(), backend=backend, progress=False,
                                      **({"timeout": TIMEOUT} if backend == "ray" else {}))
        assert [r.name for r in results] == plan.member_names
        catalogs.append({row for row in _catalog(store) if row[0] == "member"})
    assert catalogs[0] == catalogs[1] and len(catalogs[0]) == 4


def test_failed_task_is_retried_and_resumes_after_its_last_slice(cluster, serial, tmp_path):
    store = _store(tmp_path / "store")
    cluster.set(store, "source-1", slice=1, times=1)  # the first attempt dies before saving slice 1
    results = train_compartments(store, config=CONFIG, model=_model(), backend="ray", max_retries=1, timeout=TIMEOUT)
    assert cluster.attempts(store, "source-1") == 2
    retried = results[1]
    assert retried.name == "source-1" and retried.resumed_from == 1 and len(retried.artifacts) == 1
    assert _catalog(store) == _catalog(serial)  # exact resume: same hashes as an uninterrupted run
    _consistent(store)


def test_job_that_keeps_failing_is_reported_and_the_others_finish(cluster, serial, tmp_path):
    store = _store(tmp_path / "store")
    cluster.set(store, "source-2", slice=1, times=None)
    with pytest.raises(JobsFailed) as info:
        train_compartments(store, config=CONFIG, model=_model(), backend="ray", max_retries=1, timeout=TIMEOUT)
    message = str(info.value)
    assert "compartment 'source-2'" in message and "RuntimeError" in message and "injected fault" in message
    assert "after 2 attempt(s)" in message and "\n" not in message
    assert cluster.attempts(store, "source-2") == 2
    assert [r is not None for r in info.value.results] == [True, True, False]
    # the others are complete and trained; source-2 keeps its finished slice 0 only
    want = {row for row in _catalog(serial) if not (row[1] == "source-2" and row[2] == 1)}
    assert _catalog(store) == want
    assert {c["name"] for c in store.catalog.compartments("trained")} == {"source-0", "source-1"}
    assert store.catalog.events("train")[-1]["payload"]["failed"] == info.value.failures
    _consistent(store)
    # once the cause is gone, a re-run trains only what is missing
    cluster.clear(store, "source-2")
    results = train_compartments(store, config=CONFIG, model=_model(), backend="ray", timeout=TIMEOUT)
    assert [r.resumed_from for r in results] == [2, 2, 1]
    assert _catalog(store) == _catalog(serial)


def test_cli_prints_a_failure_in_one_line(cluster, tmp_path):
    from typer.testing import CliRunner

    from silodiff.cli.main import app

    store = _store(tmp_path / "store")
    cluster.set(store, "source-0", slice=0, times=None)
    args = ["train", "compartments", "--store", str(store.root), "--epochs", "1", "--backend", "ray",
            "--max-retries", "1", "--num-cpus", "1", "--ray-timeout", str(TIMEOUT)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""  # nothing from Ray on stdout (it stays the caller's, e.g. --json)
    # Ray may print its own retry notice on stderr first; the report itself is one line, the last
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("error: 1 of 3 job(s) failed, 2 finished: ")
    assert "compartment 'source-0' failed after 2 attempt(s): RuntimeError: injected fault" in errors[0]


def test_demo_step_replays_a_compartment_bit_for_bit(cluster, serial, tmp_path):
    from silodiff.demo import QUICK
    from silodiff.demo.ray_replay import demo_step

    before = _catalog(serial)
    section = demo_step(serial, tmp_path, QUICK)
    assert section.startswith("## Scale-out") and "**the same checkpoints, bit for bit**" in section
    assert [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ") and "`" in line] == ["| 1", "| 2"]
    assert _catalog(serial) == before  # the demo store is not touched


def test_a_task_no_node_can_hold_is_refused(cluster, tmp_path):
    store = _store(tmp_path / "store")
    with pytest.raises(SilodiffError, match="no Ray node can run a task asking for 1 CPU and 0.5 GPU"):
        train_compartments(store, config=CONFIG, model=_model(), backend="ray", num_gpus=0.5)
    assert store.catalog.artifacts() == []


def test_timeout_cancels_the_rest_and_keeps_the_catalog_consistent(cluster, tmp_path):
    store = _store(tmp_path / "store")
    with pytest.raises(JobsFailed, match="timed out after 0.01 s"):
        train_compartments(store, config=CONFIG, model=_model(), backend="ray", timeout=0.01)
    _consistent(store, staging_empty=False)  # an interrupted write may leave an unregistered staging folder


def test_bad_options_are_refused_before_anything_runs(tmp_path):
    jobs = []
    for bad, match in [({"num_cpus": 0}, "num_cpus"), ({"max_retries": -1}, "max_retries"), ({"timeout": 0}, "timeout")]:
        with pytest.raises(SilodiffError, match=match):
            run_jobs(jobs, "ray", **bad)


def test_missing_ray_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SilodiffError, match=r"pip install 'silodiff\[ray\]'"):
        run_jobs([], "ray")


def test_cli_missing_ray_and_ray_options_without_ray_backend(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from silodiff.cli.main import app

    store = _store(tmp_path / "store")
    base = ["train", "compartments", "--store", str(store.root), "--epochs", "1"]
    result = CliRunner().invoke(app, [*base, "--num-cpus", "2"])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: --ray-address, --num-cpus, --num-gpus, --max-retries and --ray-timeout need --backend ray")
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(app, [*base, "--backend", "ray"])
    assert result.exit_code == 2 and "pip install 'silodiff[ray]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_worker_imports_only_what_an_mlp_job_needs(tmp_path):
    """A fresh Ray worker imports the task's module, then trains: no peft, transformers or UNet module for an MLP
    (they cost seconds of every cold start); a UNet job imports its UNet when it builds one."""
    import subprocess

    code = (
        "import sys\n"
        "import silodiff.jobs.ray_backend\n"
        "heavy = ['peft', 'transformers', 'diffusers.models.unets.unet_2d', 'matplotlib', 'sklearn']\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "from silodiff.config import build\n"
        "build({'kind': 'mlp-denoiser', 'hidden': 8, 'depth': 1})\n"
        "assert 'diffusers.models.unets.unet_2d' not in sys.modules\n"
        "build({'kind': 'unet-denoiser', 'image_shape': [1, 8, 8], 'block_out_channels': [8, 8],\n"
        "       'norm_num_groups': 4})\n"
        "assert 'diffusers.models.unets.unet_2d' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
