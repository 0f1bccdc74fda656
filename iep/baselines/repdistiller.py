"""The relation and feature methods of RepDistiller (Tian, Krishnan & Isola, ICLR 2020), as its code executes.

Reference: `HobbitLong/RepDistiller` (line numbers at its master, commit 1e2f816 for `distiller_zoo/`):
`distiller_zoo/PKT.py` (`cosine_similarity_loss` lines 17-42), `SP.py` (`similarity_loss` 16-30), `NST.py`
(`nst_loss` 16-36, `poly_kernel` 38-42), `CC.py` (`Correlation.forward` 13-16), `VID.py` (`__init__` 12-36,
`forward` 38-54); `models/util.py` (`LinearEmbed` 185-194); `helper/loops.py` (`train_distill`: which features
each loss reads — nst 139-143, similarity 144-148, pkt 153-156, correlation 162-165, vid 166-170; the sum
`gamma·CE + alpha·KL + beta·loss_kd` line 184) and `scripts/run_cifar_distill.sh` (each method's weight β,
with `-a 0`: no KL term; `-r 1`: CE weight 1 — SP line 11, CC 13, VID 15, PKT 19, NST 27).
RepDistiller's features of a CIFAR WRN (`models/wrn.py`, `is_feat=True`): `feat[1:-1]` are the raw outputs of
the three groups (before any BN-ReLU: our `stage_outputs`), `feat[-2]` the last of them, `feat[-1]` the pooled
feature after the final BN-ReLU (our last sensing point, averaged over H×W, as RKD reads it).

* **PKT** (Passalis & Tefas, ECCV 2018), on `feat[-1]`: cosine similarities of the batch rescaled to [0, 1]
  and normalized per row into probabilities; mean over B² of P_T · log((P_T + ε) / (P_S + ε)), ε = 1e-7
  (vectors normalized with +ε); β = 30000.
* **SP** (Tung & Mori, ICCV 2019), on `feat[-2]`: Gram matrices G = F·Fᵀ of the flattened maps, each row
  L2-normalized (`F.normalize`, eps 1e-12); Σ(G_T − G_S)² / B²; β = 3000.
* **NST** (Huang & Wang, 2017), on `feat[1:-1]`: per map, channels as H·W-vectors L2-normalized, the squared
  polynomial kernel's MMD: mean k(T, T) + mean k(S, S) − 2 mean k(S, T), k(a, b) = (aᵀb)² (the teacher term
  outside the gradient); the larger map average-pooled to the smaller's size; summed over points; β = 50.
* **CC** (Peng et al., ICCV 2019), on `feat[-1]`: a linear embedding to 128 dimensions on each side
  (`LinearEmbed`, both trained with the student), δ = |e_S − e_T|, mean over consecutive sample pairs of
  Σ_d δ_i · δ_{i+1} (the code the authors emailed RepDistiller); β = 0.02.
* **VID** (Ahn et al., CVPR 2019), on `feat[1:-1]`: per point a regressor of three 1×1 convs (no bias, ReLU
  between) from the student's channels to the teacher's, and a per-channel variance softplus(log_scale) + ε
  (init 5.0, ε = 1e-5): mean of ½·((μ − t)² / σ² + log σ²); β = 1.

Layers are initialized as torch does (kaiming-uniform a = √5: U(±1/√fan_in) for weights, biases likewise), and
every trained variable is decayed (RepDistiller's one SGD over `trainable_list`, modules included).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.core.seeds import seed_stream
from iep.nets import TappedNetwork

EPS_PKT = 1e-7


def torch_uniform() -> keras.initializers.Initializer:
    """torch.nn's default for Linear/Conv weights and biases: U(±1/√fan_in)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def pooled(feature_map: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.cast(feature_map, tf.float32), axis=[1, 2])


def pkt_loss(student: tf.Tensor, teacher: tf.Tensor, eps: float = EPS_PKT) -> tf.Tensor:
    def probabilities(x):
        x = x / (tf.norm(x, axis=1, keepdims=True) + eps)
        x = tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)
        similarity = (tf.matmul(x, x, transpose_b=True) + 1.0) / 2.0
        return similarity / tf.reduce_sum(similarity, axis=1, keepdims=True)

    p_s, p_t = probabilities(student), probabilities(teacher)
    return tf.reduce_mean(p_t * tf.math.log((p_t + eps) / (p_s + eps)))


