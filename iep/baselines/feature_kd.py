"""Feature and relation distillation: AT (Zagoruyko & Komodakis, ICLR 2017) and RKD (Park et al., CVPR 2019).

AT — the official code, `szagoruyko/attention-transfer` at 893df54: `utils.py`
(`at`, `at_loss`, lines 18-23) and `cifar.py` (the group outputs, lines 129-138;
`at_loss` per group, line 180; `opt.beta * sum(loss_groups)` in `h`, lines 219-223),
β = 1000 as its README sets for CIFAR (line 68): per WRN group output (the raw residual stream before
any BN-ReLU: our `stage_outputs`), the attention map is the channel mean of
F², flattened and L2-normalized per sample; loss β · Σ_points mean((Q_s − Q_t)²)
(no ½: the IEP author's TF1 benchmark, `KD_methods_with_TF/nets/Distillation.py`,
uses β/2 on post-ReLU features; we follow the method's own code). Teacher and
student points must have equal H×W (channels may differ).
RKD — Park et al.'s distance- and angle-wise potentials on the penultimate
embedding (global-average-pooled last sensing point: `feat[-1]` as
RepDistiller's `train_student.py` passes it, the TF1 code's pooled feature),
smooth-L1 (mean over all entries) between teacher and student potentials,
plus the student's cross-entropy (β = 1). Two references, and which part
follows which:
* weights w_d = 25, w_a = 50 and the distance mean over the off-diagonal
  entries (`distance_mean=off_diagonal`, the default): RepDistiller
  `distiller_zoo/RKD.py` at b84f547 (lines 10-58; `t_d[t_d > 0].mean()`, line 22,
  on a matrix whose diagonal `pdist` zeroes, line 57; also mdistiller's CIFAR setting);
* `normalize=True` (default), the L2 normalization of both embeddings
  before the potentials: the IEP author's TF1 benchmark,
  KD_methods_with_TF `nets/Relation.py` at 9fb5414 (lines 32-33: `source =
  tf.nn.l2_normalize(source, 1)`, likewise the target; already at commit 5654178, the version whose
  MHGD aligns a single student vector, so it is older than the README's
  "RKD fixed" note); `normalize=False` is RepDistiller's own RKD;
* `distance_mean=all`: that TF1 file's mean as it executes (lines 22-23:
  `reduce_sum(distance) / reduce_sum(where(distance > 0, 1, 0))` where the
  diagonal distance is √1e-12 = 1e-6 > 0, so the mean is over all B²
  entries and the diagonal stays 1e-6/μ), for the TF1 benchmark's RKD
  together with its own weights `distance_weight=100,angle_weight=200`.
The 100/200 of the author's TF2 code belong to L2-normalized logits, not
to this embedding.
"""

from __future__ import annotations

import tensorflow as tf

from iep.core.distiller import Distiller


def attention_map(feature_map: tf.Tensor) -> tf.Tensor:
    """[B, H·W]: channel mean of F², L2-normalized per sample."""
    q = tf.reduce_mean(tf.square(tf.cast(feature_map, tf.float32)), axis=-1)
    return tf.math.l2_normalize(tf.reshape(q, [tf.shape(q)[0], -1]), axis=-1)


def at_loss(student_maps, teacher_maps, beta: float) -> tf.Tensor:
    terms = [
        tf.reduce_mean(tf.square(attention_map(s) - attention_map(t)))
        for s, t in zip(student_maps, teacher_maps, strict=True)
    ]
    return beta * tf.add_n(terms)


def huber(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    diff = tf.abs(x - y)
    return tf.reduce_mean(tf.where(diff <= 1.0, 0.5 * tf.square(diff), diff - 0.5))


DISTANCE_MEANS = ("off_diagonal", "all")


def distance_potential(x: tf.Tensor, mean: str = "off_diagonal") -> tf.Tensor:
    """Pairwise distances over their mean: off-diagonal (RepDistiller) or all B² entries (the TF1 benchmark)."""
    squared = tf.reduce_sum(tf.square(x), -1)
    distance = tf.sqrt(tf.maximum(squared[:, None] + squared[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True), 1e-12))
    if mean == "all":  # KD_methods_with_TF nets/Relation.py lines 22-23, as executed
        positive = tf.reduce_sum(tf.cast(distance > 0.0, distance.dtype))
        return distance / (tf.reduce_sum(distance) / positive + 1e-8)
    off_diagonal = 1.0 - tf.eye(tf.shape(x)[0])
    mean = tf.reduce_sum(distance * off_diagonal) / tf.maximum(tf.reduce_sum(off_diagonal), 1.0)
    return distance * off_diagonal / tf.maximum(mean, 1e-12)


def angle_potential(x: tf.Tensor) -> tf.Tensor:
    """[B, B, B]: cos ∠(x_j − x_i, x_k − x_i)."""
    e = tf.math.l2_normalize(x[None, :, :] - x[:, None, :], axis=-1)
    return tf.matmul(e, e, transpose_b=True)


def rkd_loss(
    student: tf.Tensor,
    teacher: tf.Tensor,
    distance_weight: float,
    angle_weight: float,
    normalize: bool = True,
    distance_mean: str = "off_diagonal",
) -> tf.Tensor:
    if normalize:
        student, teacher = tf.math.l2_normalize(student, axis=1), tf.math.l2_normalize(teacher, axis=1)
    distance = huber(distance_potential(student, distance_mean), distance_potential(teacher, distance_mean))
    return distance_weight * distance + angle_weight * huber(angle_potential(student), angle_potential(teacher))


class ATDistiller(Distiller):
    name, loss_names = "at", ("at",)
    decay_every_variable = True  # attention-transfer `cifar.py`: SGD weight_decay over every parameter

    def __init__(self, teacher, student, beta: float = 1000.0):
        super().__init__(teacher)
        for s, t in zip(student.tap_specs, teacher.tap_specs, strict=True):
            if s.shape[:2] != t.shape[:2]:
                raise ValueError(f"AT needs equal H×W at every sensing point; student {s.shape} vs teacher {t.shape}")
        self.beta = beta

    def losses(self, images, labels, student_outputs, epoch):
        teacher_maps = [tf.stop_gradient(t) for t in self.teacher(images, training=False)["stage_outputs"]]
        return {"at": at_loss(student_outputs["stage_outputs"], teacher_maps, self.beta)}


class RKDDistiller(Distiller):
    name, loss_names = "rkd", ("rkd",)
    decay_every_variable = True  # RepDistiller `train_student.py`: SGD(trainable_list, weight_decay)
    min_batch_size = 3  # angles need sample triples

    def __init__(
        self,
        teacher,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        normalize: bool = True,
        distance_mean: str = "off_diagonal",
    ):
        super().__init__(teacher)
        if distance_mean not in DISTANCE_MEANS:
            raise ValueError(f"distance_mean for rkd must be one of {DISTANCE_MEANS}, got {distance_mean!r}")
        self.distance_weight, self.angle_weight, self.normalize = distance_weight, angle_weight, normalize
        self.distance_mean = distance_mean

    def losses(self, images, labels, student_outputs, epoch):
        def embed(taps):
            return tf.reduce_mean(tf.cast(taps[-1], tf.float32), axis=[1, 2])

        teacher = tf.stop_gradient(embed(self.teacher(images, training=False)["taps"]))
        student = embed(student_outputs["taps"])
        loss = rkd_loss(student, teacher, self.distance_weight, self.angle_weight, self.normalize, self.distance_mean)
        return {"rkd": loss}
