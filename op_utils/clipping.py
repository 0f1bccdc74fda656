"""The clipped multi-task gradient of the author's KD methods (docs/methods.md §7).

Per variable: g = ∇CE + ∇wd + clip_by_norm(∇dist, ‖∇CE‖ · σ(e − e₀)). The
distillation gradient can never outweigh the target task's, and its cap
starts at half the target-gradient norm in the first student epoch.
Reference: the author's published optimizers, KD_methods_with_TF `op_util.py` at 9fb5414 (`Optimizer_w_MHGD`
lines 182-194, the 'KD-' branch of `Optimizer_w_Distillation` lines 46-53, `sigmoid` lines 216-220); IEPKT's own
`Optimizer_w_IEP` is not published.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def clip_schedule(epochs_since_start: tf.Tensor) -> tf.Tensor:
    """σ(e − e₀), rounded up to exactly 1 once within 1e-8 of it, as the original does."""
    s = tf.sigmoid(tf.cast(epochs_since_start, tf.float32))
    return tf.where(s > 1.0 - 1e-8, tf.ones_like(s), s)


def clip_to_norm(gradient: tf.Tensor, cap: tf.Tensor) -> tf.Tensor:
    """`tf.clip_by_norm` that stays finite when both the gradient and the cap are zero."""
    norm = tf.norm(gradient)
    return gradient * tf.minimum(1.0, cap / tf.maximum(norm, 1e-12))


def clipped_multitask_gradients(
    target: Sequence[tf.Tensor | None],
    decay: Sequence[tf.Tensor | None],
    distill: Sequence[tf.Tensor | None],
    scale: tf.Tensor | None,
    stats: dict | None = None,
) -> list[tf.Tensor | None]:
    """Combines per-variable gradients; None means "no gradient from that loss".

    A variable without a target gradient (a distillation-only adapter) has
    no norm to be capped by: its distillation gradient passes unclipped.
    `scale=None` caps nothing (the plain sum; an ablation, never the reference).
    If `stats` is a dict, it receives `clip_ratio` (Σ‖kept‖ / Σ‖raw‖ of the
    distillation gradients; 1 = nothing clipped) and `clipped_fraction`.
    """
    return clipped_multitask_gradients_per_term(target, decay, [distill], scale, stats)


def clipped_multitask_gradients_per_term(
    target: Sequence[tf.Tensor | None],
    decay: Sequence[tf.Tensor | None],
    distill_terms: Sequence[Sequence[tf.Tensor | None]],
    scale: tf.Tensor | None,
    stats: dict | None = None,
) -> list[tf.Tensor | None]:
    """g = ∇CE + ∇wd + Σ_t clip_by_norm(∇dist_t, ‖∇CE‖·scale) per variable: each distillation term's gradient
    capped on its own (one term: `clipped_multitask_gradients`). Stats as there, over every (variable, term)."""
    combined, raw_norms, kept_norms, clipped = [], [], [], []
    for g_target, g_decay, *g_terms in zip(target, decay, *distill_terms, strict=True):
        parts = [g for g in (g_target, g_decay) if g is not None]
        for g_distill in g_terms:
            if g_distill is None:
                continue
            uncapped = g_target is None or scale is None
            kept = g_distill if uncapped else clip_to_norm(g_distill, tf.norm(g_target) * scale)
            parts.append(kept)
            raw_norms.append(tf.norm(g_distill))
            kept_norms.append(tf.norm(kept))
            clipped.append(tf.cast(kept_norms[-1] < raw_norms[-1] * (1 - 1e-6), tf.float32))
        combined.append(tf.add_n(parts) if parts else None)
    if stats is not None and raw_norms:
        stats["clip_ratio"] = tf.add_n(kept_norms) / tf.maximum(tf.add_n(raw_norms), 1e-12)
        stats["clipped_fraction"] = tf.add_n(clipped) / float(len(clipped))
    return combined
