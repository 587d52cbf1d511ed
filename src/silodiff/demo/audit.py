"""The demo's audit step: memorisation and membership inference of the paragon, the composition and one compartment."""

from __future__ import annotations

import json
from pathlib import Path

from ..audit.report import comparison_markdown, run_audits
from ..composition import ROUTER_NAME
from ..store.lineage import trained_compartments
from ..store import Store
from .plan import DemoPlan


def demo_step(store: Store, out: Path, plan: DemoPlan) -> str:
    """The demo's audit of the plan's models (the paragon, the composed model, one compartment); returns a Markdown
    section.

    Non-members: the digits in no lineage of the audited model.  When the demo has trained the paragon
    and every compartment on all digits there are none for those two, so one compartment is audited
    too: the other compartments' samples are its non-members, straight from the catalog.
    """
    out = Path(out)
    n, steps, mia_n = plan.audit.n, plan.audit.steps, plan.audit.mia_n
    router = "classifier" if store.active("router", ROUTER_NAME) else "trajectory"
    compartments = trained_compartments(store)
    models = tuple(m for name in plan.audit.models for m in (compartments[:1] if name == "compartment" else [name]))
    print(f"[demo] audit: {', '.join(models)} ({n} generations each, composed with the {router} router)", flush=True)
    folder = out / "audit"
    run_audits(store, folder, models, router=router, n=n, steps=steps, mia_n=mia_n, holdout="digits", progress=False)
    data = json.loads((folder / "report.json").read_text())
    return comparison_markdown(data["comparison"], data["models"], heading="##", prefix="audit/")
