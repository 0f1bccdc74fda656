"""Loss terms shared by IEP and the author's other methods (MHGD): the row-summed KLD, the estimator's cosine
loss and the module decay (docs/methods.md §6; KLD is a sum over rows, as in the original code)."""

from __future__ import annotations

from collections.abc import Iterable

import tensorflow as tf

MODULE_WEIGHT_DECAY = 5e-4  # the author's decay of learned modules (MPNN, attention heads): 5e-4 · Σ‖v‖²


def kld(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Σ_rows Σ_j softmax(x)_j (log_softmax(x)_j − log_softmax(y)_j): KL(softmax x ‖ softmax y) summed over rows."""
    return tf.reduce_sum(tf.nn.softmax(x) * (tf.nn.log_softmax(x) - tf.nn.log_softmax(y)))


def estimator_loss(target: tf.Tensor, estimate: tf.Tensor) -> tf.Tensor:
    """mean(1 − ⟨C_B, estimate⟩) of an attention estimator (MHGD's, IEP+BB's black box)."""
    return tf.reduce_mean(1.0 - tf.reduce_sum(target * estimate, axis=-1))


def module_l2(variables: Iterable[tf.Variable], weight: float = MODULE_WEIGHT_DECAY) -> tf.Tensor:
    """weight · Σ‖v‖² over a module's trainable variables (the author's MHGD module decay, no ½)."""
    variables = list(variables)
    if not variables:
        return tf.constant(0.0)
    return weight * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
