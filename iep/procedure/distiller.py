"""IEP knowledge transfer as a `Distiller` (docs/methods.md §2–7).

Phase 1 (the loop's pre-phase, `module_steps` steps): only the MPNN (and the
black-box module) and the IPCA state learn, on teacher features; loss
Σ_l KLD(A_T, R_T) [+ estimator loss] + L2 on module weights.
Phase 2 (the main epochs): the student learns from cross-entropy, weight
decay and the transferred knowledge — alteration (L1 on messages), interim
(KLD of readouts) and optionally black-box (KLD of tanh attention) — combined
by the norm-clipped multi-task gradient. Teacher, modules and IPCA state are
frozen in phase 2; module knowledge is computed with BN in inference mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from iep.core.clipped import IEP_CLIP_TERMS, ClippedDistiller
from iep.core.seeds import seed_stream
from iep.nets import TappedNetwork
from iep.op_utils.losses import MODULE_WEIGHT_DECAY
from iep.procedure.black_box import MultiHeadGraph
from iep.procedure.losses import estimator_loss, kld, message_l1, module_l2
from iep.procedure.mpnn import MessagePassing
from iep.procedure.points import SensingPoints

KNOWLEDGE = ("alteration", "interim", "black_box")
# Phase 1 counts epochs as the reference does: IEPKT trains the modules for 20 epochs (docs/methods.md §7).
# `build_distiller` turns them into the run's steps; the step count is for callers that give no run size
# (20 CIFAR epochs at batch 128 ≈ 7,800 iterations).
DEFAULT_MODULE_EPOCHS = 20
DEFAULT_MODULE_STEPS = 8000


class IEPDistiller(ClippedDistiller):
    name = "iep"
    min_batch_size = 2  # affinities and MPNN edges are between samples

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        *,
        second_pca: str = "ipca",
        iterations: int = 2,
        knowledge: Sequence[str] = ("alteration", "interim"),
        module_steps: int = DEFAULT_MODULE_STEPS,
        module_lr: float = 0.1,
        seed: int | None = None,
        clip: bool = True,
        clip_terms: str = IEP_CLIP_TERMS,
    ):
        super().__init__(teacher, clip=clip, clip_terms=clip_terms)
        unknown = sorted(set(knowledge) - set(KNOWLEDGE))
        if unknown or not knowledge:
            raise ValueError(f"knowledge={list(knowledge)}: must be a non-empty subset of {KNOWLEDGE}")
        if module_steps < 0:
            raise ValueError(f"module_steps={module_steps}: must be >= 0")
        self.knowledge = tuple(k for k in KNOWLEDGE if k in knowledge)
        self.black_box = "black_box" in self.knowledge
        self.name = "iep_bb" if self.black_box else "iep"
        self.iterations = iterations
        self.loss_names = self.knowledge
        self.pre_phase_loss_names = ("module_kld",) + (("estimator",) if self.black_box else ()) + ("module_l2",)
        self.pre_phase_steps, self.pre_phase_lr = module_steps, module_lr

        self.points = SensingPoints("iep", teacher, student, second_pca)
        self.adapters, self.spca = self.points.adapters, self.points.spca
        widths = self.points.widths
        self.mpnn = [MessagePassing(widths[i], iterations, name=f"iep_mpnn_{i}") for i in range(1, len(widths))]
        seeds = seed_stream(seed)  # each graph's noise its own stream
        self.mhgd = [
            MultiHeadGraph(widths[i - 1], widths[i], seed=next(seeds), name=f"iep_mhgd_{i}")
            for i in range(1, len(widths))
            if self.black_box
        ]
        self._build(widths)

    def _build(self, widths) -> None:
        """Creates every variable now, so optimizers and checkpoints see them before the first step."""
        for i, mpnn in enumerate(self.mpnn, start=1):
            c_from, c_to = tf.zeros((2, widths[i - 1])), tf.zeros((2, widths[i]))
            _, messages = mpnn(c_from, c_to)
            if self.black_box:
                logits = self.mhgd[i - 1].attention(c_from, c_to)
                self.mhgd[i - 1].estimate(c_from, logits, tf.reduce_mean(messages, -1), training=False)

    # -- variables --------------------------------------------------------------
    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return self.points.adapter_variables

    @property
    def pre_phase_variables(self) -> list[tf.Variable]:
        return [v for m in (*self.mpnn, *self.mhgd) for v in m.trainable_variables]

    @property
    def frozen_variables(self) -> list[tf.Variable]:
        """What phase 2 must never change: teacher, modules (incl. BN statistics) and IPCA state."""
        modules = [v for m in (*self.mpnn, *self.mhgd, *self.spca) for v in m.weights]
        return list(self.teacher.model.weights) + modules

    def checkpointables(self) -> Mapping[str, object]:
        return {
            "iep_spca": self.spca,
            "iep_mpnn": self.mpnn,
            "iep_mhgd": self.mhgd,
            "iep_adapters": self.points.present_adapters,
            "iep_rng": [m.seed_generator.state for m in self.mhgd],
        }

    # -- knowledge ------------------------------------------------------------------
    def teacher_points(self, images: tf.Tensor, update: bool) -> list[dict[str, tf.Tensor]]:
        return self.points.teacher_points(images, update)

    def pre_phase_losses(self, images: tf.Tensor, labels: tf.Tensor) -> dict[str, tf.Tensor]:
        points = self.teacher_points(images, update=True)
        module_kld, estimator = [], []
        for i, mpnn in enumerate(self.mpnn, start=1):
            c_from, c_to = points[i - 1]["c"], points[i]["c"]
            readout, _ = mpnn(c_from, c_to, training=True)
            module_kld.append(kld(points[i]["affinity"], readout))
            if self.black_box:
                _, messages = mpnn(c_from, c_to, training=False)
                extrinsic = tf.reduce_mean(messages, axis=-1) * float(self.iterations)
                mhgd = self.mhgd[i - 1]
                estimate = mhgd.estimate(c_from, mhgd.attention(c_from, c_to, training=True), extrinsic)
                estimator.append(estimator_loss(c_to, estimate))
        losses = {"module_kld": tf.add_n(module_kld)}
        if self.black_box:
            losses["estimator"] = tf.add_n(estimator)
        losses["module_l2"] = module_l2(self.pre_phase_variables, MODULE_WEIGHT_DECAY)
        return losses

    def losses(self, images, labels, student_outputs, epoch) -> dict[str, tf.Tensor]:
        points = self.teacher_points(images, update=False)
        teacher_c = [tf.stop_gradient(p["c"]) for p in points]
        student_c = self.points.student_compressed(student_outputs["taps"], points, training=True)
        terms = {name: [] for name in self.knowledge}
        for i, mpnn in enumerate(self.mpnn, start=1):
            readout_t, messages_t = mpnn(teacher_c[i - 1], teacher_c[i], training=False)
            readout_s, messages_s = mpnn(student_c[i - 1], student_c[i], training=False)
            if "alteration" in terms:
                terms["alteration"].append(message_l1(messages_s, tf.stop_gradient(messages_t)))
            if "interim" in terms:
                terms["interim"].append(kld(tf.stop_gradient(readout_t), readout_s))
            if self.black_box:
                mhgd = self.mhgd[i - 1]
                logits_t = tf.stop_gradient(mhgd.attention(teacher_c[i - 1], teacher_c[i], training=False))
                logits_s = mhgd.attention(student_c[i - 1], student_c[i], training=False)
                terms["black_box"].append(kld(tf.tanh(logits_s), tf.tanh(logits_t)))
        return {name: tf.add_n(values) for name, values in terms.items()}
