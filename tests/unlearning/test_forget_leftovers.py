"""Issue 19, items 1 and 5: nothing a killed write left may hold forgotten samples, and forgetting never
changes the class count.

1. A process killed between staging an artifact and renaming it into place leaves
   weights in ``tmp/``: opening the store again removes them, and a certificate
   fails while any file under ``tmp/`` (or an unregistered artifact folder) holds
   weights of unrecorded lineage.
5. Forgetting every sample of the highest label keeps the store's (and the
   composition's) class count, so unconditional sampling still works.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from unlearning_helpers import pick

from silodiff.store import Store
from silodiff.unlearning import forget, verify_certificate

# copy a trained checkpoint's tensors into a new artifact, and die (SIGKILL) just before the rename into place
KILLED_PUT = """
import os, signal, sys
from silodiff import Store
store = Store(sys.argv[1], create=False)
tensors, config = store.artifacts.get(sys.argv[2])
config["info"]["copy"] = True
os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
store.artifacts.put(tensors, config)
"""


def test_killed_write_leaves_no_weights_and_certificate_covers_tmp(fstore):
    sid = pick(fstore, "source-0", 0)
    saw = fstore.catalog.artifacts_that_saw([sid])[0]["hash"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_PUT, str(fstore.root), saw], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (staged,) = list((fstore.root / "tmp").iterdir())  # the killed write's staging folder, weights inside
    assert (staged / "model.safetensors").exists()
    # reopening the store (as a rerun does) removes it
    store = Store(fstore.root, create=False)
    assert list((store.root / "tmp").iterdir()) == []
    cert = forget(store, sample_ids=[sid])
    assert verify_certificate(store, cert) == (True, [])
    # weights in tmp/ that the clean-up may not remove (another host's write) fail the certificate
    foreign = store.root / "tmp" / f"{saw[:12]}.1@another-host.abc"
    shutil.copytree(store.artifacts.path(cert["new_artifacts"][0]["hash"]), foreign)
    ok, problems = verify_certificate(store, cert)
    assert not ok and any("tmp/" in p and "weights" in p for p in problems), problems
    shutil.rmtree(foreign)
    # so do unregistered weights under artifacts/
    shutil.copytree(store.artifacts.path(cert["new_artifacts"][0]["hash"]), store.artifacts.root / ("f" * 64))
    ok, problems = verify_certificate(store, cert)
    assert not ok and any("not an artifact of the catalog" in p for p in problems), problems


def test_forgetting_the_highest_label_keeps_the_class_count(tmp_path):
    from silodiff.composition import compose
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_compartments
    from silodiff.store.lineage import num_classes
    from silodiff.nn import MLPDenoiser
    from silodiff.sampling import generate
    from silodiff.training import TrainConfig

    store = Store(tmp_path / "store")
    data = load_digits("by-class", limit=40)
    store.ingest(data.where([y in (0, 1, 9) for y in data.labels.tolist()]), "digits")  # labels 0, 1 and 9
    assert num_classes(store) == 10
    plan_compartments(store, by="source", slices=1)
    model = MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1).config
    train_compartments(store, config=TrainConfig(epochs=1, batch_size=32), model=model, progress=False)
    cert = forget(store, sources=["class-9"])
    assert verify_certificate(store, cert)[0]
    reopened = Store(store.root, create=False)
    assert num_classes(reopened) == 10 and reopened.catalog.num_classes == 10
    composed = compose(reopened, router="uniform")
    assert composed.priors.shape == (2, 11)  # 10 labels + the null label, whatever is live
    images, _ = generate(composed, 2, steps=2)  # unconditional: the null label's prior
    assert images.shape == (2, 1, 8, 8)
