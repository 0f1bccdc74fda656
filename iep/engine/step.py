"""The one definition of a training step (`Trainer` and `DistillationModel` both take it) and the running
means the loop logs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from iep.core.distiller import Distiller
from iep.nets import TappedNetwork
from iep.op_utils import l2_penalty


def distillation_gradients(
    student: TappedNetwork,
    distiller: Distiller,
    images: tf.Tensor,
    labels: tf.Tensor,
    variables: Sequence[tf.Variable],
    decayed: Sequence[tf.Variable],
    weight_decay: float,
    epoch: tf.Variable,
    scale: Callable[[tf.Tensor], tf.Tensor] | None = None,
    extras: Mapping[str, tf.Tensor] | None = None,
) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
    """One step's gradient per variable and its logged values: the student's cross-entropy (times the method's
    weight), weight decay and the method's terms, combined by `distiller.gradients` (IEP: norm-clipped).

    The one definition of a training step: `Trainer` and `iep.keras_fit.DistillationModel` both call it.
    `scale` maps each loss before differentiation (replica averaging, loss scaling); `extras` (the batch's
    `distiller.batch_extras`: image indices, a strong view) reach its `losses` by name.
    """
    scale = scale or (lambda loss: loss)
    with tf.GradientTape(persistent=distiller.separate_gradients) as tape:
        outputs = student(images, training=True)
        logits = outputs["logits"]
        cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        decay = l2_penalty(decayed, weight_decay)
        terms = distiller.losses(images, labels, outputs, epoch, **(extras or {}))
        distill = tf.add_n(list(terms.values())) if terms else tf.constant(0.0)
        cross_entropy = tf.debugging.check_numerics(cross_entropy, "cross-entropy loss")
        distill = tf.debugging.check_numerics(distill, "distillation loss")
        task = distiller.cross_entropy_weight * cross_entropy
        scaled = [scale(x) for x in (task, decay, distill)]
        per_term = {"terms": {k: scale(v) for k, v in terms.items()}} if distiller.gradient_reads_terms else {}
    grads = distiller.gradients(tape, *scaled, variables, epoch, **per_term)
    correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
    values = {
        "loss/total": task + decay + distill,
        "loss/cross_entropy": cross_entropy,
        "loss/weight_decay": decay,
        "accuracy/train": correct,
    }
    values.update({f"loss/{k}": v for k, v in terms.items()})
    values.update({f"distill/{k}": v for k, v in distiller.step_metrics().items()})
    return grads, values


class RunningMeans:
    """Sums and counts kept in variables so the step never syncs with Python.

    Not `keras.metrics.Mean` per name, on purpose: one shared count for all terms, float64 sums (an epoch of
    a long run adds thousands of float32 values per name), and replica-local variables that a read sums
    over the replicas of a tf.distribute strategy (tests/test_distribute.py checks the logged means).
    """

    def __init__(self, names: Sequence[str], prefix: str = ""):
        self.names, self.prefix = tuple(names), prefix

        # Like Keras metrics: under tf.distribute each replica adds to its own copy; reading sums the copies.
        def variable():
            return tf.Variable(
                0.0,
                trainable=False,
                dtype=tf.float64,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

        self.sums = {n: variable() for n in self.names}
        self.count = variable()

    def add(self, values: dict[str, tf.Tensor]) -> None:
        for name in self.names:
            self.sums[name].assign_add(tf.cast(values[name], tf.float64))
        self.count.assign_add(1.0)

    def read_and_reset(self) -> dict[str, float]:
        count = max(float(self.count.numpy()), 1.0)
        means = {n: float(v.numpy()) / count for n, v in self.sums.items()}
        for v in self.sums.values():
            v.assign(0.0)
        self.count.assign(0.0)
        return means


def logged_names(distiller: Distiller) -> tuple[str, ...]:
    """The values a step logs: the totals, each of the method's terms and its diagnostics."""
    return (
        ("loss/total", "loss/cross_entropy", "loss/weight_decay", "accuracy/train")
        + tuple(f"loss/{n}" for n in distiller.loss_names)
        + tuple(f"distill/{n}" for n in distiller.metric_names)
    )
