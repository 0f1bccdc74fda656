"""MHGD — graph-based KD by a multi-head attention network (Lee & Song, BMVC 2019).

The IEP author's earlier method, and IEP+BB's black-box term without the
MPNN message: per pair of consecutive sensing points, 8 learned attention
heads relate the samples of a batch (G_h = K_h Q_hᵀ, B×B). Pre-phase: the
heads and an estimator learn to rebuild the later point's compressed vectors
from the earlier one (random head drop; loss mean(1 − cos)) at LR 0.1, for
40 epochs by default: KD_methods_with_TF `train_w_distill.py` sets
`init_epoch = 40` for MHGD (`iep.methods.PRE_PHASE`; `pre_phase_steps`
overrides). Main phase: the student matches
KL(softmax(tanh G_S) ‖ softmax(tanh G_T)) with the module frozen, combined by
the author's norm-clipped multi-task gradient.

What the heads read — a deliberate difference from the reference, stated so
that no result is mistaken for the reference's: MHGD's own code
(KD_methods_with_TF `nets/Relation.py`, `MHGD`) compresses each point by
KD-SVD's decomposition (the teacher's first right singular vector, the
student's best-aligned of 4, `SVP.SVD_eid` + `SVP.Align_rsv`). Ours feeds the
heads IEP's stacked-PCA components (first PCA per sample, IPCA over the
batch: `iep.procedure.points.SensingPoints`), so that MHGD and IEP+BB's black-box term
see identical inputs and differ only by the MPNN message; the IEP paper
introduces the stacked PCA as the replacement of that SVD. A run of this
distiller is therefore "MHGD on IEP's inputs", not the BMVC paper's MHGD.
"""

from __future__ import annotations

import tensorflow as tf

from iep.nets import TappedNetwork
from iep.procedure.black_box import HEADS, MultiHeadGraph
from iep.procedure.clipped import ClippedDistiller
from iep.procedure.distiller import MODULE_WEIGHT_DECAY
from iep.procedure.losses import estimator_loss, kld, module_l2
from iep.procedure.points import SensingPoints


class MHGDDistiller(ClippedDistiller):
    name, loss_names = "mhgd", ("graph",)
    decay_every_variable = True  # KD_methods_with_TF `nets/ResNet.py` arg scope: kernels, BN γ/β, biases
    min_batch_size = 2  # attention between the samples of a batch
    pre_phase_loss_names = ("estimator", "module_l2")

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        pre_phase_steps: int,
        pre_phase_lr: float = 0.1,
        heads: int = HEADS,
        second_pca: str = "ipca",
        seed: int | None = None,
    ):
        super().__init__(teacher)
        if pre_phase_steps < 1:
            raise ValueError(f"mhgd needs pre_phase_steps >= 1 (its attention module), got {pre_phase_steps}")
        self.pre_phase_steps, self.pre_phase_lr = pre_phase_steps, pre_phase_lr
        self.points = SensingPoints("mhgd", teacher, student, second_pca)
        widths = self.points.widths
        self.heads = [
            MultiHeadGraph(widths[i - 1], widths[i], heads, seed=seed, extrinsic_head=False, name=f"mhgd_heads_{i}")
            for i in range(1, len(widths))
        ]
        for i, module in enumerate(self.heads, start=1):
            c_from, c_to = tf.zeros((2, widths[i - 1])), tf.zeros((2, widths[i]))
            module.estimate(c_from, module.attention(c_from, c_to), training=False)

    @property
    def trainable_variables(self):
        return self.points.adapter_variables

    @property
    def pre_phase_variables(self):
        return [v for m in self.heads for v in m.trainable_variables]

    def checkpointables(self):
        return {
            "mhgd_spca": self.points.spca,
            "mhgd_heads": self.heads,
            "mhgd_adapters": self.points.present_adapters,
            "mhgd_rng": [m.seed_generator.state for m in self.heads],
        }

    def pre_phase_losses(self, images, labels):
        points = self.points.teacher_points(images, update=True)
        losses = []
        for i, module in enumerate(self.heads, start=1):
            c_from, c_to = points[i - 1]["c"], points[i]["c"]
            estimate = module.estimate(c_from, module.attention(c_from, c_to, training=True))
            losses.append(estimator_loss(c_to, estimate))
        return {
            "estimator": tf.add_n(losses),
            "module_l2": module_l2(self.pre_phase_variables, MODULE_WEIGHT_DECAY),
        }

    def losses(self, images, labels, student_outputs, epoch):
        points = self.points.teacher_points(images, update=False)
        teacher_c = [tf.stop_gradient(p["c"]) for p in points]
        student_c = self.points.student_compressed(student_outputs["taps"], points, training=True)
        terms = []
        for i, module in enumerate(self.heads, start=1):
            logits_t = tf.stop_gradient(module.attention(teacher_c[i - 1], teacher_c[i], training=False))
            logits_s = module.attention(student_c[i - 1], student_c[i], training=False)
            terms.append(kld(tf.tanh(logits_s), tf.tanh(logits_t)))
        return {"graph": tf.add_n(terms)}
