"""Mixed precision: networks compute in float16/bfloat16, everything a KD method adds stays in float32.

Why this split: the teacher and student convolutions are where the time goes
and where half precision pays; the SVDs, the IPCA state, the KLDs and the
small modules are numerically delicate and cheap. `TappedNetwork.__call__`
casts every output to float32, and the distiller's modules are built outside
`precision_policy`, i.e. in float32. float16 additionally needs loss scaling
(`keras.optimizers.LossScaleOptimizer`); bfloat16 does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import tensorflow as tf

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {precision!r}")


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Layers built inside use `precision`'s policy; the previous global policy is restored after."""
    check_precision(precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def needs_loss_scaling(precision: str) -> bool:
    return precision == "mixed_float16"


def with_loss_scaling(optimizer: keras.optimizers.Optimizer, precision: str) -> keras.optimizers.Optimizer:
    """`optimizer`, wrapped in a dynamic loss scale under float16."""
    return keras.optimizers.LossScaleOptimizer(optimizer) if needs_loss_scaling(precision) else optimizer


def loss_for_gradients(
    optimizer: keras.optimizers.Optimizer, loss: tf.Tensor, precision: str, replicas: int
) -> tf.Tensor:
    """The loss the gradients are taken of: over the replicas (their gradients are summed), and times the
    dynamic loss scale under float16."""
    loss = loss / float(replicas) if replicas > 1 else loss
    return optimizer.scale_loss(loss) if needs_loss_scaling(precision) else loss
