"""Interpretability: cluster metrics against NumPy/scikit-learn references, and visualize.py's outputs."""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from iep.interpret.metrics import cluster_metrics, intra_inter_ratio, knn_accuracy
from iep.interpret.modules import pick_graph_images
from iep.interpret.report import visualize
from tests.helpers import train_with_flags

RNG = np.random.default_rng(7)


def _blobs(separation: float, per_class: int = 40, classes: int = 3, dim: int = 5):
    centers = RNG.normal(size=(classes, dim)) * separation
    x = np.concatenate([c + RNG.normal(size=(per_class, dim)) for c in centers])
    return x, np.repeat(np.arange(classes), per_class)


def _reference_knn(x, y, k):
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    hits = 0
    for i in range(len(x)):
        nearest = np.argsort(d[i], kind="stable")[:k]
        hits += np.bincount(y[nearest], minlength=y.max() + 1).argmax() == y[i]
    return hits / len(x)


def _reference_silhouette(x, y):
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    scores = []
    for i in range(len(x)):
        same = (y == y[i]) & (np.arange(len(x)) != i)
        a = d[i, same].mean()
        b = min(d[i, y == c].mean() for c in np.unique(y) if c != y[i])
        scores.append((b - a) / max(a, b))
    return np.mean(scores)


def _reference_ratio(x, y):
    intra, inter = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i != j:
                (intra if y[i] == y[j] else inter).append(np.linalg.norm(x[i] - x[j]))
    return np.mean(intra) / np.mean(inter)


@pytest.mark.parametrize("separation", [0.3, 2.0, 20.0])
def test_metrics_equal_references(separation):
    x, y = _blobs(separation)
    assert knn_accuracy(x, y, 5) == pytest.approx(_reference_knn(x, y, 5))
    assert intra_inter_ratio(x, y) == pytest.approx(_reference_ratio(x, y), rel=1e-10)
    got = cluster_metrics(x, y)
    assert got["silhouette"] == pytest.approx(_reference_silhouette(x, y), rel=1e-8)
    assert got["silhouette"] == pytest.approx(silhouette_score(x, y))


def test_metrics_follow_known_separation():
    far = cluster_metrics(*_blobs(50.0))
    assert far["knn_accuracy"] == 1.0 and far["silhouette"] > 0.9 and far["intra_inter_ratio"] < 0.1
    x = RNG.normal(size=(300, 4))
    mixed = cluster_metrics(x, np.arange(300) % 3)  # labels carry no structure
    assert mixed["intra_inter_ratio"] == pytest.approx(1.0, abs=0.05)
    assert abs(mixed["silhouette"]) < 0.05 and mixed["knn_accuracy"] < 0.5
    with pytest.raises(ValueError, match="two classes"):
        cluster_metrics(x, np.zeros(300, int))
    with pytest.raises(ValueError, match="more images than classes: 3 images hold 3 classes"):
        cluster_metrics(x[:3], np.arange(3))  # scikit-learn's own words named no flag


