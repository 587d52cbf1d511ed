"""Issue 19, items 2, 4 and 5 (store side): ingest against the whole catalog.

- a forgotten sample stays forgotten: ingesting it again stores nothing and says so;
  re-admitting needs ``readmit_forgotten`` and is a catalog event;
- a sample held by another source is stored once, under the source that registered it;
- an ingest killed mid-write leaves no ``.part`` file once the store is reopened;
- the class count is fixed by the first ingest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from safetensors import safe_open

from silodiff.data import SampleSet, load_digits, sample_id
from silodiff.errors import SilodiffError
from silodiff.store import Store


def _on_disk(store: Store) -> dict[str, set[str]]:
    """Sample ids of the images each source's chunk files hold, re-hashed from their pixels (not their metadata)."""
    out: dict[str, set[str]] = {}
    for path in sorted(store.data_dir.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            pixels, labels = f.get_tensor("pixels").numpy(), f.get_tensor("labels").tolist()
        out.setdefault(path.parent.name, set()).update(sample_id(p, y) for p, y in zip(pixels, labels))
    return out


def _forget_one(store: Store, sid: str) -> dict:
    from silodiff.unlearning import forget

    return forget(store, sample_ids=[sid])


def test_a_forgotten_sample_stays_forgotten_unless_readmitted(tmp_path):
    from silodiff.unlearning import verify_certificate

    store = Store(tmp_path / "store")
    data = load_digits("single:alice", limit=12)
    store.ingest(data, "digits")
    sid = data.sample_ids[3]
    cert = _forget_one(store, sid)
    assert sid not in _on_disk(store)["alice"]
    # the same ingest again: nothing comes back
    assert store.ingest(data, "digits") == 0
    assert sid not in _on_disk(store)["alice"] and store.catalog.sample(sid)["forgotten_at"] is not None
    report = store.ingest_report(data, "digits")
    assert report["skipped_forgotten"] == 1 and report["already_stored"] == 11 and report["added"] == 0
    assert verify_certificate(store, cert) == (True, [])
    # under another source name, too
    again = SampleSet(data.pixels, data.labels, data.sample_ids, ["bob"] * len(data))
    report = store.ingest_report(again, "digits")
    assert report["skipped_forgotten"] == 1 and report["held_elsewhere"] == 11 and report["added"] == 0
    assert all(sid not in ids for ids in _on_disk(store).values())
    # re-admission: explicit, stored again, recorded as an event; the old certificate still verifies
    report = store.ingest_report(again, "digits", readmit_forgotten=True)
    assert report["readmitted"] == 1 and report["added"] == 1
    row = store.catalog.sample(sid)
    assert row["forgotten_at"] is None and row["source"] == "bob" and _on_disk(store)["bob"] == {sid}
    (event,) = store.catalog.events("readmit")
    assert event["payload"]["sample_ids"] == [sid]
    assert verify_certificate(store, cert) == (True, [])


def test_a_sample_is_stored_once_under_the_source_that_registered_it(tmp_path):
    from silodiff.unlearning import verify_certificate

    store = Store(tmp_path / "store")
    data = load_digits("single:alice", limit=10)
    store.ingest(data, "digits")
    extra = load_digits("single:bob", limit=14)  # 10 held by alice, 4 new
    report = store.ingest_report(extra, "digits")
    assert (report["added"], report["held_elsewhere"]) == (4, 10)
    disk = _on_disk(store)
    assert disk["alice"] == set(data.sample_ids) and disk["bob"] == set(extra.sample_ids[10:])
    assert {r["sample_id"] for r in store.catalog.sample_rows("bob")} == disk["bob"]
    cert = _forget_one(store, data.sample_ids[0])
    assert all(data.sample_ids[0] not in ids for ids in _on_disk(store).values())
    assert verify_certificate(store, cert) == (True, [])


KILLED_INGEST = """
import os, signal, sys
from silodiff import Store
from silodiff.data import load_digits
store = Store(sys.argv[1])
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
store.ingest(load_digits("single:alice", limit=8), "digits")
"""


def test_a_killed_ingest_leaves_no_part_file(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-c", KILLED_INGEST, str(root)], capture_output=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert [p.suffix for p in (root / "tmp").iterdir()] == [".part"]
    store = Store(root)
    assert list((root / "tmp").iterdir()) == []
    assert store.ingest(load_digits("single:alice", limit=8), "digits") == 8


def test_the_class_count_is_fixed_by_the_first_ingest(tmp_path):
    data = load_digits("single:a", limit=30)
    low = data.where([y < 5 for y in data.labels.tolist()])
    store = Store(tmp_path / "store")
    store.ingest(low, "digits")
    assert store.num_classes == 5
    with pytest.raises(SilodiffError, match="outside the store's 5 classes"):
        store.ingest(data, "digits")
    other = Store(tmp_path / "other")
    other.ingest(low, "digits", num_classes=10)  # reserve more at the first ingest
    assert other.num_classes == 10 and other.ingest(data, "digits") == len(data) - len(low)
    assert json.loads(json.dumps(other.catalog.events("num-classes")[0]["payload"])) == {"num_classes": 10}


def test_cli_ingest_says_what_it_skipped_and_readmits_on_request(tmp_path):
    from typer.testing import CliRunner

    from silodiff.cli.main import app

    runner, root = CliRunner(), str(tmp_path / "store")
    args = ["data", "ingest", "--store", root, "--assign", "single:alice", "--limit", "12"]
    assert runner.invoke(app, args).exit_code == 0
    store = Store(root, create=False)
    sid = store.catalog.sample_rows()[0]["sample_id"]
    _forget_one(store, sid)
    out = runner.invoke(app, args)
    assert out.exit_code == 0 and "0 new samples" in out.output and "1 forgotten sample(s) skipped" in out.output, out.output
    out = runner.invoke(app, [*args, "--readmit-forgotten", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["readmitted"] == 1, out.output
    assert store.catalog.sample(sid)["forgotten_at"] is None
