"""Stacked PCA (docs/methods.md §2–3): the teacher's embedding read as compressed principal components.

Per sensing point: a first PCA per sample (top singular triplet of the H·W×D
feature map, sign-fixed), a stereographic plane mapping of the right vector,
and a second PCA over the batch — incremental (IPCA, the default) with an EMA
mean kept as non-trainable state, or plain per-batch PCA (`mode="pca"`, the
ablation of the paper's Table 4). The student reuses the teacher's spatial
vectors and second-PCA basis (§3), so its compressed PCs live in the same space.
Reference: IEPKT `nets/Distillation.py` at 746415b: the teacher side lines 35-43 (`Plane_mapping` 7-12,
`PCA_Graph` 150-157, `Incremental_PCA` 119-148, `inter_cosine_sim` 14-17), the student side lines 45-51.

Our choice where the code is silent: in IPCA training steps the compressed PCs
use the state *after* this batch's update (the TF1 graph reads the variables
concurrently with their update ops, which is ordering-dependent).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from iep.op_utils.svd import truncated_svd

SECOND_PCA_MODES = ("ipca", "pca")
FIRST = "only_first_replica"  # under tf.distribute the IPCA state follows the first replica's batches
IPCA_RATE = 0.9  # weight of the new batch mean in the EMA (the code's "rate")


def plane_mapping(v: tf.Tensor) -> tf.Tensor:
    """Stereographic projection of unit vectors v [B, D]: (v + o)/cos²(θ/2) − 2o, o = 1/√D, θ = ∠(v, o).

    cos²(θ/2) = (1 + ⟨v, o⟩)/2 avoids arccos (and its infinite slope at ±1).
    """
    dim = v.shape[-1]
    center = tf.fill([1, dim], tf.cast(1.0 / np.sqrt(dim), v.dtype))
    half_cos_sq = (1.0 + tf.reduce_sum(v * center, axis=-1, keepdims=True)) / 2.0
    return (v + center) / tf.maximum(half_cos_sq, 1e-6) - 2.0 * center


def cosine_affinity(x: tf.Tensor) -> tf.Tensor:
    """[B, B] cosine similarities of the rows of x."""
    x = tf.math.l2_normalize(x, axis=-1)
    return tf.matmul(x, x, transpose_b=True)


def first_pca(feature_map: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Spatial vector u [B, H·W] and plane-mapped channel vector p [B, D] of each sample's top triplet."""
    _, u, v = truncated_svd(tf.cast(feature_map, tf.float32), 1)
    return u[..., 0], plane_mapping(v[..., 0])


def batch_pca(x: tf.Tensor, components: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mean [D], top singular values [c] and sign-fixed basis [D, c] of the rows of x [B, D]."""
    mean = tf.reduce_mean(x, axis=0)
    s, _, v = truncated_svd((x - mean)[None], components)
    return mean, s[0], v[0]


class StackedPCA(keras.layers.Layer):
    """SPCA of one sensing point; holds the IPCA state (mean, singular values, basis)."""

    def __init__(self, mode: str = "ipca", **kwargs):
        super().__init__(**kwargs)
        if mode not in SECOND_PCA_MODES:
            raise ValueError(f"second PCA mode must be one of {SECOND_PCA_MODES}, got {mode!r}")
        self.mode = mode

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels < 2:
            raise ValueError(f"SPCA needs at least 2 channels at a sensing point, got shape {input_shape}")
        self.channels, self.components = channels, channels // 2
        zeros = keras.initializers.Zeros()
        self.state_mean = self.add_weight(
            name="ipca_mean", shape=(channels,), initializer=zeros, trainable=False, aggregation=FIRST
        )
        self.state_singular_values = self.add_weight(
            name="ipca_singular_values", shape=(self.components,), initializer=zeros, trainable=False, aggregation=FIRST
        )
        self.state_basis = self.add_weight(
            name="ipca_basis", shape=(channels, self.components), initializer=zeros, trainable=False, aggregation=FIRST
        )

    def ipca_update(self, x: tf.Tensor) -> None:
        """One IPCA step on mapped vectors x [B, D] (§2 step 4); no gradient reaches the state."""
        x = tf.stop_gradient(x)
        batch_mean = tf.reduce_mean(x, axis=0)
        scaled_basis = tf.transpose(self.state_basis * self.state_singular_values[None, :])
        fresh = tf.equal(tf.reduce_sum(tf.abs(scaled_basis)), 0.0)
        old_mean = tf.where(fresh, batch_mean, tf.convert_to_tensor(self.state_mean))
        rows = tf.concat([x - batch_mean, scaled_basis, (old_mean - batch_mean)[None]], axis=0)
        s, _, v = truncated_svd(rows[None], self.components)
        self.state_basis.assign(v[0])
        self.state_singular_values.assign(s[0])
        self.state_mean.assign((1.0 - IPCA_RATE) * self.state_mean + IPCA_RATE * batch_mean)

    def second_pca(self, x: tf.Tensor, update: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean, basis) to compress with: the IPCA state (updated first if `update`) or this batch's PCA."""
        if self.mode == "pca":
            mean, _, basis = batch_pca(tf.stop_gradient(x), self.components)
            return mean, basis
        if update:
            self.ipca_update(x)
        return tf.convert_to_tensor(self.state_mean), tf.convert_to_tensor(self.state_basis)

    def call(self, feature_map: tf.Tensor, update: bool = False) -> dict[str, tf.Tensor]:
        """Teacher side: u [B, HW], compressed PCs c [B, D/2], affinity [B, B], and the (mean, basis) used."""
        feature_map = tf.stop_gradient(feature_map)
        if self.mode == "pca" and feature_map.shape[0] is not None and feature_map.shape[0] < self.components:
            raise ValueError(
                f"second_pca=pca needs a batch of at least D/2 = {self.components} samples at this sensing point"
            )
        u, p = first_pca(feature_map)
        mean, basis = self.second_pca(p, update)
        compressed = tf.matmul(p - mean, basis)
        return {"u": u, "c": compressed, "affinity": cosine_affinity(compressed), "mean": mean, "basis": basis}


def project_student(feature_map: tf.Tensor, teacher_u: tf.Tensor, mean: tf.Tensor, basis: tf.Tensor) -> tf.Tensor:
    """Student compressed PCs through the teacher's spatial vectors and second PCA (§3); differentiable."""
    b, h, w, d = (tf.shape(feature_map)[0], feature_map.shape[1], feature_map.shape[2], feature_map.shape[3])
    flat = tf.reshape(tf.cast(feature_map, tf.float32), [b, h * w, d])
    v = tf.math.l2_normalize(tf.einsum("bnd,bn->bd", flat, tf.stop_gradient(teacher_u)), axis=-1)
    return tf.matmul(plane_mapping(v) - tf.stop_gradient(mean), tf.stop_gradient(basis))
