"""Distillation inside `keras.Model.fit`: for users whose habits are Keras's (callbacks, `fit`, `evaluate`).

`DistillationModel(student, distiller)` is a `keras.Model` whose `train_step` is the loop's own step
(`iep.engine.trainer.distillation_gradients`: the student's cross-entropy, weight decay and the method's
terms, combined per variable by the method — IEP's norm-clipped gradient included), so `model.fit` takes
the same steps as `Trainer` on the same batches (tests/test_keras_fit.py checks it). The epoch the clip
schedule reads is set by `fit` itself at the start of every epoch. Methods that read more than the batch
(`Distiller.batch_extras`: CRD the images' indices, MLKD a strong view) fit on (images, labels, *extras)
batches: `UserData.train_dataset(epoch, batch_size, seed, extras=distiller.batch_extras)`.

Methods with pre-phases (IEP's module phase, FitNet, AB, FT, FSP, MHGD, SRM) run them first, inside `fit`
(or by `fit_pre_phases` beforehand), with the trainer's stage optimizers and steps
(`iep.engine.stages`); given a `UserData`/`ImagePipeline` they draw the trainer's own batches, so the
weights after them are the trainer's.

The model is built when constructed: `save_weights`/`load_weights`, `keras.callbacks.ModelCheckpoint(
save_weights_only=True)` and `keras.callbacks.BackupAndRestore` keep the whole training state — the student,
the method's modules and state (raw `tf.Variable`s such as CRD's memory too), the optimizers, the epoch the clip
schedule reads and whether the pre-phases ran (a restored run does not repeat them).

When to use `Trainer` (or train.py) instead: resume that reproduces the uninterrupted run step for step; epoch
orders that are a pure function of (seed, epoch); run directories with config.json, TensorBoard and
SavedModel export. Here, checkpoints and logs are whatever callbacks you pass.
"""

from __future__ import annotations

import math
import numbers
import os
import types
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.core.fields import check_numbers
from iep.core.registry import check_built_for
from iep.core.tracing import traced
from iep.datasets.sources import DataError
from iep.datasets.user_data import UserData, class_indices, pixel_scale_problem, refuse_non_finite
from iep.engine.stages import PRE_PHASE_EPOCH_OFFSET, stage_optimizer, stage_passes, stage_step, steps_in_pass
from iep.engine.step import distillation_gradients, logged_names
from iep.nets import TappedNetwork, check_tapped, image_shape_problem

BATCH_SIZE_RANGE = {"batch_size": (lambda v: v >= 1, ">= 1")}


class _EpochCounter(keras.callbacks.Callback):
    def __init__(self, epoch: tf.Variable):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(float(epoch))


