"""ReviewKD — knowledge review (Chen, Liu, Zhao & Jia, CVPR 2021), as the authors' CIFAR code executes it.

Reference: `dvlab-research/ReviewKD` at 6607308, `CIFAR-100/model/reviewkd.py` (`ABF` lines 20-56, `mid_channel`
line 69, `ReviewKD.forward` lines 75-86, `build_review_kd`'s `wrn` branch lines 143-148, `hcl` lines 160-177);
`CIFAR-100/train.py` (`t_features[1:]` of `teacher(images, is_feat=True, preact=True)`; `losses['review_kd_loss']
= feature_kd_loss * min(1, epoch/args.kd_warm_up) * args.kd_loss_weight`, epoch from 0, `--kd-warm-up 20`; CE
weight 1; one SGD with weight decay over the student and the ABFs); `CIFAR-100/script/reviewKD.sh`:
`--kd-loss-weight 5.0` for the WRN pairs. mdistiller's `distillers/ReviewKD.py` is the same code.

* Levels: the student's raw stage outputs (the WRN's `feats` f1…f3: our `stage_outputs`) and its pooled
  feature as a 1×1 map (f4); the teacher's pre-activations (f1…f3 through the BN that reads them: our
  `preact_taps`) and its pooled feature.
* Review (deepest level first): an ABF per level — 1×1 conv to `mid` channels + BN; below the deepest level,
  the previous level's fused map, upsampled (nearest) to this level's size, is fused by attention:
  x·a₀ + y·a₁ with (a₀, a₁) = sigmoid(1×1 conv([x, y])); resized (nearest) to the teacher's size when it
  differs; then 3×3 conv to the teacher's channels + BN. `mid` = min(512, the student's last width).
* HCL per level: MSE of the maps plus the MSE of their adaptive average pools to 4×4, 2×2, 1×1 (each only
  when smaller than the map), weighted 1, ½, ¼, ⅛ and divided by the weights' sum; summed over the levels.
* Warm-up: by the one rule for reference clocks (`iep.methods.CLOCK_RULE`) a share of the run,
  `warmup_fraction` = 20/240 (their 20 of 240 epochs).

* The teacher (`teacher_mode`): `eval` (default) runs it in inference mode, as mdistiller's port does
  (`mdistiller/distillers/ReviewKD.py`: the teacher under `torch.no_grad()` after `teacher.eval()` in
  `Distiller.train`); `train` runs its BatchNorm on the batch's statistics (and moves its moving statistics,
  which nothing then reads) as the authors' `CIFAR-100/train.py` does, which never calls `teacher.eval()`.
  `train` changes the teacher object: its BN layers become trainable (no optimizer sees them; its outputs are
  outside the gradient).

Layers start as torch's would: the ABF convs `kaiming_uniform_(a=1)` (U(±√(3/fan_in))), the attention conv
torch's default (U(±1/√fan_in), bias too); BN as torch's (ε 1e-5, momentum 0.1).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from iep.baselines.repdistiller import pooled, torch_uniform
from iep.core.distiller import Distiller
from iep.core.seeds import seed_stream
from iep.nets import TappedNetwork

HCL_SIZES = (4, 2, 1)
TEACHER_MODES = ("eval", "train")


def nearest_resize(x: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """`F.interpolate(mode="nearest")`: source index floor(dst · in / out), for up- and downsampling alike."""
    for axis, (length, target) in enumerate(zip(x.shape[1:3], size, strict=True), start=1):
        if length != target:
            x = tf.gather(x, np.minimum(np.floor(np.arange(target) * (length / target)).astype(np.int64), length - 1),
                          axis=axis)  # fmt: skip
    return x


def adaptive_pool_matrix(length: int, size: int) -> np.ndarray:
    """[size, length]: row i averages torch's adaptive bin [floor(i·L/s), ceil((i+1)·L/s))."""
    matrix = np.zeros((size, length), np.float32)
    for i in range(size):
        start, end = (i * length) // size, -((-(i + 1) * length) // size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: tf.Tensor, size: int) -> tf.Tensor:
    rows, cols = adaptive_pool_matrix(x.shape[1], size), adaptive_pool_matrix(x.shape[2], size)
    return tf.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def hcl_loss(student_maps, teacher_maps) -> tf.Tensor:
    """Hierarchical context loss, summed over the levels (`hcl`)."""
    total = 0.0
    for fs, ft in zip(student_maps, teacher_maps, strict=True):
        loss, weight, weights = tf.reduce_mean(tf.square(fs - ft)), 1.0, 1.0
        for size in HCL_SIZES:
            if size >= fs.shape[1]:
                continue
            weight /= 2.0
            loss += weight * tf.reduce_mean(tf.square(adaptive_avg_pool(fs, size) - adaptive_avg_pool(ft, size)))
            weights += weight
        total += loss / weights
    return total


