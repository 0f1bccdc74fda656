"""The one custom training loop: `tf.function` steps, TensorBoard, checkpoints, resume, export.

Everything a KD method changes goes through `Distiller` (see distiller.py);
this file knows nothing about any method.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.core.errors import TrainingDiverged
from iep.core.files import check_writable, write_json_atomic
from iep.core.tracing import traced
from iep.datasets import ImagePipeline
from iep.datasets.user_data import UserData, as_loop_data
from iep.engine.assembly import check_eval_split, check_student_fits_data, distiller_for_run
from iep.engine.checkpointing import EpochCheckpoints
from iep.engine.distribute import distribute_batches, is_chief
from iep.engine.evaluation import collect_logits, first_images, top1_accuracy
from iep.engine.layout import METRICS_FILE, TENSORBOARD_SUBDIR
from iep.engine.loop import run_steps
from iep.engine.mobile_export import export_unless_done
from iep.engine.precision import loss_for_gradients, with_loss_scaling
from iep.engine.run_records import (
    chance_warning,
    describe_run,
    epoch_line,
    epoch_record,
    load_history,
    metrics_summary,
    pass_line,
    rescored_record,
    write_epoch_summary,
)
from iep.engine.signals import stop_on_signals
from iep.engine.stages import PRE_PHASE_EPOCH_OFFSET, build_stages, stage_of_pass
from iep.engine.step import RunningMeans, distillation_gradients, logged_names
from iep.engine.tensorboard import purge_for_resume
from iep.engine.train_config import TrainConfig
from iep.nets import TappedNetwork, check_tapped
from iep.op_utils import build_schedule

__all__ = ["TrainConfig", "Trainer", "distillation_gradients"]  # the first and last live in their own modules


class Trainer:
    """Trains `student` on `data`, optionally with a `Distiller`, inside `run_dir`."""

    def __init__(
        self,
        student: TappedNetwork,
        data: ImagePipeline | UserData | tf.data.Dataset | tuple,
        config: TrainConfig,
        run_dir: str,
        distiller: Distiller | str | None = None,
        strategy: tf.distribute.Strategy | None = None,
        *,
        eval_data: Mapping[str, object] | None = None,
        teacher: TappedNetwork | None = None,
        options: Mapping[str, object] | None = None,
    ):
        """Networks and distiller must have been built under `strategy.scope()` (default: no distribution).

        `data`: an `ImagePipeline`, a `UserData`, or the user's own training data as a `tf.data.Dataset` of
        (image, label) pairs or an (images, labels) pair of arrays; then `eval_data` names the splits to
        evaluate on, e.g. {"test": (x_test, y_test)} (`config.eval_split` must be one of them).
        `distiller`: a `Distiller`, or a method's name (`iep.methods.methods()`) with its `teacher` and
        `options` (its --distill_args, typed values welcome), built here so that its phases are sized from
        this run's steps (`config.epochs` × the data's steps per epoch) and seeded by `config.seed`.
        """
        check_tapped(student, "student")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be an iep.TrainConfig, e.g. iep.TrainConfig(epochs=100); got {config!r}")
        if not isinstance(run_dir, str | os.PathLike):
            raise TypeError(f"run_dir must be a folder path (checkpoints, logs and exports go there), got {run_dir!r}")
        if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(
                f"strategy must be a tf.distribute.Strategy, e.g. tf.distribute.MirroredStrategy(); got {strategy!r}"
            )
        if is_chief(strategy or tf.distribute.get_strategy()):  # the only writer (other workers race the probe)
            check_writable(os.fspath(run_dir), "run_dir")
        data = as_loop_data(data, eval_data)
        check_student_fits_data(student, data)
        distiller = distiller_for_run(distiller, teacher, options, student, data, config, strategy)
        check_eval_split(data, config.eval_split)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.chief = is_chief(self.strategy)
        if config.jit_compile is True and self.replicas > 1:
            raise ValueError("TrainConfig.jit_compile with several replicas is not supported; drop one of them")
        self.jit_compile = config.uses_xla(self.replicas)
        with self.strategy.scope():
            self._build(student, data, config, run_dir, distiller)

    def _build(self, student, data, config, run_dir, distiller) -> None:
        self.student, self.data, self.config, self.run_dir = student, data, config, run_dir
        self._maybe_scaled = functools.partial(with_loss_scaling, precision=config.precision)
        self._scaled = functools.partial(loss_for_gradients, precision=config.precision, replicas=self.replicas)
        self.distiller = distiller or Distiller()
        self.distiller.check_batch_size(config.batch_size // self.replicas)
        self.steps_per_epoch = data.steps_per_epoch(config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.schedule = build_schedule(
            config.lr_schedule, config.lr, self.total_steps, config.lr_decay_points, config.lr_decay_factor
        )
        self.optimizer = self._maybe_scaled(keras.optimizers.SGD(self.schedule, config.momentum, nesterov=True))
        self.variables = list(student.model.trainable_variables) + list(self.distiller.trainable_variables)
        self.optimizer.build(self.variables)
        self._decayed = self.distiller.decayed(student.model.trainable_variables)
        self.loss_names = logged_names(self.distiller)
        self._interval = RunningMeans(self.loss_names)
        self._epoch_means = RunningMeans(self.loss_names)
        self._pre_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="pre_phase_passes_completed")
        extra = {"pre_phase_passes": self._pre_epoch, **self.distiller.checkpointables()}
        self._stages, optimizers = build_stages(
            self.distiller.pre_phases(), self.steps_per_epoch, self._compiled, self._maybe_scaled, self._scaled
        )
        extra.update(optimizers)
        self.pre_phase_epochs = self._stages[-1].end if self._stages else 0
        self.checkpoints = EpochCheckpoints(
            run_dir, student.model, self.optimizer, extra, config.keep_checkpoints, chief=self.chief
        )
        self._epoch_var = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self._stop_requested: list[int] = []  # signal numbers of SIGTERM / Ctrl-C received during `fit`
        self._train_step = self._compiled(self._step)
        self._predict = traced(lambda x: student.model(x, training=False)["logits"], jit_compile=self.jit_compile)

    def _compiled(self, step):
        """One replica: the step as a (maybe XLA) tf.function; several: each replica runs it on its slice."""
        if self.replicas == 1:
            return traced(step, jit_compile=self.jit_compile)
        return traced(lambda *batch: self.strategy.run(step, args=batch))

    # -- the step -----------------------------------------------------------
    def _step(self, images: tf.Tensor, labels: tf.Tensor, *extras: tf.Tensor) -> None:
        grads, values = distillation_gradients(
            self.student, self.distiller, images, labels, self.variables, self._decayed, self.config.weight_decay,
            self._epoch_var, scale=lambda loss: self._scaled(self.optimizer, loss),
            extras=dict(zip(self.distiller.batch_extras, extras, strict=True)),
        )  # fmt: skip
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self._interval.add(values)
        self._epoch_means.add(values)

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, split: str | None = None) -> float:
        batches = self.data.eval_dataset(split or self.config.eval_split, self.config.eval_batch_size)
        return top1_accuracy(*collect_logits(self._predict, first_images(batches, self.config.eval_limit)))

    # -- the loop -------------------------------------------------------------
    def _current_lr(self) -> float:
        lr = self.schedule(self.optimizer.iterations) if callable(self.schedule) else self.schedule
        return float(np.asarray(lr))

    def _write_metrics(self, history: list[dict], finished: bool) -> dict:
        summary = metrics_summary(
            history, finished, self.config, self.student.arch, self.distiller.name, self.data.num_train,
            {stage.phase.name: stage.phase.steps for stage in self._stages},
        )  # fmt: skip
        if self.chief:
            write_json_atomic(os.path.join(self.run_dir, METRICS_FILE), summary)
        return summary

    def _run_steps(self, step_fn, batches, total_steps: int, means, global_step, learning_rate, writer, where):
        run_steps(
            step_fn, batches, total_steps, means, global_step, learning_rate, writer, where,
            config=self.config,
            distribute=(lambda b: distribute_batches(self.strategy, b)) if self.replicas > 1 else None,
            stop_requested=self._stop_requested,
            last_checkpoint=self.checkpoints.last_checkpoint_sentence,
        )  # fmt: skip

    def _pre_phase_epoch(self, index: int, writer) -> None:
        """Pass `index` (counted across stages) of the distiller's pre-phases; a stage's last pass stops at
        its `steps`."""
        cfg = self.config
        stage, local, steps, label = stage_of_pass(self._stages, index, self.steps_per_epoch)
        if cfg.progress:
            print(f"{self.distiller.name} {label} {local + 1}/{stage.passes}")
        batches = self.data.train_dataset(PRE_PHASE_EPOCH_OFFSET + index, cfg.batch_size, cfg.seed)
        self._run_steps(stage.step, batches, steps, stage.interval, stage.optimizer.iterations, stage.current_lr,
                        writer, where=f"{label} pass {local + 1}")  # fmt: skip
        means = stage.epoch_means.read_and_reset()
        self._pre_epoch.assign(index + 1)
        self.checkpoints.save(index + 1)
        print(pass_line(label, local, stage.passes, means))

    def _main_epoch(self, epoch: int, writer) -> dict:
        cfg = self.config
        self._epoch_var.assign(float(epoch))
        if cfg.progress:
            print(f"Epoch {epoch + 1}/{cfg.epochs}")
        started = time.perf_counter()
        extras = {"extras": self.distiller.batch_extras} if self.distiller.batch_extras else {}
        batches = self.data.train_dataset(epoch, cfg.batch_size, cfg.seed, **extras)
        self._run_steps(self._train_step, batches, self.steps_per_epoch, self._interval, self.optimizer.iterations,
                        self._current_lr, writer, where=f"epoch {epoch + 1}")  # fmt: skip
        seconds = time.perf_counter() - started
        epoch_means = self._epoch_means.read_and_reset()
        due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        eval_started = time.perf_counter()
        eval_accuracy, eval_seconds = (self.evaluate() if due else None), time.perf_counter() - eval_started
        record = epoch_record(epoch, epoch_means, eval_accuracy, self._current_lr(), seconds, eval_seconds, cfg,
                              self.steps_per_epoch)  # fmt: skip
        write_epoch_summary(writer, record)
        print(epoch_line(record, cfg.eval_split))
        return record

    def fit(self, resume: bool = True) -> dict:
        """Runs the remaining pre-phase passes and epochs; returns the metrics summary (also in metrics.json)."""
        if not isinstance(resume, bool):  # "no" is truthy: it would resume the run it was meant to restart
            raise TypeError(f"Trainer.fit: resume must be True or False, got {resume!r}")
        os.makedirs(self.run_dir, exist_ok=True)
        if hasattr(self.data, "prepare_eval"):  # an undecodable evaluation image is named now, not after an epoch
            self.data.prepare_eval(self.config.eval_split)
        if self.chief:
            describe_run(self.run_dir, self.student, self.data, self.distiller, self.config)
        start_epoch = self.checkpoints.restore_latest() if resume else 0
        pre_done = int(self._pre_epoch.numpy())
        already_finished = start_epoch == self.config.epochs and pre_done == self.pre_phase_epochs
        history = load_history(self.run_dir, start_epoch)
        if start_epoch or pre_done:
            print(
                f"Resuming {self.run_dir} after epoch {start_epoch} (step {int(self.optimizer.iterations.numpy())}"
                f"; pre-phase passes done: {pre_done}/{self.pre_phase_epochs})."
            )
        log_dir = os.path.join(self.run_dir, TENSORBOARD_SUBDIR)
        if self.chief and (start_epoch or pre_done):
            stages = {f"{s.phase.name}/": int(s.optimizer.iterations.numpy()) for s in self._stages}
            purge_for_resume(log_dir, int(self.optimizer.iterations.numpy()), stages, start_epoch)
        writer = tf.summary.create_file_writer(log_dir) if self.chief else tf.summary.create_noop_writer()
        said_chance = False
        with stop_on_signals(self._stop_requested):
            for index in range(pre_done, self.pre_phase_epochs):
                self._pre_phase_epoch(index, writer)
            for epoch in range(start_epoch, self.config.epochs):
                record = self._main_epoch(epoch, writer)
                if not math.isfinite(record["train_loss"]):  # before the save: a diverged state is not kept
                    raise TrainingDiverged(
                        f"training loss is {record['train_loss']} after epoch {epoch + 1}. "
                        f"{self.checkpoints.last_checkpoint_sentence()} Lower TrainConfig.lr or check the data."
                    )
                history.append(record)
                if not said_chance and (warning := chance_warning(history, self.student.num_classes)):
                    print(warning, file=sys.stderr)
                    said_chance = True  # once a run
                # metrics first, then the checkpoint: on resume history is cut back to the checkpoint's epoch.
                self._write_metrics(history, finished=False)
                self.checkpoints.mark_epoch(epoch + 1)
                self.checkpoints.save(self.pre_phase_epochs + epoch + 1)
        if not history or history[-1]["epoch"] != self.config.epochs:
            history.append(rescored_record(self.evaluate, self.run_dir, self.config))
        summary = self._write_metrics(history, finished=True)
        self.checkpoints.discard_private()
        if self.chief:
            export_unless_done(self.student.classifier, self.run_dir, self.config, self.data, already_finished)
        return summary
