"""Audit: quality (FLD), and later memorisation and membership inference."""

from .fld import FEATURE_NET, class_accuracy, feature_net, features, fld, frechet_distance

__all__ = ["FEATURE_NET", "class_accuracy", "feature_net", "features", "fld", "frechet_distance"]
