"""Hint methods: FitNet, AB and CO on pre-activation features, FSP on activated ones.

FitNet, AB and CO read each sensing point *before* its last ReLU (the
network's `preact_taps`) and bring the student's point to the teacher's
width with a connector (1×1 conv + BN, resized first when H×W differ), as the
IEP author's TF2 benchmarks (`sseung0703/Knowledge_distillation_via_TF2.0` at
6015e47, `distiller/{FitNet,AB,CO}.py`) do for WRN-40-4→WRN-16-4. Lines:
FitNet.py connectors 21-25, points 27-32, hint 45-52, initialization 34-65
(`int(train_epoch*.3)` epochs, line 61); AB.py connectors 21-26, loss 35-41,
weights line 54, initialization 43-68; CO.py margins 28-33, partial L2 42-45,
weighting 47-50. FSP: KD_methods_with_TF at 9fb5414, `nets/Shared.py` lines
4-31, `train_w_distill.py` lines 33-34 and 77-78.

* FitNet (Romero et al., ICLR 2015) — student initialization: a pre-phase of
  30 % of the main steps trains student + connectors on
  Σ_points Σ(s − t)² / (B·H·W) at the base learning rate; the main phase is
  plain training.
* AB (Heo et al., AAAI 2019) — the same initialization scheme with the
  activation-boundary loss (margin 1) as the TF2 benchmark's
  `distiller/AB.py` executes it: a connector (1×1 conv + BN) at *every*
  point, equal widths included (`self.student.aux_layers` is built for each
  pair with no width test; the `if Ds != Dt` guard of the TF1 benchmark's
  `AB_distillation` is gone from KD_methods_with_TF since commit ce248ac).
  Loss scale per point: Σ|(s+m)²·[s > −m ∧ t ≤ 0] + (s−m)²·[s ≤ m ∧ t > 0]|
  over the batch, divided by B·H·W (a sum over channels, a mean over
  pixels), point i of n weighted 2^(i−n+1); no global weight (the file's
  `self.weight = 1e-4` is never used).
* CO (Heo et al., ICCV 2019, "overhaul") — no pre-phase; trained with the
  student: teacher features clamped below at the expected negative response
  of their BN (margin m), partial L2 Σ(s − t)²·[s > t ∨ t > 0], point i of n
  divided by 2^(n−i−1), the sum divided by B and weighted 1e-3.
* FSP (Yim et al., CVPR 2017) — as in the IEP author's TF1 benchmark
  `KD_methods_with_TF/nets/Shared.py` (`FSP`, weight 1e-3) with the
  initialization schedule of its `train_w_distill.py` (FSP is one of
  {FitNet, FSP, AB}: distillation first, then plain training; `init_epoch =
  40` before `train_epoch = 100`, so the pre-phase is 40 % of the main steps). On the
  activated stage outputs (`taps`, the benchmark's `feat` collection): for
  consecutive points the flow matrix G = Fᵢᵀ·Fᵢ₊₁ / (H·W) (Fᵢ 2×2 max-pooled
  first where it is larger), loss weight · Σ_pairs mean_batch Σ(G_T − G_S)² / 2.
  Needs equal widths at every point (no connector, as there).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.nets import TappedNetwork
from iep.op_utils import l2_penalty
from iep.procedure.adapters import TapAdapter


def _require_equal_points(method: str, teacher: TappedNetwork, student: TappedNetwork) -> None:
    if len(teacher.tap_specs) != len(student.tap_specs):
        raise ValueError(
            f"{method} pairs sensing points one to one; teacher has {len(teacher.tap_specs)}, "
            f"student {len(student.tap_specs)}"
        )


def connectors(
    teacher: TappedNetwork, student: TappedNetwork, prefix: str, always_project: bool = True
) -> list[TapAdapter]:
    """One trained 1×1 conv + BN per point, student shape → teacher shape, built now (at equal shapes an
    identity unless `always_project`)."""
    out = []
    for i, (s, t) in enumerate(zip(student.tap_specs, teacher.tap_specs, strict=True)):
        connector = TapAdapter(s.shape, t.shape, always_project=always_project, name=f"{prefix}_connector_{i}")
        connector(tf.zeros((2, *s.shape)))
        out.append(connector)
    return out


def student_body_variables(student: TappedNetwork) -> list[tf.Variable]:
    """The student's trainable variables below its classifier (which no feature loss reaches): all but the
    weights of the layer that outputs the logits, found from the graph, whatever it is named."""
    if student.head is None:
        raise ValueError(
            f"{student.arch}: the student's logits are no layer's output, so its classifier cannot be told apart "
            "from its body; end the student's graph in a layer (e.g. a Dense) whose output is the logits"
        )
    head = {id(v) for v in student.head.weights}
    return [v for v in student.model.trainable_variables if id(v) not in head]


def _per_pixel(x: tf.Tensor) -> tf.Tensor:
    """B·H·W of a feature map, as a float."""
    return tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)


def fitnet_loss(student_maps, teacher_maps) -> tf.Tensor:
    return tf.add_n(
        [tf.reduce_sum(tf.square(s - t)) / _per_pixel(s) for s, t in zip(student_maps, teacher_maps, strict=True)]
    )


def activation_boundary_loss(student: tf.Tensor, teacher: tf.Tensor, margin: float) -> tf.Tensor:
    """Σ |(s+m)²·[s > −m ∧ t ≤ 0] + (s−m)²·[s ≤ m ∧ t > 0]| / (B·H·W): the student must put each neuron on
    the teacher's side of zero, with margin m."""
    off = tf.cast((student > -margin) & (teacher <= 0.0), tf.float32)
    on = tf.cast((student <= margin) & (teacher > 0.0), tf.float32)
    loss = tf.square(student + margin) * off + tf.square(student - margin) * on
    return tf.reduce_sum(tf.abs(loss)) / _per_pixel(student)


