"""SRM — sparse representation matching (Tran, Gabbouj & Iosifidis, arXiv 2103.17012, 2021).

Follows the authors' code, GitHub `viebboy/SRM` at 77a12ba, `cifar100/code`: `Layers.py`
(SparseRep lines 332-409, GlobalLocalLabel 59-128, GlobalLocalPred 5-57), `Utility.py`
(codeword_epoch_trainer lines 934-989, srm_init_epoch_trainer 990-1085, KD_loss 15-24), `Runners.py`
(train_codeword → initialize_student → SRMKD, lines 112-233) and `exp_configurations.py` (the stages' LRs
and epochs, lines 54-61; the setting, lines 183-187).
Three stages, the first two as pre-phases of our loop:

1. **Dictionary** (`srm_dictionary`), per sensing point of the teacher, only
   the dictionary trains: codes σ(xᵀD + b) for every pixel x (D is C×M, b one
   scalar per point), all but the top-k codes of the pixel zeroed, the pixel
   rebuilt as D·code; loss Σ_points MSE(x, D·code). M = int(C·2.0) atoms and
   k = max(1, int(C·2.0·0.02)) (`codeword_multiplier` 2.0 and
   `sparsity_multiplier` 0.02: the setting of their `srmkdwt_values`, the
   centre of their grids). Adam, LR 1e-3 ×0.1 at 10 % and 70 % of the stage
   (their CLUSTER_LR/EPOCH: 10+60+30 epochs), no weight decay.
2. **Student initialization** (`srm_init`), no label loss: a predictor per
   point (W: C_s×M, one scalar bias) scores the student's pixels,
   σ(sᵀW + b). Pixel level: cross-entropy of those scores (used as logits, as
   their `CrossEntropyLoss` on the sigmoid outputs does) against the argmax
   atom of the teacher's sparse code; image level: BCE between the pixel
   means of the student's scores and of the teacher's top-k masked codes.
   Summed over points. Student (below its classifier) and predictors train;
   Adam, LR 1e-3 ×0.1 at 30/160 and 130/160 of the stage (their
   INIT_LR/EPOCH: 30+100+30 epochs), L2 weight decay 1e-4 on every variable
   (torch Adam's `weight_decay`).
3. **KD** (main phase) from the initialized student: (1 − α)·CE +
   α·T²·KL(p_T ‖ p_S) (their KD_loss). α = 0.5, T = 4: the centre of the grid
   their configurations search on a validation split (α ∈ {0.25, 0.5, 0.75},
   T ∈ {2, 4, 8}); we do not search.

Scaled to our loop by the one rule for reference clocks (`iep.methods.CLOCK_RULE`): the dictionary stage
trains only the dictionary on the frozen teacher, so it runs the authors' 100 passes over the training data
(`dictionary_epochs`); the initialization stage trains the student, so it keeps the authors' ratio to their
KD stage (160 epochs against 200: 0.8× the main phase's steps, `init_fraction`); every stage uses the
loop's batch size (theirs: 512, 384, 128); the main phase uses the loop's
optimizer and schedule as every method does (theirs: Adam). The teacher is
read at each point's pre-activation (`preact_taps`, before the last ReLU:
their DenseNet taps are transition outputs, linear features before the next
BN-ReLU); the student at its activated output (`taps`, as their AllCNN block
outputs). Teacher and student points must have equal H×W (pixel labels).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from iep.baselines.hints import _require_equal_points, student_body_variables
from iep.baselines.logit_kd import kd_loss, teacher_logits
from iep.core.distiller import Distiller, PrePhase
from iep.nets import TappedNetwork
from iep.op_utils import l2_penalty

DICTIONARY_EPOCHS = 100.0  # their CLUSTER_EPOCH total (10 + 60 + 30), passes over the training data
INIT_FRACTION = 160 / 200  # their INIT_EPOCH total over KD_EPOCH total
DICTIONARY_LR_BOUNDARIES = (10 / 100, 70 / 100)
INIT_LR_BOUNDARIES = (30 / 160, 130 / 160)


def atom_count(channels: int, codeword_multiplier: float) -> int:
    return int(channels * codeword_multiplier)


def sparsity(channels: int, codeword_multiplier: float, sparsity_multiplier: float) -> int:
    """Their `int(in_dim * sparsity_multiplier * codeword_multiplier)`, and 1 where that is 0."""
    return max(1, int(channels * sparsity_multiplier * codeword_multiplier))


class SparseCoder(keras.layers.Layer):
    """σ(xᵀW + b) per pixel: the teacher's dictionary (W = D) or the student's predictor.

    Initialized as their `nn.init.kaiming_uniform_` of a (C, M) tensor (bound √(6/M)) and a scalar bias
    uniform in [−1, 1].
    """

    def __init__(self, channels: int, atoms: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        bound = math.sqrt(6.0 / atoms)
        self.atoms = self.add_weight(
            shape=(channels, atoms),
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed),
            name="atoms",
        )
        self.bias = self.add_weight(
            shape=(1,),
            initializer=keras.initializers.RandomUniform(-1.0, 1.0, seed=None if seed is None else seed + 1),
            name="bias",
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(tf.einsum("bhwc,cm->bhwm", tf.cast(x, tf.float32), self.atoms) + self.bias)


def top_k_mask(codes: tf.Tensor, k: int) -> tf.Tensor:
    """Codes below the k-th largest of their pixel set to 0 (ties kept, as their `>= min_coef`)."""
    kth = tf.math.top_k(codes, k=k).values[..., -1:]
    return codes * tf.cast(codes >= kth, codes.dtype)


def dictionary_loss(features: tf.Tensor, coder: SparseCoder, k: int) -> tf.Tensor:
    """MSE between the pixels and their rebuild from the top-k sparse code (their SparseRep + MSELoss)."""
    codes = top_k_mask(coder(features), k)
    rebuilt = tf.einsum("bhwm,cm->bhwc", codes, coder.atoms)
    return tf.reduce_mean(tf.square(tf.cast(features, tf.float32) - rebuilt))


def teacher_labels(teacher_codes: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(image-level label [B, M]: pixel mean of the masked codes; pixel-level label [B, H, W]: argmax atom)."""
    masked = top_k_mask(teacher_codes, k)
    return tf.reduce_mean(masked, axis=[1, 2]), tf.argmax(masked, axis=-1, output_type=tf.int32)


