"""Logit distillation: KD (Hinton et al. 2015) and DKD (Zhao et al., CVPR 2022).

KD has two named settings (`setting=`, `--distill_args=setting=...`):
* `author` (default; the paper's Table 7, the only table with KD): the IEP
  author's TF1 benchmark, KD_methods_with_TF `nets/ResNet.py`
  (`Response.Soft_logits(logits, logits_tch, 4)`: T = 4), `nets/Response.py`
  (`Soft_logits`: mean_batch KL(softmax(t/T) ‖ softmax(s/T)), no T²) and
  `op_util.py` (`Optimizer_w_Distillation`: 0.7 · CE + 0.3 · KL);
* `mdistiller`: the DKD authors' CIFAR-100 setting (mdistiller
  `configs/cifar100/kd.yaml`, `mdistiller/distillers/KD.py` at e8c5bb3:
  `kd_loss` lines 8-13, `forward_train` 25-39): T = 4,
  0.1 · CE + 0.9 · T² · KL.
* `lskd`: logit standardization (Sun et al., CVPR 2024), the authors' code
  `sunshangquan/logit-standardization-KD`: `mdistiller/distillers/KD.py`
  at 6083e2d (`normalize` lines 7-10: (z − mean) / (1e-7 + std), torch's
  unbiased std; `kd_loss` 12-19: before the softmax of both sides) with `tools/train.py`'s `--logit-stand --base-temp 2
  --kd-weight 9` at mdistiller's CE weight 0.1: T = 2, 0.1 · CE + 9 · T² · KL.
`temperature`, `weight` and `cross_entropy_weight` override the setting's values;
`logit_stand` turns the standardization on or off in any setting (it is a
pre-step, also of DKD and DIST).

DKD — mdistiller's WRN pair, `configs/cifar100/dkd/wrn40_2_wrn_16_2.yaml`
(β = 6; `mdistiller/engine/cfg.py` gives the rest: temperature 4, α
(target-class term) 1, cross-entropy weight 1, warm-up 20 epochs; β = 8 is
the cfg default their other pairs keep) with `mdistiller/distillers/DKD.py`
at e8c5bb3 (`dkd_loss` lines 8-32; the linear warm-up min(epoch / 20, 1),
line 72) over their 240-epoch run. A warm-up of a
loss weight shapes the student's own schedule, so by the one rule for
reference clocks (`iep.methods.CLOCK_RULE`) it is a share of the run:
`warmup_fraction` 20/240 (the default, mdistiller's), 8.3 of 100 epochs,
1.25 of 15 (about 49 steps of a 10 % CIFAR-10 run, where mdistiller's
lasts ~15,600). Values above 1 are allowed: the weight then never reaches
1 within the run (e.g. 20 · 782 / 585 ≈ 26.7 replays mdistiller's 15,600
warm-up steps in a 585-step run). KL terms are batch means scaled by T², as
there. `logit_stand=true` standardizes both sides' logits first (LSKD's
`mdistiller/distillers/DKD.py`); the authors' DKD recipe is `tools/train.py`
lines 115-118 as fixed at 6b58661 (`--kd-weight 9 --base-temp 2`: α ← 9·α,
β ← 9·β, `DKD.T` ← 2; before that commit β was 9·(9·α) and T stayed 4):
`alpha=9,beta=54,temperature=2,logit_stand=true` with the WRN pair's β = 6,
which `setting=lskd` names (`setting=mdistiller`, the default, is DKD's own).

DIST (Huang et al., NeurIPS 2022), the authors' code
`hunto/image_classification_sota` `lib/models/losses/dist_kd.py` at 2bc4832
(`cosine_similarity`, `pearson_correlation` lines 4-10, the relations 13-18,
`DIST` 21-33, β = γ = 1): on softmax(z / τ), β · (1 − mean_batch Pearson(y_s, y_t)
over classes) + γ · (1 − mean_class Pearson over the batch), times τ², cosine
eps 1e-8, CE weight 1. Two named settings (`setting=`):
* `cifar` (default; the tables here are CIFAR): the authors' CIFAR-100 recipe at
  the commit `hunto/DIST_KD` pins as its `classification` submodule (d9662f7):
  `configs/strategies/distill/dist_cifar.yaml` lines 32-36 (`kd: dist_t4`,
  `kd_loss_weight: 2.`, `opt_no_filter: True`) with `lib/models/losses/kd_loss.py`
  lines 31-33 (`dist_t<τ>` → `DIST(beta=1, gamma=1, tau=τ)`) and 57 (CE + 2 · DIST):
  τ = 4, KD weight 2, weight decay on every variable (`tools/train.py` line 116:
  `filter_bias_and_bn=not args.opt_no_filter`);
* `imagenet`: the ImageNet recipe of the May-2022 code (2bc4832), `kd_loss.py`'s
  `--kd dist`: τ = 1, KD weight 1, no decay on BN parameters and biases
  (`lib/utils/optim.py` `filter_bias_and_bn=True`).
The recipes' optimizers (CIFAR: SGD without Nesterov, LR 0.05, batch 64, 240
epochs) stay the protocol's, as for every method on the one loop.

"""

