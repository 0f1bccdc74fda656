"""Offline-first image data: tfds, TFRecord folders, image folders and a built-in set.

Note: this top-level package is named `datasets` by the project layout; it
shadows Hugging Face's `datasets` package inside this project.
"""

from iep.datasets.pipeline import DataConfig, ImagePipeline, build_pipeline
from iep.datasets.sampling import stratified_indices
from iep.datasets.sources import DataError, ImageSource, load_source

__all__ = [
    "DataConfig",
    "DataError",
    "ImagePipeline",
    "ImageSource",
    "build_pipeline",
    "load_source",
    "stratified_indices",
]
