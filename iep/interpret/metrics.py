"""Cluster metrics of an embedding: how well its classes separate, per layer.

k-NN accuracy (leave-one-out), silhouette score (scikit-learn, Euclidean) and
the ratio of mean intra-class to mean inter-class pairwise distance (< 1 means
classes are tighter than the space between them).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.neighbors import NearestNeighbors


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN: each point is classified by the majority label of its k nearest *other* points."""
    labels = np.asarray(labels)
    neighbours = NearestNeighbors(n_neighbors=min(k + 1, len(x))).fit(x).kneighbors(x, return_distance=False)
    votes = []
    for i, row in enumerate(neighbours):
        others = [j for j in row if j != i][:k]
        votes.append(np.bincount(labels[others], minlength=labels.max() + 1).argmax())
    return float(np.mean(np.asarray(votes) == labels))


def intra_inter_ratio(x: np.ndarray, labels: np.ndarray) -> float:
    """mean distance between same-class pairs / mean distance between different-class pairs (i ≠ j)."""
    labels = np.asarray(labels)
    distances = pairwise_distances(x)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(x), dtype=bool)
    return float(distances[same & off_diagonal].mean() / distances[~same].mean())


def cluster_metrics(x: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, float]:
    classes = len(np.unique(labels))
    if classes < 2:
        raise ValueError("cluster metrics need at least two classes in the evaluated images")
    if classes >= len(labels):  # every image its own class: the silhouette score is undefined
        raise ValueError(
            f"cluster metrics need more images than classes: {len(labels)} images hold {classes} classes "
            "(a larger limit=)"
        )
    return {
        "knn_accuracy": knn_accuracy(x, labels, k),
        "silhouette": float(silhouette_score(x, labels)),
        "intra_inter_ratio": intra_inter_ratio(x, labels),
    }
