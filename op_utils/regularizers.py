"""Weight decay as the original code applies it.

The original's `l2_regularizer(5e-4)` adds 5e-4 · ½‖W‖² per kernel, i.e. a
gradient of 5e-4 · W. It covers the kernels of convolutions (regular and
depthwise) and of dense layers only: no biases, no BN scale/offset, no
non-trainable statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import tensorflow as tf

DECAYED_VARIABLE_NAMES = ("kernel", "depthwise_kernel")  # Keras 3 names both "kernel"; Keras 2 did not


def decayed_variables(variables: Iterable[keras.Variable]) -> list[keras.Variable]:
    return [v for v in variables if v.trainable and v.name in DECAYED_VARIABLE_NAMES]


def l2_penalty(variables: Iterable[keras.Variable], weight_decay: float) -> tf.Tensor:
    """weight_decay · Σ ½‖W‖² over `variables` (zero for an empty list)."""
    variables = list(variables)
    if not variables or weight_decay == 0:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])
