"""Distillation inside `keras.Model.fit`: for users whose habits are Keras's (callbacks, `fit`, `evaluate`).

`DistillationModel(student, distiller)` is a `keras.Model` whose `train_step` is the loop's own step
(`iep.engine.trainer.distillation_gradients`: the student's cross-entropy, weight decay and the method's
terms, combined per variable by the method — IEP's norm-clipped gradient included), so `model.fit` takes
the same steps as `Trainer` on the same batches (tests/test_keras_fit.py checks it). The epoch the clip
schedule reads is set by `fit` itself at the start of every epoch.

When to use `Trainer` (or train.py) instead: methods with a pre-phase (IEP's module phase, FitNet, AB, FT,
FSP, MHGD, SRM), which `fit` has no place for; exact resume from checkpoints after an interruption;
epoch orders that are a pure function of (seed, epoch); run directories with config.json, TensorBoard and
SavedModel export. Here, checkpoints and logs are whatever callbacks you pass.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.engine.distiller import Distiller
from iep.engine.trainer import distillation_gradients
from iep.nets import TappedNetwork


class _EpochCounter(keras.callbacks.Callback):
    def __init__(self, epoch: tf.Variable):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(float(epoch))


class DistillationModel(keras.Model):
    """The student under `distiller`, trained by `fit` with the loop's step; `predict`/`evaluate` use the
    student's logits. `weight_decay` is the loop's (`--weight_decay`), on what the method decays."""

    def __init__(self, student: TappedNetwork, distiller: Distiller | None = None, weight_decay: float = 5e-4):
        super().__init__(name=f"{student.model.name}_distillation")
        self.distiller = distiller or Distiller()
        if self.distiller.pre_phases():
            names = [p.name for p in self.distiller.pre_phases()]
            raise ValueError(
                f"--distill={self.distiller.name} has pre-phases {names} that keras.Model.fit cannot run; train it "
                "with iep.engine.trainer.Trainer (or train.py), or build it without them (e.g. module_steps=0 once "
                "its modules are trained)"
            )
        self.student = student
        self.weight_decay = weight_decay
        self._decayed = self.distiller.decayed(student.model.trainable_variables)
        self._distill_variables = list(student.model.trainable_variables) + list(self.distiller.trainable_variables)
        self._epoch = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="distillation_epoch")
        # Means over the epoch (over every image: each batch weighs by its size), reset by Keras at every epoch
        # and evaluate(): the history, the progress bar and callbacks see the epoch's value, not the last batch's.
        train_names = (
            ("loss/total", "loss/cross_entropy", "loss/weight_decay", "accuracy/train")
            + tuple(f"loss/{n}" for n in self.distiller.loss_names)
            + tuple(f"distill/{n}" for n in self.distiller.metric_names)
        )
        self._train_means = {n: keras.metrics.Mean(name=n.replace("/", "_")) for n in train_names}
        self._test_means = {n: keras.metrics.Mean(name=n) for n in ("loss", "accuracy")}

    @property
    def metrics(self):
        return [*self._train_means.values(), *self._test_means.values()]

    def call(self, images, training: bool = False):
        return self.student.model(images, training=training)["logits"]

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the epoch counter the clip schedule reads."""
        return super().fit(*args, callbacks=[_EpochCounter(self._epoch), *(callbacks or [])], **kwargs)

    def train_step(self, data):
        images, labels = data[0], tf.reshape(tf.cast(data[1], tf.int32), [-1])  # [B] or [B, 1] labels
        grads, values = distillation_gradients(
            self.student,
            self.distiller,
            images,
            labels,
            self._distill_variables,
            self._decayed,
            self.weight_decay,
            self._epoch,
        )
        self.optimizer.apply_gradients(zip(grads, self._distill_variables, strict=True))
        return self._update(self._train_means, values, tf.shape(labels)[0])

    def test_step(self, data):
        images, labels = data[0], tf.reshape(tf.cast(data[1], tf.int32), [-1])  # [B] or [B, 1] labels
        logits = self(images, training=False)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        values = {"loss": loss, "accuracy": tf.reduce_mean(correct)}
        return self._update(self._test_means, values, tf.shape(labels)[0])

    @staticmethod
    def _update(means: dict, values: dict, batch_size) -> dict:
        weight = tf.cast(batch_size, tf.float32)
        for name, value in values.items():
            means[name].update_state(value, sample_weight=weight)
        return {m.name: m.result() for m in means.values()}
