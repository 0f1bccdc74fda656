"""Semantic vectors of neurons (after Han, Wang, Böhm & Shao, "An Interpretable Neuron Embedding for Static
Knowledge Distillation", arXiv 2211.07647). No public code exists: every choice here is our design.

Each channel ("neuron") of a sensing point gets a vector in R^d. Two neurons that respond to the same images
should have similar vectors, so the vectors are trained to make their cosine similarities equal the
neurons' activation similarities:

* activation similarity of a batch, S_act [C, C]: the Pearson correlation, across the batch's images, of
  the channels' spatially averaged responses (spatial averaging makes points of any H×W comparable and
  the statistic cheap; correlation ignores each channel's scale and offset, which BN and ReLU set
  arbitrarily). A channel constant over the batch (dead) correlates 0 with every other.
* semantic similarity S_sem [C, C]: the cosine similarity of the vectors; same range [−1, 1] as S_act.
* alignment loss: the mean squared difference of the off-diagonal entries, MSE(S_sem, S_act). We chose
  MSE of cosines over a KL of row softmaxes because both matrices already live on [−1, 1] (no temperature
  to tune) and a negative correlation (two neurons that exclude each other) is knowledge too, which a
  softmax would flatten.
* alignment score of a trained set of vectors: the Pearson correlation between the off-diagonal entries
  of S_sem and of S_act averaged over a whole split (1 = the vectors reproduce the neurons' relations).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_EPS = 1e-6


def channel_similarity(features: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] or [B, C] → [C, C] Pearson correlation of the channels' (spatially pooled) responses."""
    x = tf.cast(features, tf.float32)
    if x.shape.rank == 4:
        x = tf.reduce_mean(x, axis=[1, 2])
    x = x - tf.reduce_mean(x, axis=0, keepdims=True)
    norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=0, keepdims=True))
    x = x / tf.maximum(norm, _EPS)
    return tf.matmul(x, x, transpose_a=True)


def vector_similarity(vectors: tf.Tensor) -> tf.Tensor:
    """[C, d] → [C, C] cosine similarity of the semantic vectors."""
    v = tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1, epsilon=_EPS)
    return tf.matmul(v, v, transpose_b=True)


def alignment_loss(semantic: tf.Tensor, activation: tf.Tensor) -> tf.Tensor:
    """Mean squared difference of the off-diagonal entries of two [C, C] similarity matrices."""
    c = tf.shape(semantic)[0]
    off_diagonal = 1.0 - tf.eye(c)
    squared = tf.square(semantic - activation) * off_diagonal
    return tf.reduce_sum(squared) / tf.maximum(tf.reduce_sum(off_diagonal), 1.0)


def alignment_score(semantic: np.ndarray, activation: np.ndarray) -> float:
    """Pearson correlation of the off-diagonal entries of S_sem and (split-averaged) S_act."""
    mask = ~np.eye(len(semantic), dtype=bool)
    a, b = np.asarray(semantic)[mask], np.asarray(activation)[mask]
    if a.std() < _EPS or b.std() < _EPS:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def init_vectors(channels: int, dim: int, seed: int, name: str) -> tf.Variable:
    """Random unit-scale vectors (nearly orthogonal for d ≫ 1: no relation assumed before training)."""
    rng = np.random.default_rng(seed)
    return tf.Variable(rng.normal(size=(channels, dim)).astype(np.float32) / np.sqrt(dim), name=name)
