"""One in-memory batch of random images, a data set made of it, and the distiller whose step the step benchmarks
time against them.

Why a data set: a `Trainer` checks that its student's class count is the data's, so a 100-class step (CIFAR-100
shapes) needs 100-class data; the benchmarks time steps on one fixed batch, never the input pipeline.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.datasets.user_data import UserData
from iep.methods import build_distiller
from iep.nets import TappedNetwork


def synthetic_batch(batch_size: int, classes: int, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """(images [B, 32, 32, 3] uniform in [0, 255], labels [B]) as constant tensors."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, classes, batch_size).astype("int32")
    return tf.constant(images), tf.constant(labels)


def synthetic_data(batch_size: int, classes: int, seed: int = 0) -> UserData:
    """`synthetic_batch` as the data a `Trainer` is built on (`classes` class names, one batch of training)."""
    images, labels = synthetic_batch(batch_size, classes, seed)
    arrays = (images.numpy(), labels.numpy())
    return UserData(arrays, splits={"test": arrays}, class_names=[str(c) for c in range(classes)])


def timed_distiller(method: str, teacher: TappedNetwork, student: TappedNetwork, clip_terms: str) -> Distiller:
    """`method` for a timed main-phase step: no module phase (never part of a step), a fixed run size for the
    phases a reference times, and IEP's clip as given (`clip_terms`: the figures recorded say which)."""
    return build_distiller(
        method, teacher, student, module_steps=0, seed=0, main_steps=1000, epochs=100, clip_terms=clip_terms
    )
