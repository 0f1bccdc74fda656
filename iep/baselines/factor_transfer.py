"""FT — factor transfer (Kim, Park & Kwak, NeurIPS 2018), as the IEP author's TF2 benchmark executes it.

Reference: `sseung0703/Knowledge_distillation_via_TF2.0` at 6015e47, `distiller/FT.py`
(the layers' overrides lines 21-23, paraphraser and translator 25-45, β line 52, transfer 59-64,
paraphraser training 66-91) with the layers of `nets/tcl.py` (the override, lines 6-8).
There, `tcl.arg_scope` *overwrites* the
explicit keyword arguments with the class's `pre_defined` ones, and FT.py sets
`Conv2d` and `Conv2d_transpose` to `use_biases=False` and `BatchNorm` to
`activation_fn=tf.nn.leaky_relu`. So, as executed (not as the constructor
calls read):

* every conv and transposed conv keeps `tcl`'s default ReLU (only the
  translator's last conv passes `activation_fn=None`, a key that is not
  overwritten), and none has a bias — the decoder's last transposed conv
  included, despite its `use_biases=True`;
* every BN ends in a leaky ReLU (α 0.2) — the last one of the encoder and of
  the translator included, despite their `activation_fn=None`;
* the paraphraser's BNs are never run in training mode (`auxiliary_training`
  calls the encoder and decoder without `training`, the main phase with
  `training=False`), so they normalize with their initial moving statistics,
  mean 0 and variance 1, and only γ and β learn; the translator's BNs use
  batch statistics (`training=True`).

Kernels are `tcl`'s variance-scaling fan-out (`nets.layers.kernel_initializer`).
Pre-phase (the auxiliary training, 30 % of the main steps: `int(train_epoch*.3)`
epochs there), on the teacher's last sensing point F (D channels, after its
ReLU): enc = leaky(P_enc(F)), F̂ = ReLU(P_dec(enc)),
Σ|F − F̂| / (B·H·W) + 1e-6 · Σ|enc| / (B·H·W), SGD Nesterov at 1e-3 with
wd · v added to the gradient of every paraphraser variable (BN γ/β included).
Main phase: β · mean|n(P_enc(F_T)) − n(T(F_S))| with n the per-sample L2
normalization over H·W·C, β = 100, the translator T trained with the student
(both decayed: the benchmark's `op_util.py` decays every model variable).
The TF1 benchmark (`KD_methods_with_TF/nets/Response.py`, `Factor_Transfer`)
differs (no BN, normalization over channels only, weight 5e2); we follow the
TF2 code.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.nets import TappedNetwork
from iep.nets import layers as L
from iep.op_utils import l2_penalty

RATE = 0.5  # the paraphrase rate of the code
LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default


def _conv(filters: int, stride: int, name: str, transpose: bool = False, relu: bool = True) -> list:
    """A bias-free (transposed) conv and, unless told otherwise, tcl's default ReLU after it."""
    layer = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    conv = layer(
        filters, 3, stride, padding="same", use_bias=False, kernel_initializer=L.kernel_initializer(), name=name
    )
    return [conv] + ([keras.layers.ReLU(name=f"{name}_relu")] if relu else [])


def _bn(name: str) -> list:
    """tcl.BatchNorm as FT.py overrides it: always followed by a leaky ReLU."""
    return [L.batch_norm(name), keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_leaky")]


def encoder(channels: int, name: str, last_relu: bool = True) -> keras.Sequential:
    """D → D·r (stride 1) → D·r² (stride 1/r) → D·r³ (stride 1); `last_relu=False` is the translator's."""
    return keras.Sequential(
        _conv(int(channels * RATE), 1, f"{name}_conv0")
        + _bn(f"{name}_bn0")
        + _conv(int(channels * RATE**2), int(1 / RATE), f"{name}_conv1")
        + _bn(f"{name}_bn1")
        + _conv(int(channels * RATE**3), 1, f"{name}_conv2", relu=last_relu)
        + _bn(f"{name}_bn2"),
        name=name,
    )


def decoder(channels: int, name: str) -> keras.Sequential:
    return keras.Sequential(
        _conv(int(channels * RATE**2), 1, f"{name}_convt0", transpose=True)
        + _bn(f"{name}_bnt0")
        + _conv(int(channels * RATE), int(1 / RATE), f"{name}_convt1", transpose=True)
        + _bn(f"{name}_bnt1")
        + _conv(channels, 1, f"{name}_convt2", transpose=True),
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
    # TF2 `op_util.py`: wd·v on every variable of the model, the translator (`student.aux_layers`) included.
    decay_every_variable = True
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
        self.translator = encoder(channels, "ft_translator", last_relu=False)
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
        # training=False: the reference never runs the paraphraser's BNs in training mode (module docstring).
        factor = tf.nn.leaky_relu(self.paraphraser_encoder(features, training=False), LEAKY_SLOPE)
        rebuilt = tf.nn.relu(self.paraphraser_decoder(factor, training=False))
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
