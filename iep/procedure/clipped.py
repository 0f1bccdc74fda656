"""Distillers whose gradient is the author's norm-clipped multi-task combination (IEP, MHGD)."""

from __future__ import annotations

import tensorflow as tf

from iep.engine.distiller import Distiller
from iep.op_utils.clipping import clip_schedule, clipped_multitask_gradients


class ClippedDistiller(Distiller):
    separate_gradients = True  # the clip needs ∇CE, ∇wd and ∇dist apart
    metric_names = ("clip_ratio", "clipped_fraction", "clip_scale")

    def __init__(self, teacher, clip: bool = True):
        super().__init__(teacher)
        self.clip = clip  # False: the plain sum ∇CE + ∇wd + ∇dist, an ablation (the reference always clips)
        self._step_stats: dict[str, tf.Tensor] = {}

    def gradients(self, tape, task_loss, weight_decay, distill_loss, variables, epoch) -> list[tf.Tensor]:
        """g = ∇CE + ∇wd + clip_by_norm(∇dist, ‖∇CE‖·σ(e − e₀)); `epoch` counts student epochs from 0 = e − e₀."""
        scale = clip_schedule(epoch)
        self._step_stats = {"clip_scale": scale}
        return clipped_multitask_gradients(
            tape.gradient(task_loss, variables),
            tape.gradient(weight_decay, variables),
            tape.gradient(distill_loss, variables),
            scale if self.clip else None,
            stats=self._step_stats,
        )

    def step_metrics(self) -> dict[str, tf.Tensor]:
        return dict(self._step_stats)
