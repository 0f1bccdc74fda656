"""MLKD — multi-level logit distillation (Jin, Wang & Lin, CVPR 2023), as the authors' code executes it.

Reference: `Jin-Ying/Multi-Level-Logit-Distillation` at 6327e73, `mdistiller/distillers/KD_ours.py`: `kd_loss`
lines 13-21, `cc_loss` 24-34, `bc_loss` 37-47, `KD_ours.forward_train` 89-255 (masks 98-111, CE 114, the KD sums
115-162, class level 164-185, batch level 207-227, `losses_dict` 249-254); `mdistiller/engine/cfg.py` (KD:
T = 4, CE weight 0.1, KD weight 0.9) and `engine/trainer.py` (`AugTrainer`: each batch as a weak and a strong
view, the loss the sum of `losses_dict`). The strong view is `iep.datasets.rand_augment` (FixMatch's
RandAugment, as the code's `dataset/cifar100.py`).

Per step, with s/t the student's/teacher's logits on the weak (w) and strong (g) views, T₀ = 4, Ts = (T₀, 3, 5,
2, 6), each KL term T² · batch mean of KL(softmax(t/T) ‖ softmax(s/T)):
* CE: 0.1 · (CE(s_w) + CE(s_g)) — the loop's cross-entropy on the weak view at weight 0.1, plus `ce_strong`.
* Masks: the teacher's weak-view confidence max softmax ≤ its batch median (`np.percentile(·, 50)`), and each
  class's summed confidence ≤ the median over classes. The code multiplies the *reduced* (scalar) losses by
  the masks and takes the mean, so each masked sum is scaled by the masks' mean (the share of the batch, or of
  the classes, at or below the median) — that is what we compute.
* `kd`: 0.9 · Σ_T KL_T(w) · mean(mask) + 0.9 · (KL_T₀(g) + KL_3(g) + KL_5(g) + KL_2(w) + KL_6(w)) — the strong
  sum's last two terms read the weak view in the code, and so they do here.
* `cc` (class level): 0.9 · Σ_T ‖P_tᵀP_t − P_sᵀP_s‖² / C · mean(class mask), P = softmax(logits_w / T) [B, C].
* `bc` (batch level): 0.9 · Σ_T ‖P_tP_tᵀ − P_sP_sᵀ‖² / B · mean(mask).
The strong view's class- and batch-level sums the code computes but leaves out of `losses_dict` are left out.
"""

from __future__ import annotations

import tensorflow as tf

from iep.baselines.logit_kd import kd_loss, teacher_logits
from iep.core.distiller import Distiller
from iep.nets import TappedNetwork

OTHER_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # after T₀, in the code's order


def median(values: tf.Tensor) -> tf.Tensor:
    """`np.percentile(values, 50)`: linear interpolation between the middle order statistics."""
    ordered = tf.sort(tf.reshape(values, [-1]))
    position = 0.5 * tf.cast(tf.size(ordered) - 1, tf.float32)
    low, high = tf.floor(position), tf.math.ceil(position)
    a, b = tf.gather(ordered, tf.cast(low, tf.int32)), tf.gather(ordered, tf.cast(high, tf.int32))
    return a + (b - a) * (position - low)


def class_consistency(student_logits, teacher_logits_, temperature: float) -> tf.Tensor:
    """`cc_loss`: the classes' Gram matrices of softmax(·/T), squared difference summed over C × C, / C."""
    p_s = tf.nn.softmax(student_logits / temperature)
    p_t = tf.nn.softmax(teacher_logits_ / temperature)
    gap = tf.matmul(p_t, p_t, transpose_a=True) - tf.matmul(p_s, p_s, transpose_a=True)
    return tf.reduce_sum(tf.square(gap)) / tf.cast(tf.shape(p_s)[1], tf.float32)


def batch_consistency(student_logits, teacher_logits_, temperature: float) -> tf.Tensor:
    """`bc_loss`: the samples' Gram matrices of softmax(·/T), squared difference summed over B × B, / B."""
    p_s = tf.nn.softmax(student_logits / temperature)
    p_t = tf.nn.softmax(teacher_logits_ / temperature)
    gap = tf.matmul(p_t, p_t, transpose_b=True) - tf.matmul(p_s, p_s, transpose_b=True)
    return tf.reduce_sum(tf.square(gap)) / tf.cast(tf.shape(p_s)[0], tf.float32)


def mlkd_terms(
    student_weak: tf.Tensor,
    student_strong: tf.Tensor,
    teacher_weak: tf.Tensor,
    teacher_strong: tf.Tensor,
    temperature: float,
    weight: float,
) -> dict[str, tf.Tensor]:
    """The code's `loss_kd`, `loss_cc` and `loss_bc` from the four logits (the CE terms aside)."""
    confidence = tf.reduce_max(tf.nn.softmax(teacher_weak), axis=1)
    mask = tf.reduce_mean(tf.cast(confidence <= median(confidence), tf.float32))
    class_confidence = tf.reduce_sum(tf.nn.softmax(teacher_weak), axis=0)
    class_mask = tf.reduce_mean(tf.cast(class_confidence <= median(class_confidence), tf.float32))
    temperatures = (temperature, *OTHER_TEMPERATURES)
    weak_kd = tf.add_n([kd_loss(student_weak, teacher_weak, t) for t in temperatures]) * mask
    strong_kd = tf.add_n(
        [kd_loss(student_strong, teacher_strong, t) for t in temperatures[:3]]
        + [kd_loss(student_weak, teacher_weak, t) for t in temperatures[3:]]
    )
    cc = tf.add_n([class_consistency(student_weak, teacher_weak, t) for t in temperatures]) * class_mask
    bc = tf.add_n([batch_consistency(student_weak, teacher_weak, t) for t in temperatures]) * mask
    return {"kd": weight * (weak_kd + strong_kd), "cc": weight * cc, "bc": weight * bc}


class MLKDDistiller(Distiller):
    name, loss_names = "mlkd", ("ce_strong", "kd", "cc", "bc")
    uses_teacher_logits = True
    decay_every_variable = True  # mdistiller's torch SGD(weight_decay) over every student parameter
    batch_extras = ("strong_view",)
    min_batch_size = 2  # the batch median and the batch-level Gram matrices

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        temperature: float = 4.0,
        weight: float = 0.9,
        cross_entropy_weight: float = 0.1,
    ):
        super().__init__(teacher)
        self.student = student
        self.temperature, self.weight = temperature, weight
        self.cross_entropy_weight = cross_entropy_weight

    def losses(self, images, labels, student_outputs, epoch, strong_view):
        student_weak = tf.cast(student_outputs["logits"], tf.float32)
        student_strong = tf.cast(self.student(strong_view, training=True)["logits"], tf.float32)
        teacher_weak, teacher_strong = teacher_logits(self.teacher, images), teacher_logits(self.teacher, strong_view)
        ce_strong = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_strong))
        terms = mlkd_terms(student_weak, student_strong, teacher_weak, teacher_strong, self.temperature, self.weight)
        return {"ce_strong": self.cross_entropy_weight * ce_strong, **terms}
