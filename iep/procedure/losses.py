"""IEP loss terms (docs/methods.md §6). The ones MHGD shares live in `iep.op_utils.losses`.

Reference: IEPKT `nets/Distillation.py` at 746415b: `kld_loss` lines 221-223; the message L1 line 65, the
readouts' KLD line 66, phase 1's KLD line 59 and estimator loss line 167.
"""

from __future__ import annotations

import tensorflow as tf

from iep.op_utils.losses import estimator_loss, kld, module_l2

__all__ = ["estimator_loss", "kld", "message_l1", "module_l2"]


def message_l1(student_messages: tf.Tensor, teacher_messages: tf.Tensor) -> tf.Tensor:
    """mean_ij Σ_k |M_S − M_T| (alteration knowledge)."""
    return tf.reduce_mean(tf.reduce_sum(tf.abs(student_messages - teacher_messages), axis=-1))
