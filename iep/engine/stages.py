"""A pre-phase stage's optimizer and step: the one definition `Trainer` and `DistillationModel.fit` share.

A method's pre-phases (IEP's module phase, FitNet's initialization, SRM's two stages, ...) each train their
own variables with their own optimizer before the main phase (`iep.core.distiller.PrePhase`). The loop runs
them pass by pass, a pass being one epoch's steps; a stage's last pass stops at its `steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from iep.core.distiller import PrePhase

PRE_PHASE_EPOCH_OFFSET = 1_000_000  # pre-phase passes draw data orders disjoint from the main epochs


def stage_learning_rate(phase: PrePhase) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The stage's learning rate: a float, or its step schedule (SRM's ×0.1 steps at fractions of the stage)."""
    if not phase.lr_boundaries:
        return phase.lr
    # PiecewiseConstantDecay keeps a value up to and including its boundary step: step round(f·steps) is the first
    # at the decayed rate.
    boundaries = [max(0, round(f * phase.steps) - 1) for f in phase.lr_boundaries]
    values = [phase.lr * phase.lr_decay**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def stage_optimizer(phase: PrePhase) -> keras.optimizers.Optimizer:
    """SGD Nesterov 0.9 (the author's code) or Adam, at the stage's learning rate and its step schedule."""
    lr = stage_learning_rate(phase)
    if phase.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def stage_passes(phase: PrePhase, steps_per_pass: int) -> int:
    return math.ceil(phase.steps / steps_per_pass)


def steps_in_pass(phase: PrePhase, local_pass: int, steps_per_pass: int) -> int:
    """Steps of the stage's pass `local_pass` (0-based): full passes, the last one cut at `phase.steps`."""
    return min(steps_per_pass, phase.steps - local_pass * steps_per_pass)


def stage_step(
    phase: PrePhase,
    optimizer: keras.optimizers.Optimizer,
    variables: Sequence[tf.Variable],
    images: tf.Tensor,
    labels: tf.Tensor,
    scale: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> dict[str, tf.Tensor]:
    """One step of the stage: its losses' sum, differentiated for its variables, applied; returns the logged
    values (`<stage>/total`, `<stage>/<term>`). `scale` maps the loss first (replica averaging, loss scaling)."""
    prefix = f"{phase.name}/"
    with tf.GradientTape() as tape:
        terms = phase.losses(images, labels)
        total = tf.debugging.check_numerics(tf.add_n(list(terms.values())), f"{phase.name} loss")
        scaled = scale(total) if scale else total
    grads = tape.gradient(scaled, list(variables))
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    return {f"{prefix}total": total, **{f"{prefix}{k}": v for k, v in terms.items()}}


class LoopStage:
    """One pre-phase stage in the loop: its optimizer (schedule), compiled step and running means. The loop
    passes how it compiles a step and scales an optimizer and a loss (replicas, float16)."""

    def __init__(
        self,
        phase: PrePhase,
        first: int,
        passes: int,
        compile_step: Callable,
        scaled_optimizer: Callable,
        scaled_loss: Callable,
    ):
        from iep.engine.step import RunningMeans

        self.phase, self.first, self.passes = phase, first, passes
        self.variables = list(phase.variables)
        self.learning_rate = stage_learning_rate(phase)  # a float or a schedule of the stage's step
        self.optimizer = scaled_optimizer(stage_optimizer(phase))
        self.optimizer.build(self.variables)
        prefix = f"{phase.name}/"
        names = (f"{prefix}total",) + tuple(f"{prefix}{n}" for n in phase.loss_names)
        self.interval = RunningMeans(names, prefix=prefix)
        self.epoch_means = RunningMeans(names, prefix=prefix)
        self._scaled_loss = scaled_loss
        self.step = compile_step(self._step)

    @property
    def end(self) -> int:
        return self.first + self.passes

    def current_lr(self) -> float:
        return float(np.asarray(self.optimizer.learning_rate))

    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> None:
        scale = lambda loss: self._scaled_loss(self.optimizer, loss)  # noqa: E731
        values = stage_step(self.phase, self.optimizer, self.variables, images, labels, scale)
        self.interval.add(values)
        self.epoch_means.add(values)


def stage_of_pass(stages: Sequence[LoopStage], index: int, steps_per_pass: int) -> tuple[LoopStage, int, int, str]:
    """Pass `index` (counted across stages): its stage, its pass within the stage, its steps, its printed label."""
    stage = next(s for s in stages if s.first <= index < s.end)
    local = index - stage.first
    label = "pre-phase" if len(stages) == 1 else stage.phase.name
    return stage, local, steps_in_pass(stage.phase, local, steps_per_pass), label


def build_stages(
    phases: Sequence[PrePhase],
    steps_per_pass: int,
    compile_step: Callable[[Callable], Callable],
    scaled_optimizer: Callable[[keras.optimizers.Optimizer], keras.optimizers.Optimizer],
    scaled_loss: Callable[[keras.optimizers.Optimizer, tf.Tensor], tf.Tensor],
) -> tuple[list[LoopStage], dict[str, keras.optimizers.Optimizer]]:
    """Every pre-phase stage in order, its passes numbered across stages (one counter, one checkpoint each), and
    the checkpoint keys of their optimizers: the first stage's is `pre_phase_optimizer` whatever its name (every
    single-stage method and every existing run uses that key), later stages' `<name>_optimizer`."""
    stages, optimizers = [], {}
    for phase in phases:
        first = stages[-1].end if stages else 0
        stage = LoopStage(
            phase, first, stage_passes(phase, steps_per_pass), compile_step, scaled_optimizer, scaled_loss
        )
        optimizers["pre_phase_optimizer" if not stages else f"{phase.name}_optimizer"] = stage.optimizer
        stages.append(stage)
    return stages, optimizers
