"""SRM — sparse representation matching (Tran, Gabbouj & Iosifidis, 2021).

The paper's idea: sparse codes of the teacher's intermediate features over a
learned dictionary give *pixel-level* and *image-level* labels for the
student's intermediate features. No reference code was available to us, so
this is our reading of it, with our hyper-parameters:

* per sensing point, a dictionary of M = 2·C unit-norm atoms (C = teacher
  channels); the code of a pixel t is the top-k (k = 8) of ReLU(Dᵀt), the rest
  zero;
* pre-phase (30 % of the main steps, SGD 0.1): the dictionary learns to
  rebuild the teacher's pixels, Σ‖t − D z‖² / Σ‖t‖² (scale-free);
* main phase, D frozen: the student's point, brought to C channels by a
  trained 1×1 conv + BN connector, scores every atom per pixel (Dᵀs);
  pixel-level loss: cross-entropy between the teacher's chosen atoms (uniform
  over its k atoms) and softmax of the student's scores; image-level loss:
  KL between the per-image histograms (mean over pixels) of the teacher's
  labels and of the student's softmax. Both weighted 1, summed over points.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from iep.baselines.hints import _require_equal_points, connectors
from iep.engine.distiller import Distiller
from nets import TappedNetwork


def sparse_code(pixels: tf.Tensor, dictionary: tf.Tensor, nonzeros: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(codes [N, M] with `nonzeros` non-negative entries per row, the 0/1 support [N, M])."""
    scores = tf.nn.relu(tf.matmul(pixels, dictionary))
    chosen = tf.math.top_k(scores, k=nonzeros).indices  # exactly k per pixel, ties broken by index
    support = tf.reduce_sum(tf.one_hot(chosen, tf.shape(scores)[-1], dtype=scores.dtype), axis=1)
    return scores * support, tf.stop_gradient(support)


def reconstruction_loss(pixels: tf.Tensor, dictionary: tf.Tensor, nonzeros: int) -> tf.Tensor:
    codes, _ = sparse_code(pixels, dictionary, nonzeros)
    rebuilt = tf.matmul(codes, dictionary, transpose_b=True)
    return tf.reduce_sum(tf.square(pixels - rebuilt)) / tf.maximum(tf.reduce_sum(tf.square(pixels)), 1e-12)


def srm_losses(student_scores: tf.Tensor, teacher_support: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(pixel-level CE, image-level KL) for scores/support shaped [B, P, M] (P pixels per image)."""
    target = teacher_support / tf.reduce_sum(teacher_support, axis=-1, keepdims=True)
    log_p = tf.nn.log_softmax(student_scores, axis=-1)
    pixel = -tf.reduce_mean(tf.reduce_sum(target * log_p, axis=-1))
    hist_t = tf.reduce_mean(target, axis=1)
    hist_s = tf.reduce_mean(tf.exp(log_p), axis=1)
    image = tf.reduce_mean(tf.reduce_sum(hist_t * (tf.math.log(hist_t + 1e-12) - tf.math.log(hist_s + 1e-12)), axis=-1))
    return pixel, image


def _pixels(feature_map: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.cast(feature_map, tf.float32), [-1, feature_map.shape[-1]])


class SRMDistiller(Distiller):
    name, loss_names = "srm", ("pixel", "image")
    pre_phase_loss_names = ("reconstruction",)

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        pre_phase_steps: int,
        pre_phase_lr: float = 0.1,
        atoms_ratio: float = 2.0,
        nonzeros: int = 8,
        pixel_weight: float = 1.0,
        image_weight: float = 1.0,
        seed: int | None = None,
    ):
        super().__init__(teacher)
        _require_equal_points(self.name, teacher, student)
        if pre_phase_steps < 1:
            raise ValueError(f"srm needs pre_phase_steps >= 1 (dictionary learning), got {pre_phase_steps}")
        self.pre_phase_steps, self.pre_phase_lr = pre_phase_steps, pre_phase_lr
        self.pixel_weight, self.image_weight = pixel_weight, image_weight
        initializer = keras.initializers.RandomNormal(seed=seed)
        self.atoms = []
        for i, spec in enumerate(teacher.tap_specs):
            channels = spec.shape[-1]
            atoms = max(int(round(atoms_ratio * channels)), nonzeros)
            self.atoms.append(tf.Variable(initializer((channels, atoms)), name=f"srm_dictionary_{i}"))
        if nonzeros < 1:
            raise ValueError(f"srm nonzeros must be >= 1, got {nonzeros}")
        self.nonzeros = nonzeros
        self.connectors = connectors(teacher, student, self.name)

    def dictionary(self, i: int) -> tf.Tensor:
        return tf.math.l2_normalize(self.atoms[i], axis=0)

    @property
    def trainable_variables(self):
        return [v for c in self.connectors for v in c.trainable_variables]

    @property
    def pre_phase_variables(self):
        return list(self.atoms)

    def checkpointables(self):
        return {"srm_dictionaries": self.atoms, "srm_connectors": self.connectors}

    def pre_phase_losses(self, images, labels):
        taps = self.teacher(images, training=False)["taps"]
        losses = [reconstruction_loss(_pixels(t), self.dictionary(i), self.nonzeros) for i, t in enumerate(taps)]
        return {"reconstruction": tf.add_n(losses)}

    def losses(self, images, labels, student_outputs, epoch):
        taps_t = self.teacher(images, training=False)["taps"]
        pixel, image = [], []
        for i, (connector, s, t) in enumerate(zip(self.connectors, student_outputs["taps"], taps_t, strict=True)):
            dictionary = tf.stop_gradient(self.dictionary(i))
            _, support = sparse_code(_pixels(tf.stop_gradient(t)), dictionary, self.nonzeros)
            scores = tf.matmul(_pixels(connector(s, training=True)), dictionary)
            batch, atoms = tf.shape(t)[0], dictionary.shape[-1]
            p, m = srm_losses(tf.reshape(scores, [batch, -1, atoms]), tf.reshape(support, [batch, -1, atoms]))
            pixel.append(p)
            image.append(m)
        return {"pixel": self.pixel_weight * tf.add_n(pixel), "image": self.image_weight * tf.add_n(image)}