from __future__ import annotations

import math

import tensorflow as tf

from iep.core.distiller import Distiller


def teacher_logits(teacher, images) -> tf.Tensor:
    """The frozen teacher's float32 logits, outside the gradient."""
    return tf.stop_gradient(tf.cast(teacher(images, training=False)["logits"], tf.float32))


def kd_loss(
    student_logits: tf.Tensor, teacher_logits: tf.Tensor, temperature: float, scale_by_t2: bool = True
) -> tf.Tensor:
    """T² · mean_batch KL(softmax(t/T) ‖ softmax(s/T)) (without the T² if not `scale_by_t2`)."""
    p_teacher = tf.nn.softmax(teacher_logits / temperature)
    log_ratio = tf.nn.log_softmax(teacher_logits / temperature) - tf.nn.log_softmax(student_logits / temperature)
    scale = temperature**2 if scale_by_t2 else 1.0
    return scale * tf.reduce_mean(tf.reduce_sum(p_teacher * log_ratio, axis=-1))


# setting → (temperature, KL weight, cross-entropy weight, KL scaled by T², logit standardization); see the
# module docstring.
KD_SETTINGS = {
    "author": (4.0, 0.3, 0.7, False, False),
    "mdistiller": (4.0, 0.9, 0.1, True, False),
    "lskd": (2.0, 9.0, 0.1, True, True),
}


def standardize_logits(logits: tf.Tensor) -> tf.Tensor:
    """LSKD's pre-step: (z − mean) / (1e-7 + std) per sample, std with Bessel's correction (torch's default)."""
    mean = tf.reduce_mean(logits, axis=-1, keepdims=True)
    count = tf.cast(tf.shape(logits)[-1], logits.dtype)
    std = tf.sqrt(tf.reduce_sum(tf.square(logits - mean), axis=-1, keepdims=True) / (count - 1.0))
    return (logits - mean) / (1e-7 + std)


def _pearson_rows(a: tf.Tensor, b: tf.Tensor, eps: float = 1e-8) -> tf.Tensor:
    """Pearson correlation of each row of a with the same row of b (DIST's cosine of centred rows)."""
    a = a - tf.reduce_mean(a, axis=1, keepdims=True)
    b = b - tf.reduce_mean(b, axis=1, keepdims=True)
    return tf.reduce_sum(a * b, 1) / (tf.norm(a, axis=1) * tf.norm(b, axis=1) + eps)


def dist_loss(student_logits, teacher_logits, beta: float, gamma: float, temperature: float) -> tf.Tensor:
    """β·τ²·inter + γ·τ²·intra: 1 − mean Pearson over classes per sample, and over the batch per class."""
    y_s = tf.nn.softmax(student_logits / temperature)
    y_t = tf.nn.softmax(teacher_logits / temperature)
    inter = 1.0 - tf.reduce_mean(_pearson_rows(y_s, y_t))
    intra = 1.0 - tf.reduce_mean(_pearson_rows(tf.transpose(y_s), tf.transpose(y_t)))
    return temperature**2 * (beta * inter + gamma * intra)


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
    decay_every_variable = True  # mdistiller `engine/trainer.py`: torch SGD weight_decay over all parameters

    def __init__(
        self,
        teacher,
        setting: str = "author",
        temperature: float | None = None,
        weight: float | None = None,
        cross_entropy_weight: float | None = None,
        logit_stand: str = "setting",
    ):
        super().__init__(teacher)
        if setting not in KD_SETTINGS:
            raise ValueError(f"option setting for kd must be one of {sorted(KD_SETTINGS)}, got {setting!r}")
        default_t, default_w, default_ce, self.scale_by_t2, default_stand = KD_SETTINGS[setting]
        self.setting = setting
        self.temperature = default_t if temperature is None else temperature
        self.weight = default_w if weight is None else weight
        self.cross_entropy_weight = default_ce if cross_entropy_weight is None else cross_entropy_weight
        self.logit_stand = _stand_option("kd", logit_stand, default_stand)

    def losses(self, images, labels, student_outputs, epoch):
        student = tf.cast(student_outputs["logits"], tf.float32)
        teacher = teacher_logits(self.teacher, images)
        if self.logit_stand:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        kl = kd_loss(student, teacher, self.temperature, self.scale_by_t2)
        return {"kd": self.weight * kl}


