"""Feature and relation distillation: AT (Zagoruyko & Komodakis, ICLR 2017) and RKD (Park et al., CVPR 2019).

AT — the official code, `szagoruyko/attention-transfer` `cifar.py`
(`at`, `at_loss`, and `opt.beta * sum(loss_groups)` in `h`), β = 1000 as its
README sets for CIFAR: per WRN group output (the raw residual stream before
any BN-ReLU: our `stage_outputs`), the attention map is the channel mean of
F², flattened and L2-normalized per sample; loss β · Σ_points mean((Q_s − Q_t)²)
(no ½: the IEP author's TF1 benchmark, `KD_methods_with_TF/nets/Distillation.py`,
uses β/2 on post-ReLU features; we follow the method's own code). Teacher and
student points must have equal H×W (channels may differ).
RKD — the IEP author's TF1 benchmark, `KD_methods_with_TF/nets/Relation.py`
(`RKD`, the "RKD fixed" of its README: `source = tf.nn.l2_normalize(source, 1)`,
likewise the target, before the potentials), at RepDistiller's weights w_d = 25,
w_a = 50 (`distiller_zoo/RKD.py`; also mdistiller's CIFAR setting), on the
penultimate embedding (global-average-pooled last sensing point: `feat[-1]`
as RepDistiller's `train_student.py` passes it, the TF1 code's pooled
feature). Smooth-L1 (mean over all entries) between distance-wise potentials
(pairwise distances over their mean over the positive entries; the diagonal
is 0) and angle-wise potentials (cosines of the angles of every sample
triple), plus the student's cross-entropy (β = 1). `normalize=False` is
RepDistiller's own RKD (no normalization). The 100/200 of the author's TF2
code belong to L2-normalized logits, not to this embedding.
"""

from __future__ import annotations

import tensorflow as tf

from iep.engine.distiller import Distiller


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


def distance_potential(x: tf.Tensor) -> tf.Tensor:
    squared = tf.reduce_sum(tf.square(x), -1)
    distance = tf.sqrt(tf.maximum(squared[:, None] + squared[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True), 1e-12))
    off_diagonal = 1.0 - tf.eye(tf.shape(x)[0])
    mean = tf.reduce_sum(distance * off_diagonal) / tf.maximum(tf.reduce_sum(off_diagonal), 1.0)
    return distance * off_diagonal / tf.maximum(mean, 1e-12)


def angle_potential(x: tf.Tensor) -> tf.Tensor:
    """[B, B, B]: cos ∠(x_j − x_i, x_k − x_i)."""
    e = tf.math.l2_normalize(x[None, :, :] - x[:, None, :], axis=-1)
    return tf.matmul(e, e, transpose_b=True)


def rkd_loss(
    student: tf.Tensor, teacher: tf.Tensor, distance_weight: float, angle_weight: float, normalize: bool = True
) -> tf.Tensor:
    if normalize:
        student, teacher = tf.math.l2_normalize(student, axis=1), tf.math.l2_normalize(teacher, axis=1)
    return distance_weight * huber(distance_potential(student), distance_potential(teacher)) + angle_weight * huber(
        angle_potential(student), angle_potential(teacher)
    )


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

    def __init__(self, teacher, distance_weight: float = 25.0, angle_weight: float = 50.0, normalize: bool = True):
        super().__init__(teacher)
        self.distance_weight, self.angle_weight, self.normalize = distance_weight, angle_weight, normalize

    def losses(self, images, labels, student_outputs, epoch):
        def embed(taps):
            return tf.reduce_mean(tf.cast(taps[-1], tf.float32), axis=[1, 2])

        teacher = tf.stop_gradient(embed(self.teacher(images, training=False)["taps"]))
        student = embed(student_outputs["taps"])
        return {"rkd": rkd_loss(student, teacher, self.distance_weight, self.angle_weight, self.normalize)}
