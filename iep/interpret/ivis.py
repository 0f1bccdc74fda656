"""IVIS (Szubert et al., Sci. Rep. 2019) in Keras 3: a siamese network trained with a triplet loss on kNN triplets.

Follows the reference package `beringresearch/ivis`:
- base network `ivis/nn/network.py` "szubert": Dense(128, selu, lecun_normal) → AlphaDropout(0.1) →
  Dense(128, selu) → AlphaDropout(0.1) → Dense(128, selu), then a linear Dense(embedding_dims);
- loss `ivis/nn/losses.py` "pn": mean(max(d(a, p) − min(d(a, n), d(p, n)) + margin, 0)) with
  d = sqrt(max(Σ(x − y)², ε)), margin 1;
- triplets `ivis/data/generators/triplet_generators.py`: the anchors of a batch are consecutive points of
  the epoch's order, the positive is one column of the anchor's k-nearest-neighbour list (the point itself
  included, column drawn once per batch), the negative a random point outside that list;
- supervised mode: a softmax classifier on the embedding, loss (1 − w)·triplet + w·cross-entropy, w = 0.5;
- Adam (Keras defaults), batch 128, k = 150, early stop when the epoch loss has not improved for
  `patience` epochs.

Our design, for this CPU and for reproducibility: exact kNN by scikit-learn's NearestNeighbors instead of
Annoy (the same neighbour lists, no approximation), at most 100 epochs with patience 10 (the package
allows 1000 with patience 20, which is GPU-sized; the loss plateaus well before 100 on our features),
anchors shuffled every epoch by a seeded NumPy generator, and inputs standardized per feature (IVIS
itself leaves scaling to the user; pooled features of different layers differ in scale by orders of
magnitude). Unlike t-SNE, the trained mapping embeds new points: fit on one split, `transform` another.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from sklearn.neighbors import NearestNeighbors

from iep.core.tracing import traced


@dataclasses.dataclass
class IvisConfig:
    embedding_dims: int = 2
    k: int = 150
    margin: float = 1.0
    batch_size: int = 128
    epochs: int = 100
    patience: int = 10
    supervision_weight: float = 0.5  # used when labels are given to fit()
    seed: int = 0

    def validate(self) -> None:
        checks = {
            "embedding_dims": self.embedding_dims >= 1,
            "k": self.k >= 1,
            "margin": self.margin > 0,
            "batch_size": self.batch_size >= 1,
            "epochs": self.epochs >= 1,
            "patience": self.patience >= 1,
            "supervision_weight": 0 <= self.supervision_weight <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"IVIS settings out of range: {', '.join(f'{b}={getattr(self, b)}' for b in bad)}")


def pn_triplet_loss(anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float) -> tf.Tensor:
    """ivis's "pn" loss: the positive must be closer to the anchor than the nearer of the two negative distances."""

    def distance(x, y):
        return tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(x - y), axis=-1), keras.config.epsilon()))

    nearest_negative = tf.minimum(distance(anchor, negative), distance(positive, negative))
    return tf.reduce_mean(tf.maximum(distance(anchor, positive) - nearest_negative + margin, 0.0))


def neighbour_lists(x: np.ndarray, k: int) -> np.ndarray:
    """[N, k] indices of each point's k nearest points (Euclidean), the point itself first, as Annoy returns."""
    k = min(k, len(x))
    return NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x, return_distance=False)