def _stand_option(method: str, value: str, default: bool) -> bool:
    """`logit_stand`: "setting" (the setting's own), "true" or "false"."""
    choices = ("setting", "true", "false")
    if str(value).lower() not in choices:
        raise ValueError(f"option logit_stand for {method} must be one of {choices}, got {value!r}")
    return default if str(value).lower() == "setting" else str(value).lower() == "true"


# setting → (α, β, T, logit standardization); see the module docstring.
DKD_SETTINGS = {
    "mdistiller": (1.0, 6.0, 4.0, False),
    "lskd": (9.0, 54.0, 2.0, True),
}


class DKDDistiller(Distiller):
    name, loss_names = "dkd", ("dkd",)
    uses_teacher_logits = True
    decay_every_variable = True  # mdistiller `engine/trainer.py`: torch SGD weight_decay over all parameters

    def __init__(
        self,
        teacher,
        epochs: int,
        setting: str = "mdistiller",
        alpha: float | None = None,
        beta: float | None = None,
        temperature: float | None = None,
        warmup_fraction: float = 20 / 240,
        logit_stand: str = "setting",
    ):
        super().__init__(teacher)
        if setting not in DKD_SETTINGS:
            raise ValueError(f"option setting for dkd must be one of {sorted(DKD_SETTINGS)}, got {setting!r}")
        if not (warmup_fraction >= 0.0 and math.isfinite(warmup_fraction)):
            raise ValueError(f"dkd warmup_fraction must be a finite number >= 0, got {warmup_fraction}")
        default_alpha, default_beta, default_t, default_stand = DKD_SETTINGS[setting]
        self.setting = setting
        self.alpha = default_alpha if alpha is None else alpha
        self.beta = default_beta if beta is None else beta
        self.temperature = default_t if temperature is None else temperature
        self.warmup_epochs = warmup_fraction * epochs
        self.logit_stand = _stand_option("dkd", logit_stand, default_stand)

    def losses(self, images, labels, student_outputs, epoch):
        student = tf.cast(student_outputs["logits"], tf.float32)
        teacher = teacher_logits(self.teacher, images)
        if self.logit_stand:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        ramp = tf.minimum((tf.cast(epoch, tf.float32) + 1.0) / max(self.warmup_epochs, 1e-9), 1.0)
        loss = dkd_loss(student, teacher, labels, self.alpha, self.beta, self.temperature)
        return {"dkd": ramp * loss}


# setting → (τ, KD weight, weight decay on every variable); see the module docstring.
DIST_SETTINGS = {
    "cifar": (4.0, 2.0, True),
    "imagenet": (1.0, 1.0, False),
}


class DISTDistiller(Distiller):
    name, loss_names = "dist", ("dist",)
    uses_teacher_logits = True
    min_batch_size = 2  # the intra-class term correlates each class's scores over the batch

    def __init__(
        self,
        teacher,
        setting: str = "cifar",
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float | None = None,
        weight: float | None = None,
        logit_stand: bool = False,
    ):
        super().__init__(teacher)
        if setting not in DIST_SETTINGS:
            raise ValueError(f"option setting for dist must be one of {sorted(DIST_SETTINGS)}, got {setting!r}")
        default_t, default_w, self.decay_every_variable = DIST_SETTINGS[setting]
        self.setting = setting
        self.beta, self.gamma = beta, gamma
        self.temperature = default_t if temperature is None else temperature
        self.weight = default_w if weight is None else weight
        self.logit_stand = logit_stand

    def losses(self, images, labels, student_outputs, epoch):
        student = tf.cast(student_outputs["logits"], tf.float32)
        teacher = teacher_logits(self.teacher, images)
        if self.logit_stand:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        return {"dist": self.weight * dist_loss(student, teacher, self.beta, self.gamma, self.temperature)}