class _PrePhases(keras.callbacks.Callback):
    """Runs the method's pre-phases at the start of `fit`, after every other callback's `on_train_begin`: a
    `BackupAndRestore` given to fit has restored the state by then, pre-phases done included."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_train_begin(self, logs=None):
        self.run()


def _compiled_stage_step(phase, optimizer):
    variables = list(phase.variables)
    return traced(lambda images, labels: stage_step(phase, optimizer, variables, images, labels))


class DistillationModel(keras.Model):
    """The student under `distiller`, trained by `fit` with the loop's step; `predict`/`evaluate` use the
    student's logits. `weight_decay` is the loop's (`--weight_decay`), on what the method decays."""

    def __init__(self, student: TappedNetwork, distiller: Distiller | None = None, weight_decay: float = 5e-4):
        check_tapped(student, "student")
        if distiller is not None and not isinstance(distiller, Distiller):  # a name needs its teacher and steps
            method = repr(distiller) if isinstance(distiller, str) else "'kd'"
            raise TypeError(
                f"distiller must be a Distiller, e.g. iep.build_distiller({method}, teacher, student); "
                f"got {type(distiller).__name__}"
            )
        check_built_for(distiller, student)  # its adapters fit the points of the student it was built for
        decay = weight_decay
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay < math.inf:
            raise ValueError(f"weight_decay must be a finite number >= 0 (e.g. 5e-4), got {weight_decay!r}")
        super().__init__(name=f"{student.model.name}_distillation")
        self.distiller = distiller or Distiller()
        self._stages = [(phase, stage_optimizer(phase)) for phase in self.distiller.pre_phases()]
        for phase, optimizer in self._stages:
            optimizer.build(list(phase.variables))
        # A variable, not a bool: saved with the weights, so a restored model does not run its pre-phases again.
        self._pre_phases_ran = tf.Variable(not self._stages, trainable=False, name="pre_phases_done")
        self.student = student
        self.weight_decay = weight_decay
        self._decayed = self.distiller.decayed(student.model.trainable_variables)
        self._distill_variables = list(student.model.trainable_variables) + list(self.distiller.trainable_variables)
        self._epoch = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="distillation_epoch")
        # Means over the epoch (over every image: each batch weighs by its size), reset by Keras at every epoch
        # and evaluate(): the history, the progress bar and callbacks see the epoch's value, not the last batch's.
        self._train_means = {n: keras.metrics.Mean(name=n.replace("/", "_")) for n in logged_names(self.distiller)}
        self._test_means = {n: keras.metrics.Mean(name=n) for n in ("loss", "accuracy")}
        self.built = True  # every variable exists already (the student's, the method's): saving works before fit

    def compile(self, *args, **kwargs) -> None:
        """`keras.Model.compile`, with the optimizer built on what the step updates, so that `load_weights`
        restores its state (momenta) before the first fit too."""
        super().compile(*args, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def pre_phases_done(self) -> bool:
        return bool(self._pre_phases_ran.numpy())

    @pre_phases_done.setter
    def pre_phases_done(self, done: bool) -> None:
        self._pre_phases_ran.assign(bool(done))

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*self._train_means.values(), *self._test_means.values()]

    @property
    def trainable_variables(self) -> list:
        """What the step updates (the student's and the method's modules): Keras builds the optimizer on these."""
        return list(self._distill_variables)

    # -- the training state, for save_weights / ModelCheckpoint / BackupAndRestore ----------------------------
    def _state_variables(self) -> list:
        """Every variable training changes that Keras's walk of this model cannot see (the student and the
        method are not layers of it): the student's, the method's checkpointables (modules and raw tf.Variables),
        the epoch counter and the pre-phase flag. Optimizers and metrics Keras saves itself."""
        items = tf.nest.flatten([self.student.model, list(self.distiller.checkpointables().values())])
        variables, seen = [], set()
        for item in [*items, self._epoch, self._pre_phases_ran]:
            for variable in item.variables if isinstance(item, keras.layers.Layer) else [item]:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        return variables

    def save_own_variables(self, store) -> None:
        for index, variable in enumerate(self._state_variables()):
            store[str(index)] = np.asarray(variable.numpy())

    def load_own_variables(self, store) -> None:
        variables = self._state_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"{self.name}: the weights file holds {len(store.keys())} state variables, this model has "
                f"{len(variables)}: it was saved from another student or method ({self.distiller.name})"
            )
        for index, variable in enumerate(variables):
            value = np.asarray(store[str(index)])
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{self.name}: state variable {index} ({variable.name}) has shape {tuple(variable.shape)}, "
                    f"the weights file's has {tuple(value.shape)}: it was saved from another student or method"
                )
            variable.assign(value)

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.student.model(images, training=training)["logits"]

    def save(self, filepath: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Saves the student's classifier (raw pixels → logits, with Keras's own layers only: loads with a plain
        `keras.saving.load_model`), the model one deploys; the teacher and the method's modules are training
        state (`save_weights` / `keras.callbacks.ModelCheckpoint(save_weights_only=True)` keep them)."""
        from iep.engine.mobile_export import with_builtin_layers

        return with_builtin_layers(self.student.classifier).save(filepath, *args, **kwargs)

    # -- the data's check, before any step is traced ---------------------------------------------------------
    def _student_mean(self) -> list[float] | None:
        layer = next((layer for layer in self.student.model.layers if layer.name == "standardize"), None)
        return None if layer is None else [float(v) for v in np.asarray(layer.mean).reshape(-1)]

    def _checked(self, x, y, where: str, labelled: bool = True):
        """(x, y) as the step reads them, or a DataError naming `where` and what was expected: pixels on the
        student's scale and finite, labels that are class indices below the class count; one-hot rows become indices.
        Arrays are checked whole; a `tf.data.Dataset` by its element spec only, since reading a batch ahead
        would advance its random augmentation (fit would then see other batches than it was given)."""
        classes = self.student.num_classes
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            images = spec[0] if isinstance(spec, (tuple, list)) else spec
            if isinstance(images, tf.TensorSpec) and images.shape.rank == 4:
                self._check_image_shape(images.shape[1:], where)
            labels = spec[1] if isinstance(spec, (tuple, list)) and len(spec) > 1 else None
            if labelled and isinstance(labels, tf.TensorSpec) and labels.shape.rank == 2 and labels.shape[-1] != 1:
                if labels.shape[-1] != classes:
                    raise DataError(f"{where} labels: one-hot rows of {labels.shape[-1]} classes, but the student "
                                    f"has {classes}")  # fmt: skip
                x = x.map(lambda *b: (b[0], tf.argmax(b[1], -1, output_type=tf.int32), *b[2:]))  # indices
            return x, y
        images = None if x is None else np.asarray(x)  # converted once (x may be a list)
        if images is not None:
            self._check_image_shape(images.shape[1:], where)
        if images is not None and (problem := pixel_scale_problem(images[:256], self._student_mean())):
            raise DataError(f"{where} x: {problem}")
        if images is not None and images.dtype.kind == "f":
            finite = np.isfinite(images.reshape(len(images), -1)).all(1)
            refuse_non_finite(int((~finite).sum()), len(images), f"{where} x")
        if labelled and y is not None:
            y = class_indices(y, f"{where} y", classes)
            if images is not None and len(y) != len(images):
                raise DataError(f"{where}: x holds {len(images)} images but y {len(y)} labels; expected one label each")
        return x, y

    def _check_image_shape(self, shape, where: str) -> None:
        if problem := image_shape_problem(self.student, shape):
            raise DataError(f"{where} x: {problem}")

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        x, y = self._checked(x, y, "evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        x, _ = self._checked(x, None, "predict", labelled=False)
        return super().predict(x, *args, **kwargs)

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        *args: Any,
        callbacks: list[keras.callbacks.Callback] | None = None,
        pre_phase_data: Any = None,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        """`keras.Model.fit`, with the epoch counter the clip schedule reads; the method's pre-phases first, once
        (on `pre_phase_data`, default the data given to fit: see `fit_pre_phases`)."""
        self._check_extras(x, y)
        x, y = self._checked(x, y, "fit")
        if isinstance(x, tf.data.Dataset):  # shuffled by its own pipeline: Keras would warn it ignores shuffle=True
            kwargs.setdefault("shuffle", False)

        def pre_phases():
            if self.pre_phases_done:  # none, run before, or restored by a BackupAndRestore
                return
            source = pre_phase_data if pre_phase_data is not None else x
            if y is not None and pre_phase_data is None:  # arrays: the loop's seeded order over them
                source = UserData((x, y), augment_images=False)
            self.fit_pre_phases(source, batch_size=kwargs.get("batch_size") or 32, verbose=kwargs.get("verbose", 1))

        callbacks = [_EpochCounter(self._epoch), *(callbacks or []), _PrePhases(pre_phases)]
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def fit_pre_phases(self, data, batch_size: int | None = None, seed: int = 0, verbose: int = 1) -> None:
        """Runs the method's pre-phases as `Trainer` does: stage by stage, each with its own optimizer, in passes
        of one epoch's steps, a stage's last pass cut at its `steps`.

        `data`: a `UserData` or `ImagePipeline` (with `batch_size`: the trainer's own batches for `seed`, so the
        weights after this equal the trainer's), or a `tf.data.Dataset` of (images, labels) batches, one pass
        per iteration of it.
        """
        if hasattr(data, "train_dataset"):
            if batch_size is None:
                raise ValueError("fit_pre_phases: give batch_size with a UserData / ImagePipeline")
            check_numbers("fit_pre_phases", types.SimpleNamespace(batch_size=batch_size), BATCH_SIZE_RANGE,
                          integers=("batch_size",))  # fmt: skip
            steps_per_pass = data.steps_per_epoch(batch_size)

            def batches(index):
                return data.train_dataset(PRE_PHASE_EPOCH_OFFSET + index, batch_size, seed)

        elif isinstance(data, tf.data.Dataset):
            steps_per_pass = int(data.cardinality())
            if steps_per_pass <= 0:
                raise ValueError("fit_pre_phases: the dataset's length is unknown or infinite; give a finite one")

            def batches(index):
                return data

        else:
            raise ValueError(f"fit_pre_phases takes a UserData, an ImagePipeline or a tf.data.Dataset; got {data!r}")
        index = 0
        for phase, optimizer in self._stages:
            step = _compiled_stage_step(phase, optimizer)
            passes = stage_passes(phase, steps_per_pass)
            for local in range(passes):
                for batch in batches(index).take(steps_in_pass(phase, local, steps_per_pass)):
                    values = step(batch[0], tf.reshape(tf.cast(batch[1], tf.int32), [-1]))
                index += 1
                if verbose:  # a pre-phase can take minutes before fit's first epoch: say where it is
                    losses = "  ".join(f"{k.split('/')[-1]} {float(v):.4f}" for k, v in values.items())
                    print(f"{phase.name} pass {local + 1}/{passes} ({phase.steps} steps in all): {losses}")
        self.pre_phases_done = True

    def _check_extras(self, x, y) -> None:
        """Refuses batches without the method's extras before anything is traced (a refusal from inside the
        traced step would leave the model's train function half-built)."""
        extras = self.distiller.batch_extras
        if not extras:
            return
        spec = x.element_spec if isinstance(x, tf.data.Dataset) else None
        batch_lacks_extras = spec is not None and (not isinstance(spec, (tuple, list)) or len(spec) != 2 + len(extras))
        if y is not None or batch_lacks_extras:
            raise ValueError(self._extras_needed())

    def _extras_needed(self) -> str:
        extras = self.distiller.batch_extras
        return (
            f"{self.distiller.name} reads {', '.join(extras)} beside each batch: give fit a tf.data.Dataset of "
            f"(images, labels, {', '.join(extras)}) batches, e.g. data.train_dataset(epoch, batch_size, seed, "
            f"extras={extras}) of a UserData"
        )

    def train_step(self, data: tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
        images, labels = data[0], tf.reshape(tf.cast(data[1], tf.int32), [-1])  # [B] or [B, 1] labels
        extras = self.distiller.batch_extras  # (images, labels, *extras): Keras passes the tuple through
        if extras and (not isinstance(data, (tuple, list)) or len(data) != 2 + len(extras)):
            raise ValueError(self._extras_needed())
        grads, values = distillation_gradients(
            self.student,
            self.distiller,
            images,
            labels,
            self._distill_variables,
            self._decayed,
            self.weight_decay,
            self._epoch,
            extras=dict(zip(extras, data[2:], strict=True)) if extras else None,
        )
        self.optimizer.apply_gradients(zip(grads, self._distill_variables, strict=True))
        return self._update(self._train_means, values, tf.shape(labels)[0])

    def test_step(self, data: tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
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
