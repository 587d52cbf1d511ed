"""Attribution: which compartment and which training units a generated image drew on.

- ``compartments``: router weights along the trajectory, exact leave-one-compartment-out
  with the same noise, and a likelihood-proxy posterior for any image (Golatkar et al. 2023).
- ``encoded`` / ``ensemble`` / ``influence``: encoded ensembles (Dai & Gifford 2023):
  balanced codes, the mean-ε ensemble, unit influence, counterfactual radius, top-k;
  ``contrasts``: every sub-ensemble's exact loss from one Gram matrix (the signed contrast).
- ``gradient`` / ``gradient_units``: D-TRAK and TRAK (projected per-sample gradients) on a
  composed model, one compartment or an ensemble; ``lds``: the linear datamodeling score.
"""

from .compartments import (
    CompartmentAttribution,
    attribute_compartments,
    attribute_generation,
    compartment_posterior,
    read_image,
)
from .contrasts import loss_contrasts, member_gram, subset_losses
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
from .gradient import GradientAttribution
from .gradient_units import attribute_by_gradient, attribution_model
from .influence import UnitInfluence, attribute_units, first_order_influence, rank_agreement
from .lds import linear_datamodeling_score

__all__ = [
    "CompartmentAttribution",
    "EncodedPlan",
    "EnsembleDenoiser",
    "GradientAttribution",
    "UnitInfluence",
    "attribute_by_gradient",
    "attribute_compartments",
    "attribute_generation",
    "attribute_units",
    "attribution_model",
    "balanced_codes",
    "check_plan",
    "compartment_posterior",
    "first_order_influence",
    "linear_datamodeling_score",
    "load_ensemble",
    "load_plan",
    "loss_contrasts",
    "make_plan",
    "member_gram",
    "plan_units",
    "rank_agreement",
    "read_image",
    "subset_losses",
    "train_encoded",
]
