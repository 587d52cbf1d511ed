"""Audit: quality (FLD), memorisation (NN ratio, IET-AGC ratio, replicates) and membership inference
(loss, PIA, SecMI); ``audit.report.run_audit`` writes the report (imported lazily: it needs compose)."""

from .frechet import FEATURE_NET, class_accuracy, feature_net, features, fld, frechet_distance
from .memorization import MemorizationAuditor, carlini_ratio, nearest_neighbours, nn_ratio
from .mia import ATTACKS, PIA, LossAttack, SecMI, evaluate_attack, make_attack, roc_points, run_attack

__all__ = [
    "FEATURE_NET", "class_accuracy", "feature_net", "features", "fld", "frechet_distance",
    "MemorizationAuditor", "carlini_ratio", "nearest_neighbours", "nn_ratio",
    "ATTACKS", "PIA", "LossAttack", "SecMI", "evaluate_attack", "make_attack", "roc_points", "run_attack",
]
