"""KD-SVD and KD-EID (Lee, Kim & Song, ECCV 2018), as in the IEP author's TF1 benchmark.

Reference: `sseung0703/KD_methods_with_TF` at 9fb5414, `nets/Shared.py` (`KD_SVD` lines 33-74, its
`dist_type` 'SVD' or 'EID'), `nets/SVP.py` (`SVD` lines 7-33, `SVD_eid` 35-82, `Align_rsv` 84-90)
and `op_util.py` (`Optimizer_w_Distillation` lines 33-53: for 'KD-*' the distillation
gradient is clipped by the norm of the cross-entropy gradient times
σ(epoch), our `ClippedDistiller`). On the activated stage outputs (`taps`,
the benchmark's `feat` collection), per sensing point:

* the teacher's top-K singular triplets of the sample's H·W×D feature
  matrix (K = 1) and the student's top K+3 = 4 (`Shared.py` lines 47 and 53:
  `SVP.SVD(tfm, K)`, `SVP.SVD(sfm, K+3)`; the ECCV paper and the older
  `Distillation.py` use 4 for both), with s L2-normalized over the K values;
* the student's right singular vectors aligned to the teacher's:
  `SVP.Align_rsv(V_S, V_T)` gives each teacher vector the student vector of
  largest |cosine| among the 4, with that cosine's sign (the alignment is
  outside the gradient, a mask); both sets scaled by the teacher's s;
* between consecutive points, the RBF relation exp(−(v_i,a − v_{i−1},c)²/8)
  of every pair of entries, per vector; loss Σ (R_S − R_T)² (a sum over
  batch, entries and pairs of points; non-finite terms zeroed).

KD-SVD and KD-EID differ only in how the decomposition is computed:
`tf.linalg.svd` (KD-SVD) or the eigendecomposition of the smaller Gram
matrix (KD-EID). The gradient through the student's decomposition
(`svd_gradient`) is, by default, the benchmark's own, as it executes
(KD_methods_with_TF `nets/SVP.py`):

* `reference` (default): `gradient_svd` ('Svd_', lines 92-128), which both
  paths use (`SVD` by `gradient_override_map`, `SVD_eid` by
  `SVD_grad_map`): on our tall maps (H·W ≥ D) exactly twice the exact
  thin-SVD gradient (`op_utils.svd`, `gradient="reference"`). And
  `SVD_eid` (KD-EID, MHGD) decomposes `tf.stop_gradient(x)` by `tf.svd`
  where 2/3 < H·W/D < 3/2 (lines 47-53): such a point (8×8×64 in a CIFAR
  WRN-16-1) passes no gradient to the student at all.
* `exact`: the exact thin-SVD gradient at every point (what this module
  computed before the reference's was transcribed).

One difference, ours: the singular vectors carry `op_utils.svd`'s sign rule
(largest entry positive), where the reference keeps whatever sign its
decomposition returns. The alignment's sign flip makes the student's side
sign-free; the teacher's RBF relation between points depends on it, so ours
is deterministic where theirs depends on the SVD routine. Needs equal widths
at every point (the alignment compares D-vectors).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from iep.baselines.hints import _require_equal_points
from iep.core.clipped import ClippedDistiller
from iep.nets import TappedNetwork
from iep.op_utils.svd import GRADIENTS, finite_or_zero, truncated_svd

RBF_WIDTH = 8.0
# SVD_eid's band of H·W / D where it decomposes a stop-gradient copy (KD_methods_with_TF nets/SVP.py line 49).
EID_NO_GRADIENT_BAND = (2 / 3, 3 / 2)


def check_svd_gradient(method: str, svd_gradient: str) -> None:
    if svd_gradient not in GRADIENTS:
        raise ValueError(f"svd_gradient for {method} must be one of {GRADIENTS}, got {svd_gradient!r}")


def passes_no_gradient(feature_map_shape, decomposition: str, svd_gradient: str) -> bool:
    """Whether the reference's `SVD_eid` stops the gradient at a point of this [.., H, W, D] shape."""
    if svd_gradient != "reference" or decomposition != "eigh":
        return False
    ratio = feature_map_shape[-3] * feature_map_shape[-2] / feature_map_shape[-1]
    return EID_NO_GRADIENT_BAND[0] < ratio < EID_NO_GRADIENT_BAND[1]


def align_to_teacher(v_student: tf.Tensor, v_teacher: tf.Tensor) -> tf.Tensor:
    """[B, D, K] student vectors re-ordered and sign-flipped so column j best matches teacher column j."""
    cosine = tf.matmul(v_student, v_teacher, transpose_a=True)  # [B, K_s, K_t]
    magnitude = tf.abs(cosine)
    best = tf.equal(magnitude, tf.reduce_max(magnitude, axis=1, keepdims=True))
    mask = tf.stop_gradient(tf.where(best, tf.sign(cosine), tf.zeros_like(cosine)))
    return tf.matmul(v_student, mask)


