"""Memorisation defences: anti-gradient control and iterative ensemble training
(IET-AGC, Liu et al. ECCV 2024) and classifier-protected sampling (CPSample,
Kazdan et al. 2024).  METHODS.md §2 and §4."""

from .agc import AntiGradientControl, agc_hooks, skip_counts, top_skips
from .cpsample import (
    CPSampleDenoiser, bit_accuracy, fire_rate, guided_fraction, load_classifier, protect, protect_from_store, protection_bits,
    protection_loss, train_protection_classifier,
)
from .iet import average_weights, class_balanced_shards, iet_round, train_iet

__all__ = [
    "AntiGradientControl", "agc_hooks", "skip_counts", "top_skips", "CPSampleDenoiser", "bit_accuracy", "fire_rate", "guided_fraction", "load_classifier", "protect",
    "protect_from_store", "protection_bits", "protection_loss", "train_protection_classifier", "average_weights", "class_balanced_shards", "iet_round",
    "train_iet",
]
