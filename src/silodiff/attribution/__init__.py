"""Attribution: which compartment and which training units a generated image drew on.

- ``compartments``: router weights along the trajectory, exact leave-one-compartment-out
  with the same noise, and a likelihood-proxy posterior for any image (Golatkar et al. 2023).
- ``encoded`` / ``ensemble`` / ``influence``: encoded ensembles (Dai & Gifford 2023):
  balanced codes, the mean-ε ensemble, unit influence, counterfactual radius, top-k.
"""

from .compartments import CompartmentAttribution, attribute_compartments, attribute_generation, compartment_posterior, read_image
from .encoded import EncodedPlan, balanced_codes, check_plan, load_ensemble, load_plan, make_plan, plan_units, train_encoded
from .demo import demo_step
from .ensemble import EnsembleDenoiser
from .influence import UnitInfluence, attribute_units, first_order_influence, rank_agreement

__all__ = [
    "CompartmentAttribution", "attribute_compartments", "attribute_generation", "compartment_posterior", "read_image",
    "EncodedPlan", "balanced_codes", "check_plan", "load_ensemble", "load_plan", "make_plan", "plan_units", "train_encoded",
    "demo_step", "EnsembleDenoiser", "UnitInfluence", "attribute_units", "first_order_influence", "rank_agreement",
]