def sp_loss(student_map: tf.Tensor, teacher_map: tf.Tensor) -> tf.Tensor:
    batch = tf.shape(student_map)[0]
    f_s = tf.reshape(tf.cast(student_map, tf.float32), [batch, -1])
    f_t = tf.reshape(tf.cast(teacher_map, tf.float32), [batch, -1])
    g_s = tf.math.l2_normalize(tf.matmul(f_s, f_s, transpose_b=True), axis=1, epsilon=1e-24)
    g_t = tf.math.l2_normalize(tf.matmul(f_t, f_t, transpose_b=True), axis=1, epsilon=1e-24)
    return tf.reduce_sum(tf.square(g_t - g_s)) / tf.cast(batch * batch, tf.float32)


def match_resolution(student_map: tf.Tensor, teacher_map: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The larger map average-pooled to the smaller one's H×W (`F.adaptive_avg_pool2d` for whole ratios)."""
    s, t = student_map.shape[1], teacher_map.shape[1]
    if s > t:
        student_map = tf.nn.avg_pool2d(student_map, s // t, s // t, "VALID")
    elif t > s:
        teacher_map = tf.nn.avg_pool2d(teacher_map, t // s, t // s, "VALID")
    return student_map, teacher_map


def nst_loss(student_map: tf.Tensor, teacher_map: tf.Tensor) -> tf.Tensor:
    student_map, teacher_map = match_resolution(tf.cast(student_map, tf.float32), tf.cast(teacher_map, tf.float32))

    def channels(x):  # [B, C, H·W], each channel's map L2-normalized
        b, h, w, c = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
        return tf.math.l2_normalize(tf.transpose(tf.reshape(x, [b, h * w, c]), [0, 2, 1]), axis=2, epsilon=1e-24)

    f_s, f_t = channels(student_map), channels(teacher_map)

    def kernel(a, b):  # mean of (aᵢᵀbⱼ)² over batch and channel pairs
        return tf.reduce_mean(tf.square(tf.matmul(b, a, transpose_b=True)))

    return tf.stop_gradient(kernel(f_t, f_t)) + kernel(f_s, f_s) - 2.0 * kernel(f_s, f_t)


def cc_loss(student_embedding: tf.Tensor, teacher_embedding: tf.Tensor) -> tf.Tensor:
    delta = tf.abs(student_embedding - teacher_embedding)
    return tf.reduce_mean(tf.reduce_sum(delta[:-1] * delta[1:], axis=1))


def vid_loss(prediction: tf.Tensor, target: tf.Tensor, log_scale: tf.Tensor, eps: float) -> tf.Tensor:
    variance = tf.math.softplus(log_scale) + eps
    return tf.reduce_mean(0.5 * (tf.square(prediction - target) / variance + tf.math.log(variance)))


class _RepDistiller(Distiller):
    """RepDistiller's setting: loss = CE + β · loss_kd; every trained variable decayed."""

    decay_every_variable = True

    def _teacher(self, images, key: str):
        return [tf.stop_gradient(tf.cast(t, tf.float32)) for t in self.teacher(images, training=False)[key]]


class PKTDistiller(_RepDistiller):
    name, loss_names = "pkt", ("pkt",)
    min_batch_size = 2

    def __init__(self, teacher, weight: float = 30000.0):
        super().__init__(teacher)
        self.weight = weight

    def losses(self, images, labels, student_outputs, epoch):
        teacher = pooled(self._teacher(images, "taps")[-1])
        return {"pkt": self.weight * pkt_loss(pooled(student_outputs["taps"][-1]), teacher)}


class SPDistiller(_RepDistiller):
    name, loss_names = "sp", ("sp",)
    min_batch_size = 2

    def __init__(self, teacher, weight: float = 3000.0):
        super().__init__(teacher)
        self.weight = weight

    def losses(self, images, labels, student_outputs, epoch):
        teacher = self._teacher(images, "stage_outputs")[-1]
        return {"sp": self.weight * sp_loss(student_outputs["stage_outputs"][-1], teacher)}


def _require_point_pairs(method: str, teacher: TappedNetwork, student: TappedNetwork) -> None:
    if len(teacher.tap_specs) != len(student.tap_specs):
        raise ValueError(
            f"{method} pairs the points one to one: the teacher has {len(teacher.tap_specs)}, the student "
            f"{len(student.tap_specs)}"
        )
    for s, t in zip(student.tap_specs, teacher.tap_specs, strict=True):
        big, small = max(s.shape[0], t.shape[0]), min(s.shape[0], t.shape[0])
        if big % small:
            raise ValueError(f"{method} pools the larger map to the smaller: {s.shape} and {t.shape} do not divide")


class NSTDistiller(_RepDistiller):
    name, loss_names = "nst", ("nst",)

    def __init__(self, teacher, student, weight: float = 50.0):
        super().__init__(teacher)
        _require_point_pairs(self.name, teacher, student)
        self.weight = weight

    def losses(self, images, labels, student_outputs, epoch):
        teacher_maps = self._teacher(images, "stage_outputs")
        terms = [nst_loss(s, t) for s, t in zip(student_outputs["stage_outputs"], teacher_maps, strict=True)]
        return {"nst": self.weight * tf.add_n(terms)}


class CCDistiller(_RepDistiller):
    name, loss_names = "cc", ("cc",)
    min_batch_size = 2

    def __init__(self, teacher, student, weight: float = 0.02, embedding: int = 128, seed: int | None = None):
        super().__init__(teacher)
        self.weight = weight
        base = None if seed is None else 100 + 2 * seed
        self.embeddings = [
            keras.layers.Dense(
                embedding,
                kernel_initializer=torch_uniform(),
                bias_initializer=_torch_bias(network.tap_specs[-1].shape[-1], None if base is None else base + i),
                name=f"cc_embed_{side}",
            )
            for i, (side, network) in enumerate((("student", student), ("teacher", teacher)))
        ]
        for layer, network in zip(self.embeddings, (student, teacher), strict=True):
            layer.build((None, network.tap_specs[-1].shape[-1]))

    @property
    def trainable_variables(self):
        return [v for layer in self.embeddings for v in layer.trainable_variables]

    def checkpointables(self):
        return {"cc_embeddings": self.embeddings}

    def losses(self, images, labels, student_outputs, epoch):
        teacher = pooled(self._teacher(images, "taps")[-1])
        e_s = self.embeddings[0](pooled(student_outputs["taps"][-1]))
        e_t = self.embeddings[1](teacher)
        return {"cc": self.weight * cc_loss(e_s, e_t)}


def _torch_bias(fan_in: int, seed: int | None) -> keras.initializers.Initializer:
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound, seed=seed)


class VIDDistiller(_RepDistiller):
    name, loss_names = "vid", ("vid",)

    def __init__(
        self,
        teacher,
        student,
        weight: float = 1.0,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        seed: int | None = None,
    ):
        super().__init__(teacher)
        _require_point_pairs(self.name, teacher, student)
        self.weight, self.eps = weight, eps
        self.regressors, self.log_scales = [], []
        seeds = seed_stream(seed)

        def conv(filters: int, name: str) -> keras.layers.Conv2D:
            # torch's default Conv2d init, U(±1/√fan_in), drawn anew for each conv as the reference does
            init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=next(seeds))
            return keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=init, name=name)

        for i, (s_spec, t_spec) in enumerate(zip(student.tap_specs, teacher.tap_specs, strict=True)):
            s, t = s_spec.shape, t_spec.shape  # the stage outputs have the points' shapes
            mid = t[-1]  # VIDLoss(s, t, t): the middle width is the teacher's
            regressor = keras.Sequential(
                [
                    conv(mid, f"vid_{i}_conv0"),
                    keras.layers.ReLU(),
                    conv(mid, f"vid_{i}_conv1"),
                    keras.layers.ReLU(),
                    conv(t[-1], f"vid_{i}_conv2"),
                ],
                name=f"vid_regressor_{i}",
            )
            regressor.build((None, *match_shape(s, t)))
            self.regressors.append(regressor)
            start = math.log(math.exp(init_variance - eps) - 1.0)  # softplus⁻¹(init − ε)
            self.log_scales.append(tf.Variable(tf.fill([t[-1]], start), name=f"vid_log_scale_{i}"))

    @property
    def trainable_variables(self):
        return [v for r in self.regressors for v in r.trainable_variables] + list(self.log_scales)

    def checkpointables(self):
        return {"vid_regressors": self.regressors, "vid_log_scales": self.log_scales}

    def losses(self, images, labels, student_outputs, epoch):
        teacher_maps = self._teacher(images, "stage_outputs")
        terms = []
        for s_map, t_map, regressor, log_scale in zip(
            student_outputs["stage_outputs"], teacher_maps, self.regressors, self.log_scales, strict=True
        ):
            s_map, t_map = match_resolution(tf.cast(s_map, tf.float32), t_map)
            terms.append(vid_loss(regressor(s_map), t_map, log_scale, self.eps))
        return {"vid": self.weight * tf.add_n(terms)}


def match_shape(student_shape, teacher_shape) -> tuple[int, int, int]:
    """The student map's shape after `match_resolution`."""
    size = min(student_shape[0], teacher_shape[0])
    return (size, size, student_shape[-1])
