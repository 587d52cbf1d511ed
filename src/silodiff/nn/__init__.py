"""Networks: denoisers behind one contract, and classifiers."""

from .classifiers import FeatureCNN, NoisyClassifier, RouterHeads
from .denoisers import Denoiser, MLPDenoiser, UNetDenoiser, default_denoiser

__all__ = ["Denoiser", "MLPDenoiser", "UNetDenoiser", "default_denoiser", "NoisyClassifier", "RouterHeads",
           "FeatureCNN"]
