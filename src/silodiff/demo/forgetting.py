"""The demo's forgetting step: forget one sample and one whole source, verify both certificates.

``demo_step(store, out, plan)`` runs on a demo store (compartments with SISA
slices, router, paragon, FLD net), forgets what the plan asks (one random sample,
then the last source), writes the certificates and a picture into ``out`` and
returns a Markdown section for the report.  Run it last: a forget
drops the paragon and the FLD network (their lineage is everything).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..composition import compose
from ..sampling import generate
from ..store import Store
from ..unlearning.certificate import verify_certificate
from ..unlearning.forgetting import forget
from .plan import DemoPlan


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _summary(cert: dict) -> dict:
    return {"request": cert["request_id"], "samples": cert["forgotten"]["n"],
            "compartments": ", ".join(f"{c['name']} ({c['action']}"
                                      + (f" from slice {c['first_slice'] + 1}/{c['n_slices']})" if c["action"] == "retrain" else ")")
                                      for c in cert["compartments"]),
            "old": len(cert["old_artifacts"]), "new": len(cert["new_artifacts"]), "seconds": cert["timing"]["total_s"],
            "estimated_speedup": cert["estimate"].get("speedup_vs_paragon")}


def demo_step(store: Store, out: Path, plan: DemoPlan) -> str:
    """Forget one random sample and/or the last source (as the plan says); verify; return the report section."""
    from ..viz import save_grid

    out = Path(out)
    rng = random.Random(0)
    sid = rng.choice([r["sample_id"] for r in store.catalog.sample_rows()])
    image = store.dataset([sid]).x()
    save_grid(image, out / "forgotten-sample.png", nrow=1)
    rows = []
    requests = {"sample": ("one sample", {"sample_ids": [sid]}),
                "source": ("one source", {"sources": [store.source_names()[-1]]})}
    for what, request in (requests[r] for r in plan.forgetting.requests):
        cert = forget(store, **request)
        ok, problems = verify_certificate(store, cert)
        (out / f"certificate-{cert['request_id']}.json").write_text(json.dumps(cert, indent=2))
        rows.append({"what": what, **_summary(cert), "verified": ok, "problems": problems})
        _log(f"forget {what}: {cert['forgotten']['n']} sample(s) in {cert['timing']['total_s']} s, "
             f"{len(cert['old_artifacts'])} artifacts retired, {len(cert['new_artifacts'])} new; certificate verifies: {ok}")
    forgot = {"sample": f"sample `{sid[:12]}…` (![forgotten sample](forgotten-sample.png))",
              "source": f"source `{requests['source'][1]['sources'][0]}` as a whole"}
    lines = ["## Forgetting (exact: SISA slices, atomic switch, certificate)", "",
             "Forgot " + " and then ".join(forgot[r] for r in plan.forgetting.requests) + ".", "",
             "| request | samples | compartments | artifacts retired | new | seconds | est. speedup vs paragon | certificate verifies |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['what']} | {r['samples']} | {r['compartments']} | {r['old']} | {r['new']} | {r['seconds']} | "
              f"{r['estimated_speedup']} | {r['verified']} |" for r in rows]
    lines += ["", f"Certificates: `certificate-*.json`; re-check one with `silodiff certificate verify FILE --store "
              f"{store.root}`.", ""]
    if plan.forgetting.steps:
        images, _ = generate(compose(store, router="classifier"), 20, steps=plan.forgetting.steps, seed=3)
        grid = save_grid(images, out / "samples-after-forget.png", nrow=10, title="composed, after forgetting")
        lines += [f"![samples after forgetting]({grid.name})", ""]
    return "\n".join(lines)
