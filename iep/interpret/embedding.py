"""2-D embeddings of each sensing point's pooled features (t-SNE, IVIS) and the cluster metrics of every space."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.manifold import TSNE

from iep.interpret.ivis import Ivis, IvisConfig
from iep.interpret.metrics import cluster_metrics

EMBEDDINGS = ("tsne", "ivis")


def tsne(x: np.ndarray, seed: int) -> np.ndarray:
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(np.float32)


def check_embeddings(methods: Sequence[str]) -> list[str]:
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in EMBEDDINGS]
    if unknown or not methods:
        raise ValueError(f"embedding={list(methods)}: must be a non-empty subset of {EMBEDDINGS}")
    return methods


def embed_and_score(
    pooled: Sequence[np.ndarray],
    labels: np.ndarray,
    limit: int,
    seed: int,
    methods: Sequence[str] = EMBEDDINGS,
    fit_pooled: Sequence[np.ndarray] | None = None,
    ivis_epochs: int = IvisConfig.epochs,
) -> tuple[dict[str, list[np.ndarray]], list[dict[str, dict[str, float]]]]:
    """For the first `limit` images of the split: per point, each method's 2-D map and the metrics of the
    features and of every map. t-SNE embeds those images directly; IVIS learns its mapping on `fit_pooled`
    (the same points' features of another split, e.g. train) and transforms these images with it."""
    methods = check_embeddings(methods)
    if "ivis" in methods and fit_pooled is None:
        raise ValueError("IVIS needs the features of a split to fit its mapping on (fit_pooled)")
    labels = labels[:limit]
    embeddings: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    metrics = []
    for i, features in enumerate(pooled):
        features = features[:limit]
        scores = {"features": cluster_metrics(features, labels)}
        for method in methods:
            if method == "tsne":
                embedding = tsne(features, seed)
            else:
                embedding = Ivis(IvisConfig(seed=seed, epochs=ivis_epochs)).fit(fit_pooled[i]).transform(features)
            embeddings[method].append(embedding)
            scores[method] = cluster_metrics(embedding, labels)
        metrics.append(scores)
    return embeddings, metrics
