"""Distillers whose gradient is the author's norm-clipped multi-task combination (IEP, MHGD)."""

from __future__ import annotations

import tensorflow as tf

from iep.core.distiller import Distiller
from iep.op_utils.clipping import clip_schedule, clipped_multitask_gradients_per_term

CLIP_TERMS = ("sum", "per_term")
# IEP's default: each distillation term's gradient clipped on its own, ahead of the summed clip (the published
# optimizers' reading, MHGD's) in every same-seed pair on validation at every data size measured (docs/methods.md).
IEP_CLIP_TERMS = "per_term"


class ClippedDistiller(Distiller):
    separate_gradients = True  # the clip needs ∇CE, ∇wd and ∇dist apart
    metric_names = ("clip_ratio", "clipped_fraction", "clip_scale")

    def __init__(self, teacher, clip: bool = True, clip_terms: str = "sum"):
        super().__init__(teacher)
        if clip_terms not in CLIP_TERMS:
            raise ValueError(f"clip_terms for {self.name} must be one of {CLIP_TERMS}, got {clip_terms!r}")
        self.clip = clip  # False: the plain sum ∇CE + ∇wd + ∇dist, an ablation (the reference always clips)
        # "sum": the summed distillation loss's gradient is clipped once; "per_term": each term's on its own.
        self.clip_terms = clip_terms
        self.gradient_reads_terms = clip_terms == "per_term"
        self._step_stats: dict[str, tf.Tensor] = {}

    def gradients(self, tape, task_loss, weight_decay, distill_loss, variables, epoch, terms=None) -> list[tf.Tensor]:
        """g = ∇CE + ∇wd + clip_by_norm(∇dist, ‖∇CE‖·σ(e − e₀)) (per term: Σ_t clip_by_norm(∇dist_t, …));
        `epoch` counts student epochs from 0 = e − e₀."""
        scale = clip_schedule(epoch)
        self._step_stats = {"clip_scale": scale}
        if self.clip_terms == "per_term":
            distill = [tape.gradient(term, variables) for term in terms.values()]
        else:
            distill = [tape.gradient(distill_loss, variables)]
        return clipped_multitask_gradients_per_term(
            tape.gradient(task_loss, variables),
            tape.gradient(weight_decay, variables),
            distill,
            scale if self.clip else None,
            stats=self._step_stats,
        )

    def step_metrics(self) -> dict[str, tf.Tensor]:
        return dict(self._step_stats)
