"""IVIS: the triplet loss, the kNN triplets and the learned mapping, against NumPy references and known geometry."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs

from iep.interpret.embedding import check_embeddings
from iep.interpret.ivis import Ivis, IvisConfig, neighbour_lists, pn_triplet_loss, sample_triplets
from iep.interpret.metrics import knn_accuracy


def _blobs(n, seed=0, std=1.0):
    return make_blobs(n_samples=n, n_features=64, centers=5, cluster_std=std, center_box=(-10, 10), random_state=seed)


def test_pn_loss_equals_numpy_reference():
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(16, 3)).astype(np.float32) for _ in range(3))
    d = lambda x, y: np.sqrt(np.maximum(((x - y) ** 2).sum(-1), 1e-7))  # noqa: E731
    expected = np.maximum(d(a, p) - np.minimum(d(a, n), d(p, n)) + 1.0, 0).mean()
    assert float(pn_triplet_loss(*(tf.constant(v) for v in (a, p, n)), 1.0)) == pytest.approx(expected, rel=1e-5)


def test_neighbour_lists_and_triplets_follow_the_knn_graph():
    x = np.random.default_rng(1).normal(size=(60, 5))
    neighbours = neighbour_lists(x, 7)
    brute = np.argsort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, :7]
    np.testing.assert_array_equal(np.sort(neighbours, 1), np.sort(brute, 1))
    assert (neighbours[:, 0] == np.arange(60)).all()  # the point itself first, as Annoy returns it
    rng = np.random.default_rng(0)
    order = rng.permutation(60)
    batches = sample_triplets(neighbours, order, 16, rng)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), order)  # every point once per epoch
    for anchors, positives, negatives in batches:
        rows = neighbours[anchors]
        assert (positives[:, None] == rows).any(1).all()
        assert not (negatives[:, None] == rows).any(1).any()


def test_separated_blobs_are_separated_and_held_out_points_land_in_their_blob():
    x, y = _blobs(1500)
    ivis = Ivis(IvisConfig(epochs=30, seed=0))
    train = ivis.fit_transform(x[:1000])
    assert train.shape == (1000, 2)
    assert knn_accuracy(train, y[:1000]) > 0.99
    held_out = ivis.transform(x[1000:])
    centroids = np.stack([train[y[:1000] == c].mean(0) for c in range(5)])
    nearest = np.argmin(((held_out[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == y[1000:]) > 0.99
    assert ivis.loss_history[-1] < ivis.loss_history[0]


def test_deterministic_for_a_seed():
    x, _ = _blobs(400, seed=3)
    first = Ivis(IvisConfig(epochs=5, seed=7)).fit_transform(x)
    second = Ivis(IvisConfig(epochs=5, seed=7)).fit_transform(x)
    other = Ivis(IvisConfig(epochs=5, seed=8)).fit_transform(x)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_supervised_mode_uses_the_labels():
    x, y = _blobs(600, seed=4, std=6.0)  # overlapping blobs: the labels add what the neighbours lack
    unsupervised = Ivis(IvisConfig(epochs=20, seed=0)).fit_transform(x)
    supervised = Ivis(IvisConfig(epochs=20, seed=0, supervision_weight=0.5)).fit_transform(x, y)
    assert knn_accuracy(supervised, y) > knn_accuracy(unsupervised, y)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="IVIS settings out of range: k=0"):
        Ivis(IvisConfig(k=0))
    with pytest.raises(ValueError, match=r"finite \[N >= 3, D\] features"):
        Ivis().fit(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="call fit"):
        Ivis().transform(np.zeros((2, 3)))
    ivis = Ivis(IvisConfig(epochs=1)).fit(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match=r"fitted on \[N, 3\] features, got shape \(2, 4\)"):
        ivis.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"embedding=\['umap'\]: must be a non-empty subset"):
        check_embeddings(["umap"])
