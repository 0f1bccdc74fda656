"""Layer factories shared by every network, so all nets follow docs/methods.md §7.

The original TF1 code sets these through `arg_scope`: variance-scaling fan-out
kernels, no conv bias, BN with momentum 0.9 and epsilon 1e-5, and a classifier
whose bias starts at zero. Keeping them in one place keeps the nets consistent.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def kernel_initializer() -> keras.initializers.Initializer:
    """TF1 `variance_scaling_initializer(factor=2, mode='FAN_OUT')` in Keras terms."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def conv(filters: int, kernel_size: int, strides: int = 1, name: str | None = None) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=kernel_initializer(),
        name=name,
    )


def depthwise_conv(kernel_size: int, strides: int = 1, name: str | None = None) -> keras.layers.DepthwiseConv2D:
    return keras.layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=kernel_initializer(),
        name=name,
    )


def batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def classifier(num_classes: int, name: str = "logits") -> keras.layers.Dense:
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer(),
        bias_initializer="zeros",
        name=name,
        dtype="float32",  # logits stay float32 under mixed precision
    )


def positive_std(std: Sequence[float], owner: str) -> list[float]:
    """The per-channel std as floats; a zero or negative one would divide every pixel by it, so `owner` refuses it."""
    values = [float(v) for v in std]
    if min(values) <= 0:
        raise ValueError(f"{owner}: std must be > 0 on every channel, got {values}")
    return values


@keras.saving.register_keras_serializable(package="iep")
class Standardize(keras.layers.Layer):
    """Per-channel (x - mean) / std inside the network.

    Why inside: the exported classifier then takes raw pixels in [0, 255] and
    carries its own statistics, and checkpoints restore them with the weights.
    The statistics are non-trainable variables, so neither the optimizer nor
    weight decay touches them.
    """

    def __init__(self, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self._init_mean = [float(v) for v in mean]
        self._init_std = positive_std(std, "Standardize")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels != len(self._init_mean):
            raise ValueError(f"Standardize: input has {channels} channels but statistics have {len(self._init_mean)}")
        self.mean = self.add_weight(
            name="mean",
            shape=(channels,),
            trainable=False,
            initializer=keras.initializers.Constant(np.asarray(self._init_mean, np.float32)),
        )
        self.std = self.add_weight(
            name="std",
            shape=(channels,),
            trainable=False,
            initializer=keras.initializers.Constant(np.asarray(self._init_std, np.float32)),
        )

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        return (x - keras.ops.cast(self.mean, self.compute_dtype)) / keras.ops.cast(self.std, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self._init_mean, "std": self._init_std}
