"""Adapters for students whose sensing points differ from the teacher's (docs/methods.md §8).

Our design (the published code has none; the paper's Table 3 needs them):
bring a student tap to the teacher tap's H×W by resizing (bilinear, antialiased
when shrinking so every student pixel contributes, as area averaging would; TF's
area resize has no gradient) and to its channel count by a 1×1
convolution + BN. Adapters are trained with the student in the transfer phase
by the distillation gradient alone (they have no task gradient, so the norm
clip, which is relative to the task gradient, does not apply to them).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.nets import layers as L


class TapAdapter(keras.layers.Layer):
    def __init__(
        self,
        source_shape: tuple[int, int, int],
        target_shape: tuple[int, int, int],
        always_project: bool = False,
        **kwargs,
    ):
        """`always_project`: keep the 1×1 conv + BN even at equal widths (FitNet/AB/CO connectors)."""
        super().__init__(**kwargs)
        (sh, sw, sc), (th, tw, tc) = source_shape, target_shape
        # tf.image.resize, not keras.layers.Resizing: Keras 3.6 (our lowest) has no `antialias` argument there.
        self.resize = (th, tw) if (sh, sw) != (th, tw) else None
        self.antialias = sh * sw > th * tw
        self.project = None
        if sc != tc or always_project:
            self.project = L.conv(tc, 1, name="project")
            self.project_bn = L.batch_norm("project_bn")

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        if self.resize is not None:
            x = tf.cast(tf.image.resize(x, self.resize, "bilinear", antialias=self.antialias), x.dtype)
        if self.project is not None:
            x = self.project_bn(self.project(x), training=training)
        return x


def needs_adapter(source_shape, target_shape) -> bool:
    return tuple(source_shape) != tuple(target_shape)
