"""t-SNE of each sensing point's pooled features, and the cluster metrics of both spaces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.manifold import TSNE

from iep.interpret.metrics import cluster_metrics


def tsne(x: np.ndarray, seed: int) -> np.ndarray:
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(np.float32)


def tsne_and_metrics(
    pooled: Sequence[np.ndarray], labels: np.ndarray, limit: int, seed: int
) -> tuple[list[np.ndarray], list[dict[str, dict[str, float]]]]:
    """For the first `limit` images: per point, the 2-D t-SNE embedding and metrics of the features and of it."""
    labels = labels[:limit]
    embeddings, metrics = [], []
    for features in pooled:
        features = features[:limit]
        embedding = tsne(features, seed)
        embeddings.append(embedding)
        metrics.append({"features": cluster_metrics(features, labels), "tsne": cluster_metrics(embedding, labels)})
    return embeddings, metrics
