"""MHGD — graph-based KD by a multi-head attention network (Lee & Song, BMVC 2019).

The IEP author's earlier method, and IEP+BB's black-box term without the
MPNN message: per pair of consecutive sensing points, 8 learned attention
heads relate the samples of a batch (G_h = K_h Q_hᵀ, B×B). Pre-phase: the
heads and an estimator learn to rebuild the later point's compressed vectors
from the earlier one (random head drop; loss mean(1 − cos)) at LR 0.1, for
40 epochs by default: KD_methods_with_TF (at 9fb5414) `train_w_distill.py` line 34 sets
`init_epoch = 40` for MHGD (`iep.methods.PRE_PHASE`; `pre_phase_steps`
overrides). Main phase: the student matches
KL(softmax(tanh G_S) ‖ softmax(tanh G_T)) with the module frozen, combined by
the author's norm-clipped multi-task gradient.

What the heads read (`inputs`):

* `svd` (default), MHGD's own code (KD_methods_with_TF `nets/Relation.py`,
  `MHGD` lines 39-79, `Attention_head` 81-101, `Estimator` 103-125, `drop_head`
  127-131, `kld_loss` 133-135; its optimizer `op_util.py` `Optimizer_w_MHGD` lines 168-214):
  each point compressed by KD-SVD's decomposition, the teacher's
  first right singular vector (`SVP.SVD_eid(tfm, 1)`: the eigendecomposition
  path) and the student's best-aligned of 4 (`SVP.SVD_eid(sfm, 4)`,
  `SVP.Align_rsv`), both [B, D]: `iep.baselines.svd_kd.aligned_vectors`.
  Needs equal point counts and widths, as KD-SVD does. The IEP paper's MHGD
  rows come from this benchmark (IEPKT has no MHGD of its own). The
  gradient through the student's decomposition is the benchmark's own by
  default (`svd_gradient=reference`: its 'Svd_' formula, twice the exact
  one, and no gradient at all at a point `SVD_eid` decomposes by a
  stop-gradient `tf.svd`, 2/3 < H·W/D < 3/2: see `iep.baselines.svd_kd`);
  `svd_gradient=exact` is the exact thin-SVD gradient. One difference,
  ours: the teacher's vectors carry `op_utils.svd`'s sign rule (largest
  entry positive), where `SVD_eid` keeps whatever sign `eigh`/`tf.svd`
  returns; the heads' attention depends on that sign, so ours is
  deterministic where the reference's depends on the decomposition routine
  (the student's side is aligned to the teacher's sign by `Align_rsv`).
* `spca`, "MHGD on IEP's inputs": IEP's stacked-PCA components (first PCA per
  sample, IPCA over the batch: `iep.procedure.points.SensingPoints`), so that
  MHGD and IEP+BB's black-box term see identical inputs and differ only by
  the MPNN message; the IEP paper introduces the stacked PCA as the
  replacement of that SVD. Works across widths (its adapters).
"""

from __future__ import annotations

import tensorflow as tf

from iep.baselines.svd_kd import aligned_vectors, check_svd_gradient, require_alignable_points
from iep.core.clipped import ClippedDistiller
from iep.core.seeds import seed_stream
from iep.nets import TappedNetwork
from iep.op_utils.losses import MODULE_WEIGHT_DECAY, estimator_loss, kld, module_l2
from iep.procedure.black_box import HEADS, MultiHeadGraph
from iep.procedure.points import SensingPoints

INPUTS = ("svd", "spca")
SVD_STUDENT_COMPONENTS = 4  # Relation.py: SVP.SVD_eid(sfm, 4), aligned to the teacher's 1


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
        inputs: str = "svd",
        svd_gradient: str = "reference",
        seed: int | None = None,
    ):
        super().__init__(teacher)
        check_svd_gradient("mhgd", svd_gradient)
        self.svd_gradient = svd_gradient
        if pre_phase_steps < 1:
            raise ValueError(f"mhgd needs pre_phase_steps >= 1 (its attention module), got {pre_phase_steps}")
        if inputs not in INPUTS:
            raise ValueError(f"inputs for mhgd must be one of {INPUTS}, got {inputs!r}")
        self.pre_phase_steps, self.pre_phase_lr, self.inputs = pre_phase_steps, pre_phase_lr, inputs
        if inputs == "svd":
            require_alignable_points("mhgd", teacher, student, 1, SVD_STUDENT_COMPONENTS)
            self.points, widths = None, [spec.shape[-1] for spec in teacher.tap_specs]
        else:
            self.points = SensingPoints("mhgd", teacher, student, second_pca)
            widths = self.points.widths
        seeds = seed_stream(seed)  # each graph's noise its own stream
        self.heads = [
            MultiHeadGraph(widths[i - 1], widths[i], heads, seed=next(seeds), extrinsic_head=False,
                           name=f"mhgd_heads_{i}")
            for i in range(1, len(widths))
        ]  # fmt: skip
        for i, module in enumerate(self.heads, start=1):
            c_from, c_to = tf.zeros((2, widths[i - 1])), tf.zeros((2, widths[i]))
            module.estimate(c_from, module.attention(c_from, c_to), training=False)

    @property
    def trainable_variables(self):
        return self.points.adapter_variables if self.points else []

    @property
    def pre_phase_variables(self):
        return [v for m in self.heads for v in m.trainable_variables]

    def checkpointables(self):
        out = {"mhgd_heads": self.heads, "mhgd_rng": [m.seed_generator.state for m in self.heads]}
        if self.points:
            out.update(mhgd_spca=self.points.spca, mhgd_adapters=self.points.present_adapters)
        return out

    def _compressed(self, images, student_taps=None, update: bool = False):
        """(teacher's [B, D_i] per point, outside the gradient; the student's, or None without `student_taps`)."""
        if self.points is None:
            teacher_maps = self.teacher(images, training=False)["taps"]
            pairs = [
                aligned_vectors(s_map, t_map, 1, SVD_STUDENT_COMPONENTS, "eigh", self.svd_gradient)[1:]
                for s_map, t_map in zip(student_taps or [None] * len(teacher_maps), teacher_maps, strict=True)
            ]
            teacher = [v_t[..., 0] for v_t, _ in pairs]
            return teacher, None if student_taps is None else [v_s[..., 0] for _, v_s in pairs]
        points = self.points.teacher_points(images, update=update)
        teacher = [tf.stop_gradient(p["c"]) for p in points]
        student = None if student_taps is None else self.points.student_compressed(student_taps, points, training=True)
        return teacher, student

    def pre_phase_losses(self, images, labels):
        teacher, _ = self._compressed(images, update=True)
        losses = []
        for i, module in enumerate(self.heads, start=1):
            c_from, c_to = teacher[i - 1], teacher[i]
            estimate = module.estimate(c_from, module.attention(c_from, c_to, training=True))
            losses.append(estimator_loss(c_to, estimate))
        return {
            "estimator": tf.add_n(losses),
            "module_l2": module_l2(self.pre_phase_variables, MODULE_WEIGHT_DECAY),
        }

    def losses(self, images, labels, student_outputs, epoch):
        teacher_c, student_c = self._compressed(images, student_outputs["taps"])
        terms = []
        for i, module in enumerate(self.heads, start=1):
            logits_t = tf.stop_gradient(module.attention(teacher_c[i - 1], teacher_c[i], training=False))
            logits_s = module.attention(student_c[i - 1], student_c[i], training=False)
            terms.append(kld(tf.tanh(logits_s), tf.tanh(logits_t)))
        return {"graph": tf.add_n(terms)}