def test_graph_images_cover_classes_first_and_are_deterministic():
    labels = np.array([0, 0, 1, 2, 2, 2, 1, 0, 3, 3])
    chosen = pick_graph_images(labels, 6, seed=4)
    assert len(set(chosen)) == 6 and set(labels[chosen]) == {0, 1, 2, 3}
    assert np.array_equal(chosen, pick_graph_images(labels, 6, seed=4))
    assert list(labels[chosen]) == sorted(labels[chosen])


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A 2-epoch resnet8 teacher and an IEP student on the real (scikit-learn) digits: enough state to draw."""
    root = tmp_path_factory.mktemp("interpret_runs")
    data = ["--dataset=digits", "--rate=0.5", "--arch=resnet8", "--epochs=2"]
    common = [*data, "--progress=false", "--export=false", "--batch_size=64"]
    train_with_flags(*common, f"--run_dir={root / 'teacher'}")
    train_with_flags(
        *common,
        "--distill=iep",
        f"--teacher={root / 'teacher'}",
        "--iep_module_steps=5",
        f"--run_dir={root / 'student_iep'}",
    )
    return root


def test_visualize_writes_every_view_deterministically(trained_runs, tmp_path):
    root = trained_runs
    args = dict(
        teacher=str(root / "teacher"),
        students=[str(root / "student_iep")],
        iep_run=str(root / "student_iep"),
        limit=120,
        tsne_limit=90,
        ivis_fit_limit=150,
        ivis_epochs=10,
        graph_images=6,
    )
    metrics = visualize(**args, out=str(tmp_path / "a"))
    out = tmp_path / "a"
    assert set(metrics) == {"teacher", "student_iep"}
    for name in metrics:
        assert set(metrics[name]) == {"point0", "point1", "point2"}
        for point in metrics[name].values():
            for space in ("features", "tsne", "ivis"):
                assert set(point[space]) == {"knn_accuracy", "silhouette", "intra_inter_ratio"}
                assert 0.0 <= point[space]["knn_accuracy"] <= 1.0 and -1 <= point[space]["silhouette"] <= 1
        for p in range(3):
            assert os.path.getsize(out / "spca" / f"{name}_point{p}.png") > 10_000
    channels = [16, 32, 64]  # resnet8 sensing points: compressed PCs are D/2 wide
    for p, c in enumerate(channels):
        assert os.path.getsize(out / "embeddings" / f"point{p}.png") > 10_000  # t-SNE and IVIS per network
        assert np.loadtxt(out / "projector" / f"teacher_point{p}.tsv").shape == (120, c // 2)
        assert (out / "graphs" / f"point{p}_heatmaps.png").exists()
    for p in (1, 2):  # the MPNN relates consecutive points
        assert (out / "graphs" / f"point{p}_readout.png").exists() and (
            out / "graphs" / f"point{p}_message.png"
        ).exists()
    assert len(open(out / "projector" / "metadata.tsv").read().splitlines()) == 121
    assert "sprite" in open(out / "projector" / "projector_config.pbtxt").read()
    again = visualize(**args, out=str(tmp_path / "b"))
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)


def test_visualize_rejects_missing_points_and_non_iep_runs(trained_runs, tmp_path):
    teacher = str(trained_runs / "teacher")
    with pytest.raises(ValueError, match=r"points=\[5\]: teacher \(resnet8\) has 3 sensing points"):
        visualize(teacher, points=[0, 5], out=str(tmp_path))
    with pytest.raises(ValueError, match="needs an iep/iep_bb run"):
        visualize(teacher, iep_run=teacher, out=str(tmp_path))
    # a folder that is no run dir: named by the argument that gave it, before any image is decoded
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(ValueError, match=r"students='.*not_a_run' is not a run directory of ours \(no config"):
        visualize(teacher, [str(tmp_path / "not_a_run")], out=str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"out='.*file/views' cannot be created"):
        visualize(teacher, out=str(tmp_path / "file" / "views"))
    from iep.engine.cli import number_list

    with pytest.raises(ValueError, match=r"--points takes comma-separated integers, got 'x'"):
        number_list("points", ["1", "x"], int)


def test_out_dir_names_the_output_folder():
    """absl answered a mistyped --out_dir with "Did you mean: log_dir?" (its log files' folder), which left the
    views in the default folder without a word: --out_dir is --out."""
    import subprocess
    import sys

    from tests.helpers import subprocess_env

    parse = "from absl import flags; import iep.apps.visualize; F = flags.FLAGS; F(['v', '--teacher=t', '--out_dir=/views']); print(F.out)"  # noqa: E501
    printed = subprocess.run([sys.executable, "-c", parse], env=subprocess_env(), capture_output=True, text=True)
    assert printed.stdout.strip().splitlines()[-1] == "/views", printed.stderr
