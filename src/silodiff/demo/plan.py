"""What a demo run does and how long it trains and samples: one plan per length.

``demo_plan()`` is the default, short run of ``silodiff demo`` (a few minutes on two
cores): each promise shown once.  ``demo_plan(full=True)`` is the longer run
(``silodiff demo --full``): every router, the soup, two forgets, four defences, three
audits, longer schedules.  ``demo_plan(quick=True)`` is the smallest, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SilodiffError


@dataclass(frozen=True)
class DefencesPlan:
    """The memorisation-defences step: ``n`` digits of one owner trained ``epochs`` epochs; ``models``
    among baseline, agc, iet-agc, cpsample (the baseline always, as the reference)."""

    n: int
    epochs: int
    rounds: int  # IET-AGC rounds
    n_gen: int  # samples per table row
    steps: int  # DDPM steps per sample
    clf_epochs: int  # CPSample's protection classifier
    models: tuple[str, ...] = ("baseline", "agc", "iet-agc", "cpsample")


@dataclass(frozen=True)
class AttributionPlan:
    n: int  # generated images attributed (labels 0..n-1)
    steps: int
    grid: int  # likelihood-posterior timesteps per training image


@dataclass(frozen=True)
class RightsPlan:
    n: int  # images per key over HTTP
    steps: int


@dataclass(frozen=True)
class AuditPlan:
    n: int  # generations per audited model
    steps: int
    mia_n: int  # members (and non-members) per membership attack
    models: tuple[str, ...] = ("paragon", "composed", "compartment")  # "compartment": the first trained one


@dataclass(frozen=True)
class ForgetPlan:
    requests: tuple[str, ...]  # "sample" (one random sample), "source" (the last source)
    steps: int  # DDPM steps of the samples drawn after forgetting (0: none)


@dataclass(frozen=True)
class DemoPlan:
    """One demo run: the main store's schedules, the quality rows, and each feature step's own plan."""

    name: str
    epochs: int  # compartments, paragon, base and adapters
    router_epochs: int
    fld_epochs: int  # the store's FLD feature network (cached: every later step scores with it)
    n_eval: int  # samples per FLD row
    steps: int  # ancestral DDPM steps per sample
    routers: tuple[str, ...]  # composed/<router> rows, class-conditional
    lora_rows: tuple[str, ...]  # base+lora/<router or soup> rows (empty: no base + LoRA step)
    unconditional: tuple[str, ...]  # rows sampled again without labels
    features: tuple[str, ...]  # feature steps run after the quality rows (``runner.FEATURE_STEPS`` titles)
    defences: DefencesPlan
    attribution: AttributionPlan
    rights: RightsPlan
    audit: AuditPlan
    forgetting: ForgetPlan


# The longer run, as `silodiff demo` ran before it had a short default.
FULL = DemoPlan(
    name="full", epochs=200, router_epochs=25, fld_epochs=30, n_eval=500, steps=50,
    routers=("classifier", "trajectory", "uniform"), lora_rows=("classifier", "uniform", "soup"),
    unconditional=("paragon", "composed/classifier", "base+lora/classifier", "composed/uniform", "base+lora/uniform"),
    features=("memorisation defences", "attribution", "service", "audit", "forgetting"),
    defences=DefencesPlan(n=24, epochs=700, rounds=50, n_gen=300, steps=50, clf_epochs=1000),
    attribution=AttributionPlan(n=6, steps=50, grid=20),
    rights=RightsPlan(n=10, steps=50),
    audit=AuditPlan(n=1000, steps=100, mia_n=500),
    forgetting=ForgetPlan(requests=("sample", "source"), steps=100),
)

# The default: each promise once (composition against the paragon, routed against uniform with and without
# labels, base + LoRA, rights over HTTP, one defence, one audit, one forget with its certificate), on shorter
# schedules.  Left to the full run: the trajectory router's and the soup's rows, the base + LoRA router (a router
# epoch trains every sample twice, and a forget retrains the router whole), IET-AGC and CPSample, the paragon's
# and the composition's audits, the second forget, and attribution (leave-one-compartment-out).
SHORT = DemoPlan(
    name="short", epochs=40, router_epochs=8, fld_epochs=8, n_eval=200, steps=30,
    routers=("classifier", "uniform"), lora_rows=("uniform",),
    unconditional=("composed/classifier", "composed/uniform"),
    features=("memorisation defences", "service", "audit", "forgetting"),
    defences=DefencesPlan(n=24, epochs=300, rounds=0, n_gen=100, steps=30, clf_epochs=0, models=("baseline", "agc")),
    attribution=AttributionPlan(n=4, steps=30, grid=10),
    rights=RightsPlan(n=6, steps=30),
    audit=AuditPlan(n=200, steps=30, mia_n=200, models=("compartment",)),
    forgetting=ForgetPlan(requests=("sample",), steps=0),
)

# The smallest run, for tests: every step, each as small as it can be and still run.
QUICK = DemoPlan(
    name="quick", epochs=20, router_epochs=10, fld_epochs=30, n_eval=200, steps=50,
    routers=("classifier", "trajectory", "uniform"), lora_rows=("classifier", "uniform", "soup"),
    unconditional=FULL.unconditional,
    features=FULL.features,
    defences=DefencesPlan(n=16, epochs=20, rounds=2, n_gen=40, steps=10, clf_epochs=10),
    attribution=AttributionPlan(n=4, steps=30, grid=10),
    rights=RightsPlan(n=6, steps=20),
    audit=AuditPlan(n=200, steps=50, mia_n=200),
    forgetting=ForgetPlan(requests=("sample", "source"), steps=30),
)


def demo_plan(*, quick: bool = False, full: bool = False) -> DemoPlan:
    """The plan for ``silodiff demo`` (short), ``--full`` or ``--quick``."""
    if quick and full:
        raise SilodiffError("--quick and --full do not combine: pick one")
    return QUICK if quick else FULL if full else SHORT
