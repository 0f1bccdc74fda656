"""Static knowledge: semantic vectors against NumPy references and planted channel groups, the file, and
distillation that never builds a teacher."""

import os

import numpy as np
import pytest
import tensorflow as tf

from iep.static.knowledge_file import StaticKnowledge, load_static_knowledge, save_static_knowledge
from iep.static.semantic import alignment_loss, alignment_score, channel_similarity, vector_similarity
from tests.helpers import train_with_flags


def _run_train(*argv):
    return train_with_flags("--epochs=1", "--progress=false", "--export=false", "--arch=resnet8", *argv)


def test_similarities_and_loss_equal_numpy_references():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 4, 4, 6)).astype(np.float32)
    pooled = features.mean(axis=(1, 2))
    np.testing.assert_allclose(channel_similarity(tf.constant(features)).numpy(), np.corrcoef(pooled.T), atol=1e-5)
    vectors = rng.normal(size=(6, 3)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    semantic = unit @ unit.T
    np.testing.assert_allclose(vector_similarity(tf.constant(vectors)).numpy(), semantic, atol=1e-6)
    off = ~np.eye(6, dtype=bool)
    expected = ((semantic - np.corrcoef(pooled.T)) ** 2)[off].mean()
    loss = alignment_loss(tf.constant(semantic, tf.float32), channel_similarity(tf.constant(features)))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert alignment_score(semantic, semantic) == pytest.approx(1.0)
    dead = pooled.copy()
    dead[:, 0] = 3.0  # a constant channel correlates 0 with all, instead of NaN
    assert np.isfinite(channel_similarity(tf.constant(dead)).numpy()).all()


def test_vectors_recover_planted_channel_groups():
    """Channels 0-3 copy one signal, 4-7 another and 8-11 a third (plus noise): after alignment, vectors within a
    group are near-identical and across groups far apart."""
    from iep.static.distillers import SemanticVectorLearner

    class Fake:
        arch, tap_specs = "fake", [type("Spec", (), {"shape": (1, 1, 12), "name": "p0"})()]

    learner = SemanticVectorLearner(Fake(), dim=8, seed=0)
    optimizer = tf.keras.optimizers.Adam(0.05)
    rng = np.random.default_rng(0)
    for _ in range(300):
        signals = rng.normal(size=(64, 3))
        taps = np.repeat(signals, 4, axis=1) + 0.1 * rng.normal(size=(64, 12))
        with tf.GradientTape() as tape:
            loss = learner.losses(None, None, {"taps": [tf.constant(taps[:, None, None, :], tf.float32)]}, 0)
        grads = tape.gradient(loss["semantic_alignment"], learner.vectors)
        optimizer.apply_gradients(zip(grads, learner.vectors, strict=True))
    cos = vector_similarity(learner.vectors[0]).numpy()
    group = np.arange(12) // 4
    same = (group[:, None] == group[None, :]) & ~np.eye(12, dtype=bool)
    assert cos[same].min() > 0.95 and np.abs(cos[group[:, None] != group[None, :]]).max() < 0.2


def test_file_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    meta = {
        "arch": "resnet8",
        "points": [{"name": "a", "shape": [8, 8, 4]}, {"name": "b", "shape": [4, 4, 6]}],
        "dim": 3,
    }
    knowledge = StaticKnowledge([rng.normal(size=(4, 3)), rng.normal(size=(6, 3))], meta)
    path = save_static_knowledge(str(tmp_path / "k.npz"), knowledge)
    loaded = load_static_knowledge(path)
    assert loaded.metadata == meta and loaded.channels == [4, 6]
    for a, b in zip(loaded.vectors, knowledge.vectors, strict=True):
        np.testing.assert_array_equal(a, b.astype(np.float32))
    with pytest.raises(ValueError, match="does not exist"):
        load_static_knowledge(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk.npz' is not a static-knowledge file"):
        load_static_knowledge(str(tmp_path / "junk.npz"))
    bad = StaticKnowledge([rng.normal(size=(5, 3)), rng.normal(size=(6, 3))], meta)  # 5 vectors for 4 channels
    save_static_knowledge(str(tmp_path / "bad.npz"), bad)
    with pytest.raises(ValueError, match=r"point0_vectors has shape \(5, 3\)"):
        load_static_knowledge(str(tmp_path / "bad.npz"))


@pytest.fixture(scope="module")
def teacher_with_vectors(tmp_path_factory):
    """A resnet8 run that learned its semantic vectors jointly (train.py --semantic_vectors)."""
    run_dir = tmp_path_factory.mktemp("semantic_teacher")
    _run_train("--rate=0.3", "--batch_size=64", "--semantic_vectors=4", f"--run_dir={run_dir}")
    return run_dir


def test_joint_learning_writes_the_documented_file(teacher_with_vectors):
    knowledge = load_static_knowledge(str(teacher_with_vectors))  # a run dir resolves to its file
    assert knowledge.metadata["arch"] == "resnet8" and knowledge.metadata["learned"] == "joint"
    assert knowledge.channels == [16, 32, 64] and knowledge.metadata["dim"] == 4
    assert len(knowledge.metadata["alignment_score"]) == 3
    assert knowledge.metadata["data"]["class_names"] == [str(d) for d in range(10)]


def test_static_mode_never_builds_a_teacher(teacher_with_vectors, tmp_path, monkeypatch):
    import iep.engine.teacher
    from iep import nets

    def no_teacher(*args, **kwargs):
        raise AssertionError("static KD loaded a teacher")

    built = []
    original = nets.build_network
    monkeypatch.setattr(iep.engine.teacher, "load_teacher", no_teacher)
    monkeypatch.setattr(nets, "build_network", lambda *a, **k: built.append(a[0]) or original(*a, **k))
    summary = _run_train(
        "--rate=0.3",
        "--arch=wrn-10-1",  # 16/32/64 channels but another network: same widths, no map
        "--distill=static_kd",
        f"--static_knowledge={teacher_with_vectors}",
        f"--run_dir={tmp_path / 'student'}",
    )
    assert built == ["wrn-10-1"]  # the student only
    last = summary["history"][-1]
    assert np.isfinite(last["train_loss"]) and last["loss/static"] > 0


def test_static_mode_bad_inputs_are_one_line(teacher_with_vectors, tmp_path):
    args = ["--rate=0.3", f"--run_dir={tmp_path / 'x'}"]
    with pytest.raises(ValueError, match="needs --static_knowledge"):
        _run_train(*args, "--distill=static_kd")
    with pytest.raises(ValueError, match="never loads a teacher"):
        _run_train(
            *args,
            "--distill=static_kd",
            f"--static_knowledge={teacher_with_vectors}",
            f"--teacher={teacher_with_vectors}",
        )
    with pytest.raises(ValueError, match="does not exist"):
        _run_train(*args, "--distill=static_kd", f"--static_knowledge={tmp_path / 'none.npz'}")
    two_points = StaticKnowledge(
        [np.ones((16, 4)), np.ones((32, 4))],
        {"arch": "other", "points": [{"name": "a", "shape": [8, 8, 16]}, {"name": "b", "shape": [4, 4, 32]}]},
    )
    other = save_static_knowledge(str(tmp_path / "two.npz"), two_points)
    with pytest.raises(
        ValueError, match=r"holds other with 2 points of \[16, 32\] channels, but student resnet8 has 3"
    ):
        _run_train(*args, "--distill=static_kd", f"--static_knowledge={other}")
    with pytest.raises(ValueError, match="--static_knowledge is for --distill=static_kd"):
        _run_train(*args, f"--static_knowledge={teacher_with_vectors}")
    assert not (tmp_path / "x").exists() or not (tmp_path / "x" / "config.json").exists()


def test_visualize_draws_the_semantic_vectors(teacher_with_vectors, tmp_path):
    from iep.interpret.report import visualize
    from iep.interpret.static_views import top_images, vector_map

    pooled = np.array([[0.0, 5.0], [3.0, 1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(top_images(pooled, 2), [[1, 2], [0, 2]])  # per channel, highest first
    assert vector_map(np.eye(3)).shape == (3, 2)
    args = dict(limit=60, tsne_limit=50, embeddings=("tsne",), graph_images=2, projector=False)
    visualize(str(teacher_with_vectors), static_knowledge=str(teacher_with_vectors), out=str(tmp_path), **args)
    for p in range(3):
        for kind in ("map", "neurons"):
            assert os.path.getsize(tmp_path / "static" / f"{teacher_with_vectors.name}_point{p}_{kind}.png") > 5_000
    other = StaticKnowledge(
        [np.ones((8, 2))] * 3, {"arch": "x", "points": [{"name": "a", "shape": [1, 1, 8]}] * 3, "dim": 2}
    )
    path = save_static_knowledge(str(tmp_path / "other.npz"), other)
    with pytest.raises(ValueError, match=r"holds x with 3 points of \[8, 8, 8\] channels; teacher .* \[16, 32, 64\]"):
        visualize(str(teacher_with_vectors), static_knowledge=path, out=str(tmp_path / "o"), **args)


def test_static_maps_are_checkpointed_and_restored(teacher_with_vectors, tmp_path):
    """Unequal widths (wrn-10-2: 32/64/128 vs the teacher's 16/32/64): the trained maps live in the checkpoint,
    and a resumed run restores them (a finished run resumes to the same summary)."""
    args = [
        "--rate=0.3",
        "--arch=wrn-10-2",
        "--distill=static_kd",
        f"--static_knowledge={teacher_with_vectors}",
        f"--run_dir={tmp_path / 'run'}",
    ]
    first = _run_train(*args)
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    shapes = [tuple(shape) for _, shape in tf.train.list_variables(checkpoint)]  # filed under optimizer/...
    for map_kernel in ((32, 16), (64, 32), (128, 64)):  # student channels → teacher channels, per point
        assert map_kernel in shapes, map_kernel
    again = _run_train(*args)
    assert again["last_accuracy"] == first["last_accuracy"]
