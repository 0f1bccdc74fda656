"""The message-passing network of IEP (docs/methods.md §4): how the embedding alters between two points.

Nodes are the samples of a batch. With X_F the compressed PCs at the earlier
point and X_B at the later one (width D): node term H_ij = X_B,i − X_B,j;
initial edges E⁰_ij = e_i ⊙ e_j · D with e = normalize(BN(Dense(X_F))); each
iteration adds a gated message M = BN(Dense(Z)) ⊙ σ(BN(Dense(Z))),
Z = [H, mean_k E]; weights are shared across iterations. Readout R = mean_k E.
Reference: IEPKT `nets/Distillation.py` at 746415b, `MPNN` lines 78-117 (called at lines 53-63).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.nets.layers import batch_norm, kernel_initializer


def dense_without_bias(units: int, name: str) -> keras.layers.Dense:
    """Module dense layer; no bias because BN follows (docs/methods.md §4).

    Initialized as IEPKT `nets/WResNet.py` (`WResNet_arg_scope`) sets every `fully_connected`, the modules'
    included: `variance_scaling_initializer(mode='FAN_OUT')` (factor 2, truncated normal), `biases_initializer=None`.
    """
    return keras.layers.Dense(units, use_bias=False, kernel_initializer=kernel_initializer(), name=name)


class MessagePassing(keras.layers.Layer):
    """MPNN for one pair of sensing points; returns (readout [B, B], messages [B, B, I·D])."""

    def __init__(self, width: int, iterations: int = 2, **kwargs):
        super().__init__(**kwargs)
        if iterations < 1:
            raise ValueError(f"MPNN iterations must be >= 1, got {iterations}")
        self.width, self.iterations = width, iterations
        self.edge_dense, self.edge_bn = dense_without_bias(width, "edge_dense"), batch_norm("edge_bn")
        self.message_dense, self.message_bn = dense_without_bias(width, "message_dense"), batch_norm("message_bn")
        self.gate_dense, self.gate_bn = dense_without_bias(width, "gate_dense"), batch_norm("gate_bn")

    def call(self, x_from: tf.Tensor, x_to: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        nodes = x_to[:, None, :] - x_to[None, :, :]
        e = tf.math.l2_normalize(self.edge_bn(self.edge_dense(x_from), training=training), axis=-1)
        edges = e[:, None, :] * e[None, :, :] * float(self.width)
        messages = []
        for _ in range(self.iterations):
            z = tf.concat([nodes, tf.reduce_mean(edges, axis=-1, keepdims=True)], axis=-1)
            gate = tf.sigmoid(self.gate_bn(self.gate_dense(z), training=training))
            message = self.message_bn(self.message_dense(z), training=training) * gate
            edges = edges + message
            messages.append(message)
        return tf.reduce_mean(edges, axis=-1), tf.concat(messages, axis=-1)
