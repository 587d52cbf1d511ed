"""Attribution: which compartment and which training units a generated image drew on.

- ``compartments``: router weights along the trajectory, exact leave-one-compartment-out
  with the same noise, and a likelihood-proxy posterior for any image (Golatkar et al. 2023).
- ``encoded`` / ``ensemble`` / ``influence``: encoded ensembles (Dai & Gifford 2023):
  balanced codes, the mean-ε ensemble, unit influence, counterfactual radius, top-k.
"""

from .compartments import (
    CompartmentAttribution,
    attribute_compartments,
    attribute_generation,
    compartment_posterior,
    read_image,
)
from .demo import demo_step
from .encoded import (
    EncodedPlan,
    balanced_codes,
    check_plan,
    load_ensemble,
    load_plan,
    make_plan,
    plan_units,
    train_encoded,
)
from .ensemble import EnsembleDenoiser
from .influence import UnitInfluence, attribute_units, first_order_influence, rank_agreement

__all__ = [
    "CompartmentAttribution",
    "EncodedPlan",
    "EnsembleDenoiser",
    "UnitInfluence",
    "attribute_compartments",
    "attribute_generation",
    "attribute_units",
    "balanced_codes",
    "check_plan",
    "compartment_posterior",
    "demo_step",
    "first_order_influence",
    "load_ensemble",
    "load_plan",
    "make_plan",
    "plan_units",
    "rank_agreement",
    "read_image",
    "train_encoded",
]