def binary_cross_entropy(prediction: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """torch's BCELoss: mean of −[y·log p + (1 − y)·log(1 − p)], each log clamped at −100."""
    log_p = tf.maximum(tf.math.log(prediction), -100.0)
    log_not_p = tf.maximum(tf.math.log(1.0 - prediction), -100.0)
    return -tf.reduce_mean(target * log_p + (1.0 - target) * log_not_p)


def init_losses(student_scores: tf.Tensor, teacher_codes: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(image-level BCE, pixel-level CE) of one point; scores and codes are [B, H, W, M] in (0, 1)."""
    global_label, local_label = teacher_labels(teacher_codes, k)
    image = binary_cross_entropy(tf.reduce_mean(student_scores, axis=[1, 2]), global_label)
    pixel = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=local_label, logits=student_scores))
    return image, pixel


class SRMDistiller(Distiller):
    name, loss_names = "srm", ("kd",)
    uses_teacher_logits = True
    decay_every_variable = True  # SRM `cifar100/code/Utility.py` kd_epoch_trainer: Adam(S_model.parameters(), wd)

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        main_steps: int,
        epochs: int,
        codeword_multiplier: float = 2.0,
        sparsity_multiplier: float = 0.02,
        alpha: float = 0.5,
        temperature: float = 4.0,
        dictionary_epochs: float = DICTIONARY_EPOCHS,
        init_fraction: float = INIT_FRACTION,
        lr: float = 1e-3,
        init_weight_decay: float = 1e-4,
        seed: int | None = None,
    ):
        super().__init__(teacher)
        _require_equal_points(self.name, teacher, student)
        for s, t in zip(student.tap_specs, teacher.tap_specs, strict=True):
            if s.shape[:2] != t.shape[:2]:
                raise ValueError(
                    f"srm labels pixels: it needs equal H×W at every point; student {s.shape} vs {t.shape}"
                )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"srm alpha must be in [0, 1], got {alpha}")
        if codeword_multiplier <= 0 or sparsity_multiplier <= 0 or temperature <= 0:
            raise ValueError("srm codeword_multiplier, sparsity_multiplier and temperature must be > 0")
        self.student, self.alpha, self.temperature = student, alpha, temperature
        self.cross_entropy_weight = 1.0 - alpha
        self.lr, self.init_weight_decay = lr, init_weight_decay
        self.dictionary_steps = max(1, round(dictionary_epochs * main_steps / epochs))
        self.init_steps = max(1, round(init_fraction * main_steps))
        channels = [spec.shape[-1] for spec in teacher.tap_specs]
        self.atom_counts = [atom_count(c, codeword_multiplier) for c in channels]
        self.sparsities = [sparsity(c, codeword_multiplier, sparsity_multiplier) for c in channels]
        base = 0 if seed is None else 2 * seed
        self.dictionaries = [
            SparseCoder(c, m, seed=None if seed is None else base + 10 * i, name=f"srm_dictionary_{i}")
            for i, (c, m) in enumerate(zip(channels, self.atom_counts, strict=True))
        ]
        self.predictors = [
            SparseCoder(s.shape[-1], m, seed=None if seed is None else base + 10 * i + 5, name=f"srm_predictor_{i}")
            for i, (s, m) in enumerate(zip(student.tap_specs, self.atom_counts, strict=True))
        ]
        for coder, spec in zip(self.dictionaries, teacher.tap_specs, strict=True):
            coder(tf.zeros((1, *spec.shape)))
        for coder, spec in zip(self.predictors, student.tap_specs, strict=True):
            coder(tf.zeros((1, *spec.shape)))

    def checkpointables(self):
        return {"srm_dictionaries": self.dictionaries, "srm_predictors": self.predictors}

    def pre_phases(self) -> tuple[PrePhase, ...]:
        dictionary_variables = [v for c in self.dictionaries for v in c.trainable_variables]
        return (
            PrePhase(
                "srm_dictionary", self.dictionary_steps, ("reconstruction",), self.dictionary_losses,
                dictionary_variables, self.lr, "adam", DICTIONARY_LR_BOUNDARIES,
            ),
            PrePhase(
                "srm_init", self.init_steps, ("image", "pixel", "weight_decay"), self.init_losses,
                self._init_variables(), self.lr, "adam", INIT_LR_BOUNDARIES,
            ),
        )  # fmt: skip

    def _init_variables(self) -> list[tf.Variable]:
        """What the initialization stage trains: the student below its classifier and the predictors."""
        return student_body_variables(self.student) + [v for c in self.predictors for v in c.trainable_variables]

    def _teacher_points(self, images: tf.Tensor) -> list[tf.Tensor]:
        return [tf.stop_gradient(t) for t in self.teacher(images, training=False)["preact_taps"]]

    def dictionary_losses(self, images, labels):
        points = self._teacher_points(images)
        losses = [dictionary_loss(t, c, k) for t, c, k in zip(points, self.dictionaries, self.sparsities, strict=True)]
        return {"reconstruction": tf.add_n(losses)}

    def init_losses(self, images, labels):
        points = self._teacher_points(images)
        student_points = self.student(images, training=True)["taps"]
        image, pixel = [], []
        for t, s, dictionary, predictor, k in zip(
            points, student_points, self.dictionaries, self.predictors, self.sparsities, strict=True
        ):
            i, p = init_losses(predictor(s), tf.stop_gradient(dictionary(t)), k)
            image.append(i)
            pixel.append(p)
        # torch Adam's weight_decay=λ adds λ·w to every gradient (all variables): the gradient of λ/2·Σw².
        decay = l2_penalty(self._init_variables(), self.init_weight_decay)
        return {"image": tf.add_n(image), "pixel": tf.add_n(pixel), "weight_decay": decay}

    def losses(self, images, labels, student_outputs, epoch):
        student = tf.cast(student_outputs["logits"], tf.float32)
        return {"kd": self.alpha * kd_loss(student, teacher_logits(self.teacher, images), self.temperature)}
