"""Logit distillation: KD (Hinton et al. 2015) and DKD (Zhao et al., CVPR 2022).

Defaults are the CIFAR-100 settings of mdistiller (the DKD authors' code base):
KD — temperature 4, cross-entropy weight 0.1, KD weight 0.9;
DKD — mdistiller's WRN pair, `configs/cifar100/dkd/wrn40_2_wrn_16_2.yaml`
(β = 6; `mdistiller/engine/cfg.py` gives the rest: temperature 4, α
(target-class term) 1, cross-entropy weight 1, warm-up 20 epochs; β = 8 is
the cfg default their other pairs keep) with `mdistiller/distillers/DKD.py`'s
linear warm-up min(epoch / 20, 1) over their 240-epoch run. The warm-up is
kept as that fraction of our run (1/12 of it), so a short run reaches full
weight as theirs does; `warmup_fraction` overrides it.
KL terms are batch means scaled by T², as there.
"""

from __future__ import annotations

import tensorflow as tf

from iep.engine.distiller import Distiller


def teacher_logits(teacher, images) -> tf.Tensor:
    """The frozen teacher's float32 logits, outside the gradient."""
    return tf.stop_gradient(tf.cast(teacher(images, training=False)["logits"], tf.float32))


def kd_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """T² · mean_batch KL(softmax(t/T) ‖ softmax(s/T))."""
    p_teacher = tf.nn.softmax(teacher_logits / temperature)
    log_ratio = tf.nn.log_softmax(teacher_logits / temperature) - tf.nn.log_softmax(student_logits / temperature)
    return temperature**2 * tf.reduce_mean(tf.reduce_sum(p_teacher * log_ratio, axis=-1))


def dkd_loss(student_logits, teacher_logits, labels, alpha: float, beta: float, temperature: float) -> tf.Tensor:
    """α·TCKD + β·NCKD: KL of the (target, rest) binary split and KL among the non-target classes."""
    num_classes = student_logits.shape[-1]
    target = tf.one_hot(labels, num_classes, dtype=student_logits.dtype)
    p_s = tf.nn.softmax(student_logits / temperature)
    p_t = tf.nn.softmax(teacher_logits / temperature)
    b_s = tf.stack([tf.reduce_sum(p_s * target, -1), tf.reduce_sum(p_s * (1 - target), -1)], axis=-1)
    b_t = tf.stack([tf.reduce_sum(p_t * target, -1), tf.reduce_sum(p_t * (1 - target), -1)], axis=-1)
    tckd = tf.reduce_mean(tf.reduce_sum(b_t * (tf.math.log(b_t + 1e-12) - tf.math.log(b_s + 1e-12)), -1))
    mask = 1000.0 * target  # removes the target class from the non-target softmax
    log_q_s = tf.nn.log_softmax(student_logits / temperature - mask)
    q_t = tf.nn.softmax(teacher_logits / temperature - mask)
    log_q_t = tf.nn.log_softmax(teacher_logits / temperature - mask)
    nckd = tf.reduce_mean(tf.reduce_sum(q_t * (log_q_t - log_q_s), -1))
    return temperature**2 * (alpha * tckd + beta * nckd)


class KDDistiller(Distiller):
    name, loss_names = "kd", ("kd",)
    uses_teacher_logits = True

    def __init__(self, teacher, temperature: float = 4.0, weight: float = 0.9, cross_entropy_weight: float = 0.1):
        super().__init__(teacher)
        self.temperature, self.weight, self.cross_entropy_weight = temperature, weight, cross_entropy_weight

    def losses(self, images, labels, student_outputs, epoch):
        student = tf.cast(student_outputs["logits"], tf.float32)
        return {"kd": self.weight * kd_loss(student, teacher_logits(self.teacher, images), self.temperature)}


class DKDDistiller(Distiller):
    name, loss_names = "dkd", ("dkd",)
    uses_teacher_logits = True

    def __init__(
        self,
        teacher,
        epochs: int,
        alpha: float = 1.0,
        beta: float = 6.0,
        temperature: float = 4.0,
        warmup_fraction: float = 20 / 240,
    ):
        super().__init__(teacher)
        if not 0.0 <= warmup_fraction <= 1.0:
            raise ValueError(f"dkd warmup_fraction must be in [0, 1], got {warmup_fraction}")
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.warmup_epochs = warmup_fraction * epochs

    def losses(self, images, labels, student_outputs, epoch):
        student = tf.cast(student_outputs["logits"], tf.float32)
        ramp = tf.minimum((tf.cast(epoch, tf.float32) + 1.0) / max(self.warmup_epochs, 1e-9), 1.0)
        loss = dkd_loss(student, teacher_logits(self.teacher, images), labels, self.alpha, self.beta, self.temperature)
        return {"dkd": ramp * loss}