def ab_loss(student_maps, teacher_maps, margin: float) -> tf.Tensor:
    n = len(student_maps)
    return tf.add_n(
        [
            activation_boundary_loss(s, t, margin) * 2.0 ** (i - n + 1)
            for i, (s, t) in enumerate(zip(student_maps, teacher_maps, strict=True))
        ]
    )


def overhaul_margin(gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Per channel E[x | x < 0] for x ~ N(β, γ²) — the teacher's expected negative pre-activation."""
    s, m = np.abs(np.asarray(gamma, np.float64)), np.asarray(beta, np.float64)
    s = np.maximum(s, 1e-8)
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in (-m / s).ravel()]).reshape(m.shape)
    expected = -s * np.exp(-((m / s) ** 2) / 2.0) / math.sqrt(2.0 * math.pi) / np.maximum(cdf, 1e-12) + m
    return np.where(cdf > 1e-3, expected, -3.0 * s).astype(np.float32)


def overhaul_loss(student_maps, teacher_maps, margins, weight: float) -> tf.Tensor:
    n = len(student_maps)
    terms = []
    for i, (s, t, m) in enumerate(zip(student_maps, teacher_maps, margins, strict=True)):
        t = tf.maximum(t, m)
        mask = tf.cast((s > t) | (t > 0.0), tf.float32)
        terms.append(tf.reduce_sum(tf.square(s - t) * mask) / 2.0 ** (n - i - 1))
    return weight * tf.add_n(terms) / tf.cast(tf.shape(student_maps[0])[0], tf.float32)


class _Initialization(Distiller):
    """Pre-phase: student + connectors learn `hint_loss` (plus weight decay); main phase: plain training."""

    hint_name = "hint"
    # TF2 `op_util.py` (FitNet, AB) and TF1 `ResNet_arg_scope` (FSP): every trained variable is decayed.
    decay_every_variable = True

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        pre_phase_steps: int,
        pre_phase_lr: float = 0.1,
        weight_decay: float = 5e-4,
    ):
        super().__init__(teacher)
        _require_equal_points(self.name, teacher, student)
        if pre_phase_steps < 1:
            raise ValueError(f"{self.name} needs pre_phase_steps >= 1 (its initialization), got {pre_phase_steps}")
        self.student = student
        self.pre_phase_steps, self.pre_phase_lr, self.weight_decay = pre_phase_steps, pre_phase_lr, weight_decay
        self.pre_phase_loss_names = (self.hint_name, "weight_decay")
        self.connectors = self.build_connectors(teacher, student)

    def build_connectors(self, teacher: TappedNetwork, student: TappedNetwork) -> list[TapAdapter]:
        return connectors(teacher, student, self.name)

    @property
    def pre_phase_variables(self) -> list[tf.Variable]:
        """The student below its classifier (which no hint reaches) and the connectors."""
        return student_body_variables(self.student) + [v for c in self.connectors for v in c.trainable_variables]

    def checkpointables(self):
        return {f"{self.name}_connectors": self.connectors}

    def hint_loss(self, student_maps, teacher_maps) -> tf.Tensor:
        raise NotImplementedError

    features = "preact_taps"  # the view of the sensing points the hint compares

    def pre_phase_losses(self, images, labels):
        teacher_maps = [tf.stop_gradient(t) for t in self.teacher(images, training=False)[self.features]]
        student_maps = self.student(images, training=True)[self.features]
        if self.connectors:
            student_maps = [c(s, training=True) for c, s in zip(self.connectors, student_maps, strict=True)]
        return {
            self.hint_name: self.hint_loss(student_maps, teacher_maps),
            "weight_decay": l2_penalty(self.decayed(self.pre_phase_variables), self.weight_decay),
        }


