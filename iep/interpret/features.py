"""Per-sensing-point features of a whole split: pooled features and SPCA compressed PCs, in one fixed order."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from iep.core.tracing import traced
from iep.nets import TappedNetwork
from iep.procedure.spca import StackedPCA


@dataclasses.dataclass
class SplitFeatures:
    labels: np.ndarray  # [N]
    mean_colour: np.ndarray  # [N, 3] in [0, 1]: the image's mean RGB
    pooled: list[np.ndarray]  # per point [N, C]: global-average-pooled features
    compressed: list[np.ndarray]  # per point [N, C/2]: SPCA compressed PCs (columns by decreasing variance)
    affinity_images: np.ndarray | None = None


def fit_spca(network: TappedNetwork, batches: tf.data.Dataset) -> list[StackedPCA]:
    """IPCA state fitted on the fly: one pass over the split with updates (deterministic for a fixed order)."""
    spca = [StackedPCA("ipca", name=f"view_spca_{i}") for i in range(len(network.tap_specs))]
    for layer, spec in zip(spca, network.tap_specs, strict=True):
        layer.build((None, *spec.shape))

    @traced
    def update(images):
        for layer, tap in zip(spca, network(images, training=False)["taps"], strict=True):
            layer(tap, update=True)

    for images, _ in batches:
        update(images)
    return spca


def collect(network: TappedNetwork, batches: tf.data.Dataset, spca: list[StackedPCA]) -> SplitFeatures:
    @traced
    def step(images):
        taps = network(images, training=False)["taps"]
        pooled = [tf.reduce_mean(t, axis=[1, 2]) for t in taps]
        compressed = [layer(t, update=False)["c"] for layer, t in zip(spca, taps, strict=True)]
        return pooled, compressed, tf.reduce_mean(images, axis=[1, 2]) / 255.0

    labels, colours, pooled, compressed = [], [], [], []
    for images, batch_labels in batches:
        p, c, colour = step(images)
        labels.append(batch_labels.numpy())
        colours.append(colour.numpy())
        pooled.append([x.numpy() for x in p])
        compressed.append([x.numpy() for x in c])
    points = len(network.tap_specs)
    return SplitFeatures(
        labels=np.concatenate(labels),
        mean_colour=np.clip(np.concatenate(colours), 0.0, 1.0),
        pooled=[np.concatenate([b[i] for b in pooled]) for i in range(points)],
        compressed=[np.concatenate([b[i] for b in compressed]) for i in range(points)],
    )


def collect_pooled(network: TappedNetwork, batches: tf.data.Dataset) -> list[np.ndarray]:
    """Per point [N, C] global-average-pooled features only (what IVIS is fitted on)."""

    @traced
    def step(images):
        return [tf.reduce_mean(t, axis=[1, 2]) for t in network(images, training=False)["taps"]]

    per_batch = [[x.numpy() for x in step(images)] for images, _ in batches]
    return [np.concatenate([b[i] for b in per_batch]) for i in range(len(network.tap_specs))]