def singular_vectors(
    feature_map: tf.Tensor, k: int, decomposition: str, svd_gradient: str = "exact"
) -> tuple[tf.Tensor, tf.Tensor]:
    """(s L2-normalized [B, K], right singular vectors [B, D, K]) of the per-sample H·W×D matrices."""
    if passes_no_gradient(feature_map.shape, decomposition, svd_gradient):
        feature_map = tf.stop_gradient(feature_map)
    s, _, v = truncated_svd(feature_map, k, decomposition, gradient=svd_gradient)
    return tf.math.l2_normalize(s, axis=1), v


def require_alignable_points(
    method: str, teacher: TappedNetwork, student: TappedNetwork, components: int, student_components: int
) -> None:
    """Singular vectors are aligned point by point: equal point counts (at least 2, the relations are between
    consecutive points), equal widths, and enough rank for the student's vectors."""
    _require_equal_points(method, teacher, student)
    if len(teacher.tap_specs) < 2:
        raise ValueError(f"{method} relates consecutive sensing points: it needs at least 2")
    for s, t in zip(student.tap_specs, teacher.tap_specs, strict=True):
        if s.shape[-1] != t.shape[-1]:
            raise ValueError(f"{method} aligns singular vectors: it needs equal widths; student {s.shape} vs {t.shape}")
        rank = min(s.shape[0] * s.shape[1], s.shape[-1])
        if not 1 <= components <= student_components <= rank:
            raise ValueError(
                f"{method} needs 1 <= components <= student_components <= min(H·W, D) = {rank} at {s.shape}, "
                f"got {components} and {student_components}"
            )


def aligned_vectors(
    student_map: tf.Tensor | None,
    teacher_map: tf.Tensor,
    k: int,
    k_student: int,
    decomposition: str,
    svd_gradient: str = "exact",
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """(teacher's s [B, k], teacher's right singular vectors [B, D, k], the student's top `k_student` aligned
    to them [B, D, k] or None without a student map): the compression KD-SVD and MHGD share
    (KD_methods_with_TF `nets/Shared.py`, `nets/Relation.py`: `SVP.SVD*(tfm, K)`, `SVP.SVD*(sfm, K+3)`,
    `SVP.Align_rsv`). The teacher's side is outside the gradient; `svd_gradient` is the student's (module
    docstring)."""
    s_t, v_t = singular_vectors(tf.stop_gradient(teacher_map), k, decomposition)
    if student_map is None:
        return s_t, v_t, None
    _, v_s = singular_vectors(student_map, k_student, decomposition, svd_gradient)
    return s_t, v_t, align_to_teacher(v_s, v_t)


def rbf_relation(later: tf.Tensor, earlier: tf.Tensor) -> tf.Tensor:
    """[B, D_later, D_earlier, K]: exp(−(later_a − earlier_c)² / 8) per vector."""
    return tf.exp(-tf.square(later[:, :, None, :] - earlier[:, None, :, :]) / RBF_WIDTH)


def svd_kd_loss(
    student_maps: Sequence[tf.Tensor],
    teacher_maps: Sequence[tf.Tensor],
    k: int,
    decomposition: str,
    k_student: int | None = None,
    svd_gradient: str = "exact",
) -> tf.Tensor:
    """KD-SVD's loss: the teacher's top-k right singular vectors, each matched by the best of the student's
    top `k_student` (default k)."""
    terms, previous = [], None
    for s_map, t_map in zip(student_maps, teacher_maps, strict=True):
        s_t, v_t, v_s = aligned_vectors(s_map, t_map, k, k_student or k, decomposition, svd_gradient)
        scale = tf.stop_gradient(s_t)[:, None, :]
        v_t, v_s = tf.stop_gradient(v_t * scale), v_s * scale
        if previous is not None:
            r_s = rbf_relation(v_s, previous[0])
            r_t = tf.stop_gradient(rbf_relation(v_t, previous[1]))
            terms.append(tf.reduce_sum(finite_or_zero(tf.square(r_s - r_t))))
        previous = (v_s, v_t)
    return tf.add_n(terms)


class KDSVDDistiller(ClippedDistiller):
    name, loss_names = "kd_svd", ("svd",)
    decay_every_variable = True  # KD_methods_with_TF `nets/ResNet.py` arg scope: kernels, BN γ/β, biases
    decomposition = "svd"

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        components: int = 1,
        student_components: int = 4,
        svd_gradient: str = "reference",
    ):
        super().__init__(teacher)
        require_alignable_points(self.name, teacher, student, components, student_components)
        check_svd_gradient(self.name, svd_gradient)
        self.components, self.student_components, self.svd_gradient = components, student_components, svd_gradient

    def losses(self, images, labels, student_outputs, epoch):
        teacher_maps = self.teacher(images, training=False)["taps"]
        loss = svd_kd_loss(
            student_outputs["taps"],
            teacher_maps,
            self.components,
            self.decomposition,
            self.student_components,
            self.svd_gradient,
        )
        return {self.loss_names[0]: loss}


class KDEIDDistiller(KDSVDDistiller):
    name, loss_names = "kd_eid", ("eid",)
    decomposition = "eigh"