class AttentionBasedFusion(keras.layers.Layer):
    """One ABF: the student's level to `mid` channels, fused with the deeper level's, then to the teacher's."""

    def __init__(self, mid: int, out_channels: int, fuse: bool, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        seeds = seed_stream(seed)

        def kaiming() -> keras.initializers.Initializer:  # kaiming_uniform_(a=1), drawn anew for each conv
            return keras.initializers.VarianceScaling(1.0, "fan_in", "uniform", seed=next(seeds))

        self.conv1 = keras.layers.Conv2D(mid, 1, use_bias=False, kernel_initializer=kaiming(), name="conv1")
        self.bn1 = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn1")
        self.conv2 = keras.layers.Conv2D(out_channels, 3, padding="same", use_bias=False,
                                         kernel_initializer=kaiming(), name="conv2")  # fmt: skip
        self.bn2 = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn2")
        self.att_conv = None
        if fuse:
            bound = 1.0 / math.sqrt(2 * mid)
            self.att_conv = keras.layers.Conv2D(
                2,
                1,
                activation="sigmoid",
                kernel_initializer=torch_uniform(),
                bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=next(seeds)),
                name="att_conv",
            )

    def build(self, input_shape, out_size):
        h, w, channels = input_shape
        self.conv1.build((None, h, w, channels))
        self.bn1.build((None, h, w, self.conv1.filters))
        if self.att_conv is not None:
            self.att_conv.build((None, h, w, 2 * self.conv1.filters))
        self.conv2.build((None, *out_size, self.conv1.filters))
        self.bn2.build((None, *out_size, self.conv2.filters))
        self.built = True

    def call(self, x, residual=None, out_size=None, training=False):
        """Returns (this level's output, its fused map: the next level's residual)."""
        x = self.bn1(self.conv1(x), training=training)
        if self.att_conv is not None:
            residual = nearest_resize(residual, tuple(x.shape[1:3]))
            attention = self.att_conv(tf.concat([x, residual], axis=-1))
            x = x * attention[..., :1] + residual * attention[..., 1:]
        x = nearest_resize(x, out_size)
        return self.bn2(self.conv2(x), training=training), x


def _levels(outputs, maps_key: str) -> list[tf.Tensor]:
    maps = [tf.cast(m, tf.float32) for m in outputs[maps_key]]
    return [*maps, pooled(outputs["taps"][-1])[:, None, None, :]]


class ReviewKDDistiller(Distiller):
    name, loss_names = "reviewkd", ("reviewkd",)
    decay_every_variable = True  # train.py: one SGD(weight_decay=5e-4) over the student and the ABFs

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        epochs: int,
        weight: float = 5.0,
        warmup_fraction: float = 20 / 240,
        max_mid_channels: int = 512,
        teacher_mode: str = "eval",
        seed: int | None = None,
    ):
        super().__init__(teacher)
        if teacher_mode not in TEACHER_MODES:
            raise ValueError(f"option teacher_mode for reviewkd must be one of {TEACHER_MODES}, got {teacher_mode!r}")
        self.teacher_mode = teacher_mode
        if teacher_mode == "train":  # a frozen Keras BN ignores training=True: its layers must be trainable
            for layer in teacher.model._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = True
        if len(student.tap_specs) != len(teacher.tap_specs):
            raise ValueError(
                f"reviewkd pairs the levels one to one: the teacher has {len(teacher.tap_specs)} points, the "
                f"student {len(student.tap_specs)}"
            )
        if not (warmup_fraction >= 0.0 and math.isfinite(warmup_fraction)):
            raise ValueError(f"reviewkd warmup_fraction must be a finite number >= 0, got {warmup_fraction}")
        self.weight, self.warmup_epochs = weight, warmup_fraction * epochs
        last = student.tap_specs[-1].shape[-1]
        s_shapes = [s.shape for s in student.tap_specs] + [(1, 1, last)]
        t_shapes = [t.shape for t in teacher.tap_specs] + [(1, 1, teacher.tap_specs[-1].shape[-1])]
        mid = min(max_mid_channels, last)
        self.out_sizes = [tuple(t[:2]) for t in t_shapes]
        self.abfs = []
        seeds = seed_stream(seed)
        for i, (s, t) in enumerate(zip(s_shapes, t_shapes, strict=True)):
            abf = AttentionBasedFusion(
                mid, t[-1], fuse=i < len(s_shapes) - 1, seed=next(seeds), name=f"reviewkd_abf_{i}"
            )
            abf.build(s, tuple(t[:2]))
            self.abfs.append(abf)

    @property
    def trainable_variables(self):
        return [v for abf in self.abfs for v in abf.trainable_variables]

    def checkpointables(self):
        return {"reviewkd_abfs": self.abfs}

    def review(self, student_levels, training: bool = True) -> list[tf.Tensor]:
        """ReviewKD.forward: deepest level first, each fused with the review of the levels below it."""
        results, residual = [], None
        for level in reversed(range(len(student_levels))):
            abf = self.abfs[level]
            out, residual = abf(student_levels[level], residual=residual, out_size=self.out_sizes[level],
                                training=training)  # fmt: skip
            results.insert(0, out)
        return results

    def teacher_levels(self, images) -> list[tf.Tensor]:
        outputs = self.teacher(images, training=self.teacher_mode == "train")
        return [tf.stop_gradient(t) for t in _levels(outputs, "preact_taps")]

    def losses(self, images, labels, student_outputs, epoch):
        teacher_levels = self.teacher_levels(images)
        results = self.review(_levels(student_outputs, "stage_outputs"))
        warmup = max(self.warmup_epochs, 1e-9)
        ramp = tf.minimum(tf.cast(epoch, tf.float32) / warmup, 1.0) if self.warmup_epochs > 0 else 1.0
        return {"reviewkd": self.weight * ramp * hcl_loss(results, teacher_levels)}