class FitNetDistiller(_Initialization):
    name, hint_name = "fitnet", "hint"

    def hint_loss(self, student_maps, teacher_maps):
        return fitnet_loss(student_maps, teacher_maps)


class ABDistiller(_Initialization):
    name, hint_name = "ab", "activation_boundary"

    def __init__(self, teacher, student, pre_phase_steps: int, margin: float = 1.0, **kwargs):
        super().__init__(teacher, student, pre_phase_steps, **kwargs)
        self.margin = margin

    def hint_loss(self, student_maps, teacher_maps):
        return ab_loss(student_maps, teacher_maps, self.margin)


def flow_matrix(earlier: tf.Tensor, later: tf.Tensor) -> tf.Tensor:
    """FSP matrix [B, C_earlier, C_later]: earlierᵀ·later / (H·W) at the later point's resolution."""
    if earlier.shape[1] > later.shape[1]:
        earlier = tf.nn.max_pool2d(earlier, 2, 2, "VALID")
    hw = later.shape[1] * later.shape[2]
    earlier = tf.reshape(earlier, [-1, hw, earlier.shape[-1]])
    later = tf.reshape(later, [-1, hw, later.shape[-1]])
    return tf.matmul(earlier, later, transpose_a=True) / float(hw)


def fsp_loss(student_maps, teacher_maps, weight: float) -> tf.Tensor:
    terms = []
    for i in range(len(student_maps) - 1):
        g_s = flow_matrix(student_maps[i], student_maps[i + 1])
        g_t = tf.stop_gradient(flow_matrix(teacher_maps[i], teacher_maps[i + 1]))
        terms.append(tf.reduce_mean(tf.reduce_sum(tf.square(g_t - g_s), axis=[1, 2]) / 2.0))
    return weight * tf.add_n(terms)


class FSPDistiller(_Initialization):
    name, hint_name = "fsp", "fsp"
    features = "taps"

    def __init__(self, teacher, student, pre_phase_steps: int, weight: float = 1e-3, **kwargs):
        for s, t in zip(student.tap_specs, teacher.tap_specs, strict=True):
            if s.shape != t.shape:
                raise ValueError(
                    f"fsp compares flow matrices: it needs equal point shapes; student {s.shape} vs {t.shape}"
                )
        if len(teacher.tap_specs) < 2:
            raise ValueError("fsp relates consecutive sensing points: it needs at least 2")
        super().__init__(teacher, student, pre_phase_steps, **kwargs)
        self.weight = weight

    def build_connectors(self, teacher, student):
        return []

    def hint_loss(self, student_maps, teacher_maps):
        return fsp_loss(student_maps, teacher_maps, self.weight)


class CODistiller(Distiller):
    name, loss_names = "co", ("overhaul",)
    # Overhaul `CIFAR-100/train_with_distillation.py:137`: SGD over student and connectors, weight_decay on all.
    decay_every_variable = True

    def __init__(self, teacher: TappedNetwork, student: TappedNetwork, weight: float = 1e-3):
        super().__init__(teacher)
        _require_equal_points(self.name, teacher, student)
        missing = [s.name for s, bn in zip(teacher.tap_specs, teacher.preact_batch_norms, strict=True) if bn is None]
        if missing:
            raise ValueError(
                f"CO derives its margins from the BatchNormalization before each teacher sensing point; "
                f"teacher {teacher.arch} has none before {missing} (use a WRN, VGG or MobileNet-V2 teacher)"
            )
        self.weight = weight
        self.margins = [
            tf.constant(overhaul_margin(bn.gamma.numpy(), bn.beta.numpy())) for bn in teacher.preact_batch_norms
        ]
        self.connectors = connectors(teacher, student, self.name)

    @property
    def trainable_variables(self):
        return [v for c in self.connectors for v in c.trainable_variables]

    def checkpointables(self):
        return {"co_connectors": self.connectors}

    def losses(self, images, labels, student_outputs, epoch):
        teacher_maps = [tf.stop_gradient(t) for t in self.teacher(images, training=False)["preact_taps"]]
        student_maps = [
            c(s, training=True) for c, s in zip(self.connectors, student_outputs["preact_taps"], strict=True)
        ]
        return {"overhaul": overhaul_loss(student_maps, teacher_maps, self.margins, self.weight)}
