"""One in-memory batch of random images, and a data set made of it: what the step benchmarks time against.

Why a data set: a `Trainer` checks that its student's class count is the data's, so a 100-class step (CIFAR-100
shapes) needs 100-class data; the benchmarks time steps on one fixed batch, never the input pipeline.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from iep.datasets.user_data import UserData


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
