"""FT — factor transfer (Kim, Park & Kwak, NeurIPS 2018), as in the IEP author's TF2 benchmark `distiller/FT.py`.

Pre-phase: a *paraphraser* (3×3 convs to D/2, D/4 at stride 2, D/8, with BN
and leaky ReLU; mirrored by transposed convs back to D) learns to rebuild the
teacher's last sensing point (D channels, after its ReLU):
Σ|F − ReLU(dec(enc))| / (B·H·W) + 1e-6 · Σ|enc| / (B·H·W), SGD at 1e-3, for 30 %
of the main steps, weight decay 5e-4 on every paraphraser variable (the TF2
code adds wd · v to each gradient, BN γ/β and the last bias included). Main
phase: a *translator* on the student's last point (the encoder's layout,
trained with the student) must match the frozen
paraphraser's factor: β · mean|n(T) − n(S)| with n the per-sample L2
normalization over H·W·C and β = 100.

Checked layer by layer against `distiller/FT.py`: the encoder, decoder and
translator stacks and their activations (leaky ReLU 0.2 after the BNs of the
first two convs, none after the third; the decoder's last transposed conv
with bias and no BN; ReLU on the rebuild; no activation on the factor in the
main phase) are the TF2 code's. The TF1 benchmark (`KD_methods_with_TF/nets/
Response.py`, `Factor_Transfer`) differs: no BN, leaky ReLU after every conv,
normalization over channels only, weight 5e2; we follow the TF2 code.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.engine.distiller import Distiller
from iep.nets import TappedNetwork
from iep.nets import layers as L
from iep.op_utils import l2_penalty

RATE = 0.5  # the paraphrase rate of the code


def _conv_bn(filters: int, stride: int, name: str, transpose: bool = False, act: bool = True) -> list:
    conv = (
        keras.layers.Conv2DTranspose(filters, 3, stride, padding="same", use_bias=False, name=f"{name}_convt")
        if transpose
        else L.conv(filters, 3, stride, name=f"{name}_conv")
    )
    return [conv, L.batch_norm(f"{name}_bn")] + ([keras.layers.LeakyReLU(0.2, name=f"{name}_act")] if act else [])


def encoder(channels: int, name: str) -> keras.Sequential:
    """D → D·r (stride 1) → D·r² (stride 1/r) → D·r³ (stride 1, no activation)."""
    return keras.Sequential(
        _conv_bn(int(channels * RATE), 1, f"{name}0")
        + _conv_bn(int(channels * RATE**2), int(1 / RATE), f"{name}1")
        + _conv_bn(int(channels * RATE**3), 1, f"{name}2", act=False),
        name=name,
    )


def decoder(channels: int, name: str) -> keras.Sequential:
    return keras.Sequential(
        _conv_bn(int(channels * RATE**2), 1, f"{name}0", transpose=True)
        + _conv_bn(int(channels * RATE), int(1 / RATE), f"{name}1", transpose=True)
        + [keras.layers.Conv2DTranspose(channels, 3, 1, padding="same", name=f"{name}2_convt")],
        name=name,
    )


def paraphraser_loss(features: tf.Tensor, factor: tf.Tensor, rebuilt: tf.Tensor) -> tf.Tensor:
    pixels = tf.cast(tf.reduce_prod(tf.shape(features)[:3]), tf.float32)
    return tf.reduce_sum(tf.abs(features - rebuilt)) / pixels + 1e-6 * tf.reduce_sum(tf.abs(factor)) / pixels


def factor_loss(student_factor: tf.Tensor, teacher_factor: tf.Tensor, beta: float) -> tf.Tensor:
    s = tf.math.l2_normalize(student_factor, axis=[1, 2, 3])
    t = tf.math.l2_normalize(teacher_factor, axis=[1, 2, 3])
    return beta * tf.reduce_mean(tf.abs(t - s))


class FTDistiller(Distiller):
    name, loss_names = "ft", ("factor",)
    pre_phase_loss_names = ("paraphrase", "weight_decay")

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        pre_phase_steps: int,
        beta: float = 100.0,
        pre_phase_lr: float = 1e-3,
        weight_decay: float = 5e-4,
    ):
        super().__init__(teacher)
        if pre_phase_steps < 1:
            raise ValueError(f"ft needs pre_phase_steps >= 1 (the paraphraser), got {pre_phase_steps}")
        t_shape, s_shape = teacher.tap_specs[-1].shape, student.tap_specs[-1].shape
        if t_shape[:2] != s_shape[:2]:
            raise ValueError(f"FT needs equal H×W at the last sensing point; student {s_shape} vs teacher {t_shape}")
        self.beta, self.weight_decay = beta, weight_decay
        self.pre_phase_steps, self.pre_phase_lr = pre_phase_steps, pre_phase_lr
        channels = t_shape[-1]
        self.paraphraser_encoder = encoder(channels, "ft_paraphraser_enc")
        self.paraphraser_decoder = decoder(channels, "ft_paraphraser_dec")
        self.translator = encoder(channels, "ft_translator")
        self.paraphraser_decoder(self.paraphraser_encoder(tf.zeros((2, *t_shape))))
        self.translator(tf.zeros((2, *s_shape)))

    @property
    def trainable_variables(self):
        return list(self.translator.trainable_variables)

    @property
    def pre_phase_variables(self):
        return list(self.paraphraser_encoder.trainable_variables) + list(self.paraphraser_decoder.trainable_variables)

    def checkpointables(self):
        return {
            "ft_paraphraser": [self.paraphraser_encoder, self.paraphraser_decoder],
            "ft_translator": self.translator,
        }

    def pre_phase_losses(self, images, labels):
        features = tf.stop_gradient(self.teacher(images, training=False)["taps"][-1])
        factor = tf.nn.leaky_relu(self.paraphraser_encoder(features, training=True), 0.2)
        rebuilt = tf.nn.relu(self.paraphraser_decoder(factor, training=True))
        return {
            "paraphrase": paraphraser_loss(features, factor, rebuilt),
            "weight_decay": l2_penalty(
                self.paraphraser_encoder.trainable_variables + self.paraphraser_decoder.trainable_variables,
                self.weight_decay,
            ),
        }

    def losses(self, images, labels, student_outputs, epoch):
        features = self.teacher(images, training=False)["taps"][-1]
        teacher_factor = tf.stop_gradient(self.paraphraser_encoder(features, training=False))
        student_factor = self.translator(student_outputs["taps"][-1], training=True)
        return {"factor": factor_loss(student_factor, teacher_factor, self.beta)}
