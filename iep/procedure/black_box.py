"""Black-box knowledge (docs/methods.md §5): MHGD attention with the MPNN message as an extrinsic head.

Seven learned heads relate the samples of a batch between two sensing
points (G_h = K_h Q_hᵀ). In module training an estimator must rebuild the
later point's compressed PCs from the earlier one through those heads plus
the teacher's MPNN message (8th head), with random head drop; in transfer
the student matches softmax(tanh G) of the teacher by KL divergence.
Reference: IEPKT `nets/Distillation.py` at 746415b: lines 68-70, `Attention_knowledge` 159-171,
`Attention_head` 173-188, `Estimator` 190-213, `drop_head` 215-219.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.nets.layers import batch_norm, kernel_initializer
from iep.procedure.mpnn import dense_without_bias

HEADS = 8  # one of them is the extrinsic (MPNN message) slot


class MultiHeadGraph(keras.layers.Layer):
    def __init__(
        self,
        width_from: int,
        width_to: int,
        heads: int = HEADS,
        seed: int | None = None,
        extrinsic_head: bool = True,
        **kwargs,
    ):
        """`extrinsic_head=False` is plain MHGD: all `heads` are learned and `estimate` takes no extrinsic graph."""
        super().__init__(**kwargs)
        self.extrinsic_head = extrinsic_head
        self.learned_heads = heads - 1 if extrinsic_head else heads
        self.width_to = width_to
        self.head_width = (width_from + width_to) // 2
        units = self.head_width * self.learned_heads
        self.key_dense, self.key_bn = dense_without_bias(units, "key_dense"), batch_norm("key_bn")
        self.query_dense, self.query_bn = dense_without_bias(units, "query_dense"), batch_norm("query_bn")
        self.value_dense, self.value_bn = dense_without_bias(self.head_width, "value_dense"), batch_norm("value_bn")
        # IEPKT `nets/Distillation.py` `Estimator` 'fc1': the arg scope's fan-out kernel, an explicit zero bias.
        self.out_dense = keras.layers.Dense(
            width_to, kernel_initializer=kernel_initializer(), bias_initializer="zeros", name="out_dense"
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    def attention(self, x_from: tf.Tensor, x_to: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Logits G [heads−1, B, B]; the Dense output is read as [B, head_width, heads] as in the code."""
        batch = tf.shape(x_to)[0]
        keys = tf.reshape(self.key_bn(self.key_dense(x_to), training=training), [batch, self.head_width, -1])
        queries = tf.reshape(self.query_bn(self.query_dense(x_from), training=training), [batch, self.head_width, -1])
        return tf.einsum("idh,jdh->hij", keys, queries)

    def estimate(self, x_from: tf.Tensor, logits: tf.Tensor, extrinsic: tf.Tensor | None = None, training: bool = True):
        """Rebuilds the later point [B, width_to] (unit rows) from x_from through the heads (+ the extrinsic one)."""
        batch = tf.shape(x_from)[0]
        graphs = tf.nn.softmax(logits, axis=-1)
        if self.extrinsic_head:
            graphs = tf.concat([graphs, tf.stop_gradient(extrinsic)[None]], axis=0)
        heads = self.learned_heads + int(self.extrinsic_head)
        if training:
            noise = keras.random.normal([heads, batch, 1], seed=self.seed_generator)
            graphs = graphs * tf.cast(noise - tf.reduce_mean(noise, axis=0, keepdims=True) > 0, graphs.dtype)
        values = tf.nn.relu(self.value_bn(self.value_dense(x_from), training=training))
        gathered = tf.einsum("hij,jd->ihd", graphs, values)
        flat = tf.reshape(gathered, [batch, heads * self.head_width])
        return tf.math.l2_normalize(self.out_dense(flat), axis=-1)
