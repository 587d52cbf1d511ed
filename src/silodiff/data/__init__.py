"""Data: one dataset type (``SampleSet``) and loaders that produce it."""

from .chunked import CHUNK_SIZE, ChunkBatches, ChunkedSamples
from .dataset import SampleSet, sample_id, to_uint8, to_unit_range
from .loaders import (load_dataset, load_digits, load_fashion_mnist, load_idx, load_image_folder, read_idx,
                      stream_dataset, stream_image_folder)
from .sources import assign_sources

__all__ = [
    "CHUNK_SIZE", "ChunkBatches", "ChunkedSamples", "SampleSet", "sample_id", "to_uint8", "to_unit_range", "load_dataset", "load_digits",
    "load_fashion_mnist", "load_idx", "load_image_folder", "read_idx", "assign_sources", "stream_dataset", "stream_image_folder",
]
