"""Weight decay: 5e-4 · ½‖W‖² per decayed variable, i.e. a gradient of 5e-4 · W.

What is decayed is our choice, because the references disagree or are silent:
* IEPKT `train_w_distill.py` passes `weight_decay` to `op_util.Optimizer_w_IEP`,
  whose file is not published, and its `nets/WResNet.py` arg scopes set no
  regularizer: what IEP's own runs decayed cannot be read from its code;
* the author's TF1 benchmark `KD_methods_with_TF/nets/ResNet.py`
  (`ResNet_arg_scope`) regularizes conv and dense kernels, BN γ and β, and the
  classifier's bias;
* the author's TF2 code adds wd · v to the gradient of every variable it
  trains (e.g. `distiller/FT.py`, the paraphraser).
`decayed_variables` picks the kernels of convolutions (regular and depthwise)
and of dense layers only: no biases, no BN scale/offset, no non-trainable
statistics. Plain training and IEP use it (IEPKT's own choice cannot be read).
The baselines decay as their references do, every trained variable, through
`Distiller.decay_every_variable` (iep/core/distiller.py); FT's paraphraser
and SRM's initialization decay their own modules in their pre-phases.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import tensorflow as tf

DECAYED_VARIABLE_NAMES = ("kernel", "depthwise_kernel")  # Keras 3 names both "kernel"; Keras 2 did not


def decayed_variables(variables: Iterable[keras.Variable]) -> list[keras.Variable]:
    return [v for v in variables if v.trainable and v.name in DECAYED_VARIABLE_NAMES]


def l2_penalty(variables: Iterable[keras.Variable], weight_decay: float) -> tf.Tensor:
    """weight_decay · Σ ½‖W‖² over `variables` (zero for an empty list)."""
    variables = list(variables)
    if not variables or weight_decay == 0:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])