def sample_triplets(
    neighbours: np.ndarray, order: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(anchor, positive, negative) index arrays per batch of one epoch, as ivis's triplet generator draws them."""
    n, k = neighbours.shape
    batches = []
    for start in range(0, len(order), batch_size):
        anchors = order[start : start + batch_size]
        rows = neighbours[anchors]
        positives = rows[:, rng.integers(k)]
        negatives = rng.integers(n, size=len(anchors))
        invalid = (negatives[:, None] == rows).any(axis=1)
        while invalid.any() and k < n:  # redraw negatives that fell inside the anchor's neighbour list
            negatives[invalid] = rng.integers(n, size=int(invalid.sum()))
            invalid = (negatives[:, None] == rows).any(axis=1)
        batches.append((anchors, positives, negatives))
    return batches


class Ivis:
    """fit(x[, labels]) learns the mapping; transform(x) embeds any points of the same feature space."""

    def __init__(self, config: IvisConfig | None = None):
        self.config = config or IvisConfig()
        self.config.validate()
        self.loss_history: list[float] = []
        self._mean = self._scale = None
        self.model: keras.Model | None = None

    def _build(self, dims: int, num_classes: int | None) -> None:
        c = self.config
        seeds = iter(range(c.seed * 100, c.seed * 100 + 100))

        def selu_dense(units):
            return keras.layers.Dense(
                units, activation="selu", kernel_initializer=keras.initializers.LecunNormal(seed=next(seeds))
            )

        inputs = keras.Input((dims,))
        h = selu_dense(128)(inputs)
        h = keras.layers.AlphaDropout(0.1, seed=next(seeds))(h)
        h = selu_dense(128)(h)
        h = keras.layers.AlphaDropout(0.1, seed=next(seeds))(h)
        h = selu_dense(128)(h)
        init = keras.initializers.GlorotUniform(seed=next(seeds))
        embedding = keras.layers.Dense(c.embedding_dims, kernel_initializer=init, name="embedding")(h)
        self.model = keras.Model(inputs, embedding, name="ivis")
        self.classifier = None
        if num_classes:
            init = keras.initializers.GlorotUniform(seed=next(seeds))
            self.classifier = keras.layers.Dense(num_classes, kernel_initializer=init, name="supervised")
            self.classifier.build((None, c.embedding_dims))

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self._mean) / self._scale).astype(np.float32)

    def fit(self, x: np.ndarray, labels: np.ndarray | None = None) -> Ivis:
        c = self.config
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or len(x) < 3 or not np.isfinite(x).all():
            raise ValueError(f"IVIS needs finite [N >= 3, D] features, got shape {x.shape}")
        self._mean, self._scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        x = self._standardize(x)
        neighbours = neighbour_lists(x, c.k)
        num_classes = int(labels.max()) + 1 if labels is not None else None
        self._build(x.shape[1], num_classes)
        variables = self.model.trainable_variables + (self.classifier.trainable_variables if self.classifier else [])
        optimizer = keras.optimizers.Adam()
        optimizer.build(variables)
        features = tf.constant(x)
        label_tensor = tf.constant(labels if labels is not None else np.zeros(len(x)), tf.int32)
        weight = c.supervision_weight if self.classifier else 0.0

        @traced(reduce_retracing=True)
        def step(anchors, positives, negatives):
            with tf.GradientTape() as tape:
                a, p, n = (self.model(tf.gather(features, i), training=True) for i in (anchors, positives, negatives))
                loss = pn_triplet_loss(a, p, n, c.margin)
                if self.classifier is not None:
                    logits = self.classifier(a)
                    ce = keras.losses.sparse_categorical_crossentropy(tf.gather(label_tensor, anchors), logits, True)
                    loss = (1.0 - weight) * loss + weight * tf.reduce_mean(ce)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        rng = np.random.default_rng(c.seed)
        best, waited = np.inf, 0
        for _ in range(c.epochs):
            losses = [
                float(step(*batch)) for batch in sample_triplets(neighbours, rng.permutation(len(x)), c.batch_size, rng)
            ]
            epoch_loss = float(np.mean(losses))
            if not np.isfinite(epoch_loss):
                raise FloatingPointError(f"IVIS loss became {epoch_loss} after {len(self.loss_history)} epochs")
            self.loss_history.append(epoch_loss)
            if epoch_loss < best:
                best, waited = epoch_loss, 0
            else:
                waited += 1
                if waited >= c.patience:
                    break
        return self

    def transform(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        if self.model is None:
            raise ValueError("IVIS: call fit() before transform()")
        if np.ndim(x) != 2 or np.shape(x)[1] != self._mean.shape[0]:
            raise ValueError(f"IVIS was fitted on [N, {self._mean.shape[0]}] features, got shape {np.shape(x)}")
        x = self._standardize(x)
        return np.concatenate(
            [self.model(x[i : i + batch_size], training=False).numpy() for i in range(0, len(x), batch_size)]
        )

    def fit_transform(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return self.fit(x, labels).transform(x)
