"""A pre-phase stage's optimizer and step: the one definition `Trainer` and `DistillationModel.fit` share.

A method's pre-phases (IEP's module phase, FitNet's initialization, SRM's two stages, ...) each train their
own variables with their own optimizer before the main phase (`iep.engine.distiller.PrePhase`). The loop runs
them pass by pass, a pass being one epoch's steps; a stage's last pass stops at its `steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from iep.engine.distiller import PrePhase

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
