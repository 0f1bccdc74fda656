"""The one custom training loop: `tf.function` steps, TensorBoard, checkpoints, resume, export.

Everything a KD method changes goes through `Distiller` (see distiller.py);
this file knows nothing about any method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from iep.datasets import ImagePipeline
from iep.datasets.user_data import UserData, as_loop_data
from iep.engine.checkpointing import EpochCheckpoints
from iep.engine.distiller import Distiller, PrePhase
from iep.engine.distribute import is_chief
from iep.engine.errors import TrainingDiverged, TrainingInterrupted, op_message
from iep.engine.evaluation import collect_logits, top1_accuracy
from iep.engine.files import read_json, write_json_atomic
from iep.engine.layout import CONFIG_FILE, METRICS_FILE, TENSORBOARD_SUBDIR
from iep.engine.mobile_export import check_formats, export_path, export_student, representative_images
from iep.engine.precision import check_precision, needs_loss_scaling
from iep.engine.signals import stop_signals_handled_by
from iep.engine.stages import (
    PRE_PHASE_EPOCH_OFFSET,
    stage_learning_rate,
    stage_optimizer,
    stage_passes,
    stage_step,
    steps_in_pass,
)
from iep.engine.tensorboard import purge_events_after
from iep.nets import TappedNetwork
from iep.op_utils import build_schedule, l2_penalty


@contextlib.contextmanager
def _stop_on_signals(requested: list[int]):
    """SIGTERM and SIGINT only record the request; the loop checks it after every step. A second signal
    stops at once (a step that never returns must not make the process unkillable)."""

    def handler(number, frame):
        requested.append(number)
        if len(requested) > 1:
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)

    with stop_signals_handled_by(handler):
        yield


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    lr_schedule: str = "step"
    lr_decay_points: Sequence[float] = (0.3, 0.6, 0.8)
    lr_decay_factor: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    eval_split: str = "test"
    eval_every: int = 1  # evaluate after every this many epochs, and always after the last
    eval_batch_size: int = 500
    eval_limit: int | None = None  # evaluate on the split's first this many images (quick runs); None: all
    log_every: int = 50
    keep_checkpoints: int = 3
    jit_compile: bool = False
    progress: bool = True
    export: bool = True
    export_formats: Sequence[str] = ("savedmodel",)  # any of iep.engine.mobile_export.EXPORT_FORMATS
    precision: str = "float32"  # the networks' policy (set when they were built); float16 adds loss scaling

    def validate(self) -> None:
        """Every numeric setting in range (NaN fails every check) before anything is built or written."""
        check_precision(self.precision)
        check_formats(self.export_formats)
        checks = [
            ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("--batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("--lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("--lr_decay_factor", self.lr_decay_factor, 0 < self.lr_decay_factor <= 1, "in (0, 1]"),
            ("--weight_decay", self.weight_decay, math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            ("--momentum", self.momentum, 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            ("--seed", self.seed, self.seed >= 0, ">= 0"),
            ("--log_every", self.log_every, self.log_every >= 1, ">= 1 (steps between TensorBoard writes)"),
            ("--eval_batch_size", self.eval_batch_size, self.eval_batch_size >= 1, ">= 1"),
            ("--eval_limit", self.eval_limit, self.eval_limit is None or self.eval_limit >= 1, ">= 1 images"),
            ("--eval_every", self.eval_every, self.eval_every >= 1, ">= 1 (epochs between evaluations)"),
            ("keep_checkpoints", self.keep_checkpoints, self.keep_checkpoints >= 1, ">= 1"),
        ]
        for flag, value, ok, expected in checks:
            if not ok:
                raise ValueError(f"{flag} must be {expected}, got {value}")
        points = list(self.lr_decay_points)
        if any(not 0 < p < 1 for p in points) or points != sorted(points):
            raise ValueError(f"--lr_decay_points must be increasing fractions in (0, 1), got {points}")


def distillation_gradients(
    student: TappedNetwork,
    distiller: Distiller,
    images: tf.Tensor,
    labels: tf.Tensor,
    variables: Sequence[tf.Variable],
    decayed: Sequence[tf.Variable],
    weight_decay: float,
    epoch: tf.Variable,
    scale=None,
) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
    """One step's gradient per variable and its logged values: the student's cross-entropy (times the method's
    weight), weight decay and the method's terms, combined by `distiller.gradients` (IEP: norm-clipped).

    The one definition of a training step: `Trainer` and `iep.keras_fit.DistillationModel` both call it.
    `scale` maps each loss before differentiation (replica averaging, loss scaling).
    """
    scale = scale or (lambda loss: loss)
    with tf.GradientTape(persistent=distiller.separate_gradients) as tape:
        outputs = student(images, training=True)
        logits = outputs["logits"]
        cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        decay = l2_penalty(decayed, weight_decay)
        terms = distiller.losses(images, labels, outputs, epoch)
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


class _RunningMeans:
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


class _Stage:
    """One pre-phase stage in the loop: its optimizer (schedule), compiled step and running means."""

    def __init__(self, phase: PrePhase, first: int, passes: int, trainer: Trainer):
        self.phase, self.first, self.passes = phase, first, passes
        self.variables = list(phase.variables)
        self.learning_rate = stage_learning_rate(phase)  # a float or a schedule of the stage's step
        self.optimizer = trainer._maybe_scaled(stage_optimizer(phase))
        self.optimizer.build(self.variables)
        prefix = f"{phase.name}/"
        names = (f"{prefix}total",) + tuple(f"{prefix}{n}" for n in phase.loss_names)
        self.interval = _RunningMeans(names, prefix=prefix)
        self.epoch_means = _RunningMeans(names, prefix=prefix)
        self._trainer = trainer
        self.step = trainer._compiled(self._step)

    @property
    def end(self) -> int:
        return self.first + self.passes

    def current_lr(self) -> float:
        return float(np.asarray(self.optimizer.learning_rate))

    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> None:
        scale = lambda loss: self._trainer._scaled(self.optimizer, loss)  # noqa: E731
        values = stage_step(self.phase, self.optimizer, self.variables, images, labels, scale)
        self.interval.add(values)
        self.epoch_means.add(values)


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
        config.validate()
        data = as_loop_data(data, eval_data)
        if isinstance(distiller, str):
            from iep.methods import build_distiller

            steps = data.steps_per_epoch(config.batch_size) * config.epochs
            with (strategy or tf.distribute.get_strategy()).scope():
                distiller = build_distiller(
                    distiller, teacher, student, seed=config.seed, main_steps=steps, epochs=config.epochs,
                    overrides=options,
                )  # fmt: skip
        elif teacher is not None or options:
            raise ValueError(
                "teacher= and options= go with a method's name (distiller='iep'); this distiller has its own"
            )
        if hasattr(data, "splits") and config.eval_split not in data.splits:
            raise ValueError(
                f"evaluation reads split {config.eval_split!r} (TrainConfig.eval_split), but the data has only "
                f"{list(data.splits)}; pass eval_data={{{config.eval_split!r}: ...}} or another eval_split"
            )
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.chief = is_chief(self.strategy)
        if config.jit_compile and self.replicas > 1:
            raise ValueError("--jit_compile with several replicas is not supported; drop one of them")
        with self.strategy.scope():
            self._build(student, data, config, run_dir, distiller)

    def _build(self, student, data, config, run_dir, distiller) -> None:
        self.student, self.data, self.config, self.run_dir = student, data, config, run_dir
        self.distiller = distiller or Distiller()
        self.distiller.check_batch_size(config.batch_size // self.replicas)
        self.steps_per_epoch = data.steps_per_epoch(config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.schedule = build_schedule(
            config.lr_schedule, config.lr, self.total_steps, config.lr_decay_points, config.lr_decay_factor
        )
        self.optimizer = self._maybe_scaled(
            keras.optimizers.SGD(self.schedule, momentum=config.momentum, nesterov=True)
        )
        self.variables = list(student.model.trainable_variables) + list(self.distiller.trainable_variables)
        self.optimizer.build(self.variables)
        self._decayed = self.distiller.decayed(student.model.trainable_variables)
        self.loss_names = (
            ("loss/total", "loss/cross_entropy", "loss/weight_decay", "accuracy/train")
            + tuple(f"loss/{n}" for n in self.distiller.loss_names)
            + tuple(f"distill/{n}" for n in self.distiller.metric_names)
        )
        self._interval = _RunningMeans(self.loss_names)
        self._epoch_means = _RunningMeans(self.loss_names)
        self._pre_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="pre_phase_passes_completed")
        extra = {"pre_phase_passes": self._pre_epoch, **self.distiller.checkpointables()}
        # Every pre-phase stage in order; passes are numbered across stages (one counter, one checkpoint each).
        self._stages: list[_Stage] = []
        for phase in self.distiller.pre_phases():
            first = self._stages[-1].end if self._stages else 0
            stage = _Stage(phase, first, stage_passes(phase, self.steps_per_epoch), self)
            # Checkpoint keys: the first stage's optimizer is `pre_phase_optimizer` whatever the stage's name (every
            # single-stage method and every existing run uses that key), later stages `<name>_optimizer`.
            extra["pre_phase_optimizer" if not self._stages else f"{phase.name}_optimizer"] = stage.optimizer
            self._stages.append(stage)
        self.pre_phase_epochs = self._stages[-1].end if self._stages else 0
        self.checkpoints = EpochCheckpoints(
            run_dir, student.model, self.optimizer, extra, config.keep_checkpoints, chief=self.chief
        )
        self._epoch_var = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self._stop_requested: list[int] = []  # signal numbers of SIGTERM / Ctrl-C received during `fit`
        self._train_step = self._compiled(self._step)
        self._predict = tf.function(
            lambda x: student.model(x, training=False)["logits"], jit_compile=config.jit_compile
        )

    def _compiled(self, step):
        """One replica: the step as a (maybe XLA) tf.function; several: each replica runs it on its slice."""
        if self.replicas == 1:
            return tf.function(step, jit_compile=self.config.jit_compile)
        return tf.function(lambda images, labels: self.strategy.run(step, args=(images, labels)))

    def _maybe_scaled(self, optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
        return (
            keras.optimizers.LossScaleOptimizer(optimizer) if needs_loss_scaling(self.config.precision) else optimizer
        )

    def _scaled(self, optimizer, loss: tf.Tensor) -> tf.Tensor:
        """The loss the gradients are taken of: over the replicas (their gradients are summed), and times the
        dynamic loss scale under float16."""
        loss = loss / float(self.replicas) if self.replicas > 1 else loss
        return optimizer.scale_loss(loss) if needs_loss_scaling(self.config.precision) else loss

    # -- the step -----------------------------------------------------------
    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> None:
        grads, values = distillation_gradients(
            self.student,
            self.distiller,
            images,
            labels,
            self.variables,
            self._decayed,
            self.config.weight_decay,
            self._epoch_var,
            scale=lambda loss: self._scaled(self.optimizer, loss),
        )
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self._interval.add(values)
        self._epoch_means.add(values)

    def _logged_step_limit(self, epochs_completed: int):
        """tag → the last step the restored state had logged (each family counts steps its own way)."""
        main_step = int(self.optimizer.iterations.numpy())
        stages = {f"{s.phase.name}/": int(s.optimizer.iterations.numpy()) for s in self._stages}

        def limit(tag: str) -> int:
            if tag.startswith("epoch/"):
                return epochs_completed
            return next((step for prefix, step in stages.items() if tag.startswith(prefix)), main_step)

        return limit

    def _last_checkpoint_sentence(self) -> str:
        """Names the newest checkpoint on disk (the one a resume starts from), never a guessed epoch."""
        latest = self.checkpoints.manager.latest_checkpoint
        return f"The last checkpoint is {latest}." if latest else f"No checkpoint was written yet in {self.run_dir}."

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, split: str | None = None) -> float:
        batches = self.data.eval_dataset(split or self.config.eval_split, self.config.eval_batch_size)
        if self.config.eval_limit:
            batches = batches.unbatch().take(self.config.eval_limit).batch(self.config.eval_batch_size)
        return top1_accuracy(*collect_logits(self._predict, batches))

    # -- the loop -------------------------------------------------------------
    def _current_lr(self) -> float:
        lr = self.schedule(self.optimizer.iterations) if callable(self.schedule) else self.schedule
        return float(np.asarray(lr))

    def _load_history(self, epochs_completed: int) -> list[dict]:
        path = os.path.join(self.run_dir, METRICS_FILE)
        if not os.path.exists(path):
            return []
        return [h for h in read_json(path).get("history", []) if h["epoch"] <= epochs_completed]

    def _write_metrics(self, history: list[dict], finished: bool) -> dict:
        evaluated = [h for h in history if h.get("eval_accuracy") is not None]  # --eval_every skips some epochs
        accuracies = [h["eval_accuracy"] for h in evaluated]
        best = int(np.argmax(accuracies)) if accuracies else None
        summary = {
            "arch": self.student.arch,
            "distill": self.distiller.name,
            "epochs_completed": history[-1]["epoch"] if history else 0,
            "epochs": self.config.epochs,
            "finished": finished,
            "eval_split": self.config.eval_split,
            "eval_limit": self.config.eval_limit,  # None: the whole split
            "last_accuracy": accuracies[-1] if accuracies else None,
            "best_accuracy": accuracies[best] if best is not None else None,
            "best_epoch": evaluated[best]["epoch"] if best is not None else None,
            "train_images": self.data.num_train,
            "history": history,
        }
        if self.chief:
            write_json_atomic(os.path.join(self.run_dir, METRICS_FILE), summary)
        return summary

    def _run_steps(
        self,
        step_fn,
        batches,
        total_steps: int,
        means: _RunningMeans,
        global_step,
        learning_rate,
        writer,
        where: str,
    ) -> None:
        """Runs `step_fn` over `batches` (at most `total_steps`), logging `means` every `log_every` steps."""
        cfg = self.config
        progress = keras.utils.Progbar(
            total_steps, verbose=1 if cfg.progress else 0, stateful_metrics=means.names, unit_name="step"
        )
        interval_started, interval_images = time.perf_counter(), 0
        batches = batches.take(total_steps)
        if self.replicas > 1:
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            batches = self.strategy.experimental_distribute_dataset(batches.with_options(options))
        for step, (images, labels) in enumerate(batches, start=1):
            try:
                step_fn(images, labels)
            except tf.errors.InvalidArgumentError as error:
                if "Tensor had NaN values" in str(error) or "Tensor had Inf values" in str(error):
                    raise TrainingDiverged(
                        f"training diverged at {where}, step {step}: a loss became NaN/Inf "
                        f"({op_message(error)}). {self._last_checkpoint_sentence()} "
                        "Lower --lr or check the data."
                    ) from None
                raise
            if self._stop_requested:
                name = signal.Signals(self._stop_requested[0]).name
                raise TrainingInterrupted(
                    f"stopped by {name} at {where}, step {step}. {self._last_checkpoint_sentence()} "
                    "Re-run the same command to resume from it.",
                    self._stop_requested[0],
                )
            interval_images += cfg.batch_size
            if step % cfg.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                values = means.read_and_reset()
                with writer.as_default(step=int(global_step.numpy())):
                    for name, value in values.items():
                        tf.summary.scalar(name, value)
                    tf.summary.scalar(f"{means.prefix}learning_rate", learning_rate())
                    tf.summary.scalar(
                        f"{means.prefix}throughput/images_per_second",
                        interval_images / max(now - interval_started, 1e-9),
                    )
                interval_started, interval_images = now, 0
                progress.update(step, [(k, v) for k, v in values.items() if k.endswith(("total", "accuracy/train"))])
            elif cfg.progress:
                progress.update(step)

    def _pre_phase_epoch(self, index: int, writer) -> None:
        """Pass `index` (counted across stages) of the distiller's pre-phases; a stage's last pass stops at
        its `steps`."""
        cfg = self.config
        stage = next(s for s in self._stages if s.first <= index < s.end)
        local = index - stage.first
        steps = steps_in_pass(stage.phase, local, self.steps_per_epoch)
        label = "pre-phase" if len(self._stages) == 1 else stage.phase.name
        if cfg.progress:
            print(f"{self.distiller.name} {label} {local + 1}/{stage.passes}")
        batches = self.data.train_dataset(PRE_PHASE_EPOCH_OFFSET + index, cfg.batch_size, cfg.seed)
        self._run_steps(
            stage.step,
            batches,
            steps,
            stage.interval,
            stage.optimizer.iterations,
            writer=writer,
            where=f"{label} pass {local + 1}",
            learning_rate=stage.current_lr,
        )
        means = stage.epoch_means.read_and_reset()
        self._pre_epoch.assign(index + 1)
        self.checkpoints.save(index + 1)
        print(
            f"{label} {local + 1}/{stage.passes}: " + "  ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in means.items())
        )

    def _describe_run(self) -> None:
        """A run started from Python (train.py writes its own) gets a config.json that names its network, so
        that eval.py and `load_teacher` can rebuild it; the data it trained on is the caller's, so eval.py
        then asks for --dataset."""
        path = os.path.join(self.run_dir, CONFIG_FILE)
        if not self.chief or os.path.exists(path):
            return
        standardize = next((layer for layer in self.student.model.layers if layer.name == "standardize"), None)
        mean, std = [v.numpy().tolist() for v in (standardize.mean, standardize.std)] if standardize else (None, None)
        write_json_atomic(
            path,
            {
                "written_by": "iep.Trainer",
                "arch": self.student.arch,
                "dataset": None,
                "num_classes": int(self.data.num_classes),
                "class_names": list(self.data.class_names),
                "input_shape": list(self.data.input_shape),
                "mean": mean,
                "std": std,
                "distill": self.distiller.name,
                "epochs": self.config.epochs,
                "batch_size": self.config.batch_size,
                "seed": self.config.seed,
            },
        )

    def _recovered_record(self) -> dict:
        """The last epoch's record of a finished run whose metrics.json was lost (deleted, as the message for a
        damaged one advises): its weights are scored again; the earlier epochs' history is gone."""
        started = time.perf_counter()
        accuracy = self.evaluate()
        print(
            f"warning: {METRICS_FILE} of the finished run {self.run_dir} was missing; scored its checkpoint again "
            f"({self.config.eval_split} accuracy {accuracy:.4f}); the history of the earlier epochs is lost"
        )
        return {
            "epoch": self.config.epochs,
            "eval_accuracy": accuracy,
            "seconds": 0.0,
            "eval_seconds": time.perf_counter() - started,
            "recovered": True,
        }

    def _main_epoch(self, epoch: int, writer) -> dict:
        cfg = self.config
        self._epoch_var.assign(float(epoch))
        if cfg.progress:
            print(f"Epoch {epoch + 1}/{cfg.epochs}")
        started = time.perf_counter()
        batches = self.data.train_dataset(epoch, cfg.batch_size, cfg.seed)
        self._run_steps(
            self._train_step,
            batches,
            self.steps_per_epoch,
            self._interval,
            self.optimizer.iterations,
            writer=writer,
            where=f"epoch {epoch + 1}",
            learning_rate=self._current_lr,
        )
        seconds = time.perf_counter() - started
        epoch_means = self._epoch_means.read_and_reset()
        due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        eval_started = time.perf_counter()
        eval_accuracy = self.evaluate() if due else None
        eval_seconds = time.perf_counter() - eval_started
        record = {
            "epoch": epoch + 1,
            "train_loss": epoch_means["loss/total"],
            "train_accuracy": epoch_means["accuracy/train"],
            "eval_accuracy": eval_accuracy,
            "learning_rate": self._current_lr(),
            "seconds": seconds,
            "eval_seconds": eval_seconds,
            "images_per_second": self.steps_per_epoch * cfg.batch_size / max(seconds, 1e-9),
            **{k: v for k, v in epoch_means.items() if k.startswith(("loss/", "distill/"))},
        }
        with writer.as_default(step=epoch + 1):
            if eval_accuracy is not None:
                tf.summary.scalar("epoch/eval_accuracy", eval_accuracy)
            tf.summary.scalar("epoch/train_accuracy", record["train_accuracy"])
            tf.summary.scalar("epoch/images_per_second", record["images_per_second"])
        writer.flush()
        print(
            f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  train acc {record['train_accuracy']:.4f}  "
            f"{cfg.eval_split} acc {'-' if eval_accuracy is None else f'{eval_accuracy:.4f}'}  "
            f"({record['images_per_second']:.0f} img/s)"
        )
        return record

    def fit(self, resume: bool = True) -> dict:
        """Runs the remaining pre-phase passes and epochs; returns the metrics summary (also in metrics.json)."""
        os.makedirs(self.run_dir, exist_ok=True)
        self._describe_run()
        start_epoch = self.checkpoints.restore_latest() if resume else 0
        pre_done = int(self._pre_epoch.numpy())
        already_finished = start_epoch == self.config.epochs and pre_done == self.pre_phase_epochs
        history = self._load_history(start_epoch)
        if start_epoch or pre_done:
            print(
                f"Resuming {self.run_dir} after epoch {start_epoch} (step {int(self.optimizer.iterations.numpy())}"
                f"; pre-phase passes done: {pre_done}/{self.pre_phase_epochs})."
            )
        log_dir = os.path.join(self.run_dir, TENSORBOARD_SUBDIR)
        if self.chief and (start_epoch or pre_done) and os.path.isdir(log_dir):
            purge_events_after(log_dir, self._logged_step_limit(start_epoch))
        writer = tf.summary.create_file_writer(log_dir) if self.chief else tf.summary.create_noop_writer()
        with _stop_on_signals(self._stop_requested):
            for index in range(pre_done, self.pre_phase_epochs):
                self._pre_phase_epoch(index, writer)
            for epoch in range(start_epoch, self.config.epochs):
                record = self._main_epoch(epoch, writer)
                if not math.isfinite(record["train_loss"]):  # before the save: a diverged state is not kept
                    raise TrainingDiverged(
                        f"training loss is {record['train_loss']} after epoch {epoch + 1}. "
                        f"{self._last_checkpoint_sentence()} Lower --lr or check the data."
                    )
                history.append(record)
                # metrics first, then the checkpoint: on resume history is cut back to the checkpoint's epoch.
                self._write_metrics(history, finished=False)
                self.checkpoints.mark_epoch(epoch + 1)
                self.checkpoints.save(self.pre_phase_epochs + epoch + 1)
        if not history or history[-1]["epoch"] != self.config.epochs:
            history.append(self._recovered_record())
        summary = self._write_metrics(history, finished=True)
        self.checkpoints.discard_private()
        exported = all(os.path.exists(export_path(self.run_dir, f)) for f in self.config.export_formats)
        if already_finished and exported:
            print(f"{self.run_dir} had finished and exported: nothing to redo (--noresume starts over)")
        elif self.config.export and self.chief:
            formats = self.config.export_formats
            representative = None
            if "tflite_int8" in formats:  # calibration images from the training split, never from a test split
                representative = representative_images(self.data.train_dataset(0, self.config.batch_size, 0))
            export_student(self.student.classifier, self.run_dir, formats, self.data.class_names, representative)
        return summary
