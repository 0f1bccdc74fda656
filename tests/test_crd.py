"""CRD against a NumPy transcription of RepDistiller's ContrastMemory and ContrastLoss (the loss given the
sample), its sampler, a short run in which it learns, and a resumed run bit-identical to an uninterrupted one."""

import numpy as np
import pytest
import tensorflow as tf

from iep.baselines.crd import CRDDistiller, contrast_scores, nce_loss, updated_rows
from iep.methods import build_distiller
from iep.nets import build_network
from tests.helpers import IndexedLabels, checkpoint_values, kill_and_resume

RNG = np.random.default_rng(20)


def _np_crd(memory_v1, memory_v2, v1, v2, idx, z, temperature, momentum, n_data):
    """crd/memory.py ContrastMemory.forward (Z given) and crd/criterion.py ContrastLoss, line by line: the loss
    of both sides and the two updated memories."""
    weight_v1 = memory_v1[idx]  # [B, K+1, D]
    out_v2 = np.exp(np.einsum("bkd,bd->bk", weight_v1, v2) / temperature)
    weight_v2 = memory_v2[idx]
    out_v1 = np.exp(np.einsum("bkd,bd->bk", weight_v2, v1) / temperature)
    if z[0] < 0:
        z = [out_v1.mean() * n_data, out_v2.mean() * n_data]
    out_v1, out_v2 = out_v1 / z[0], out_v2 / z[1]

    def contrast_loss(x):
        bsz, m = x.shape[0], x.shape[1] - 1
        pn = 1 / float(n_data)
        log_d1 = np.log(x[:, 0] / (x[:, 0] + m * pn + 1e-7))
        log_d0 = np.log((m * pn) / (x[:, 1:] + m * pn + 1e-7))
        return -(log_d1.sum() + log_d0.sum()) / bsz

    y = idx[:, 0]
    new_v1, new_v2 = memory_v1.copy(), memory_v2.copy()
    pos = memory_v1[y] * momentum + v1 * (1 - momentum)
    new_v1[y] = pos / np.sqrt((pos**2).sum(1, keepdims=True))
    pos = memory_v2[y] * momentum + v2 * (1 - momentum)
    new_v2[y] = pos / np.sqrt((pos**2).sum(1, keepdims=True))
    return contrast_loss(out_v1) + contrast_loss(out_v2), new_v1, new_v2, z


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_loss_and_memory_update_against_the_reference_given_the_sample():
    n, d, b, k = 50, 8, 4, 6
    memory_v1, memory_v2 = _unit(RNG.normal(size=(n, d))), _unit(RNG.normal(size=(n, d)))
    v1, v2 = _unit(RNG.normal(size=(b, d))), _unit(RNG.normal(size=(b, d)))
    idx = np.concatenate([np.array([3, 10, 20, 41])[:, None], RNG.integers(0, n, (b, k))], axis=1)
    loss, new_v1, new_v2, z = _np_crd(memory_v1, memory_v2, v1, v2, idx, [-1, -1], 0.07, 0.5, n)
    exp_s, exp_t = contrast_scores(memory_v1, memory_v2, v1, v2, idx, 0.07)
    ours = nce_loss(exp_s / (np.mean(exp_s) * n), n) + nce_loss(exp_t / (np.mean(exp_t) * n), n)
    np.testing.assert_allclose(float(ours), loss, rtol=1e-6)
    np.testing.assert_allclose(updated_rows(memory_v1, idx[:, 0], v1, 0.5), new_v1[idx[:, 0]], rtol=1e-10)
    np.testing.assert_allclose(updated_rows(memory_v2, idx[:, 0], v2, 0.5), new_v2[idx[:, 0]], rtol=1e-10)


def test_the_distillers_step_is_the_reference_given_its_sample(monkeypatch):
    """One `losses` call: the embeddings, Z from the first batch, the loss, and the memory rows updated."""
    teacher, student = build_network("resnet8", 4, name="t"), build_network("resnet8", 4, name="s")
    labels = np.arange(40) % 4
    crd = build_distiller("crd", teacher, student, data=IndexedLabels(labels), negatives=5, seed=0)
    images = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=1)
    indices = tf.constant([0, 5, 9, 30], tf.int64)
    idx = np.concatenate([indices.numpy()[:, None], RNG.integers(0, 40, (4, 5))], axis=1)
    monkeypatch.setattr(crd, "sample", lambda i, y: tf.constant(idx))
    outputs = student(images, training=True)
    e_s = crd._embed(0, outputs["taps"][-1]).numpy()
    e_t = crd._embed(1, teacher(images)["taps"][-1]).numpy()
    memory_s, memory_t = crd.memory_s.numpy().copy(), crd.memory_t.numpy().copy()
    loss, new_s, new_t, z = _np_crd(memory_s, memory_t, e_s, e_t, idx, [-1, -1], 0.07, 0.5, 40)
    got = crd.losses(images, tf.constant(labels[indices.numpy()]), outputs, 0, indices)["crd"]
    np.testing.assert_allclose(float(got), 0.8 * loss, rtol=1e-4)
    np.testing.assert_allclose(crd.z.numpy(), z, rtol=1e-5)
    np.testing.assert_allclose(crd.memory_s.numpy(), new_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(crd.memory_t.numpy(), new_t, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("negatives", [7, 200])
def test_the_sampler_draws_other_classes_after_the_positive(negatives):
    """mode `exact`: column 0 is the image, then negatives of other classes only; without replacement when the
    pool holds enough (7 of 30), with replacement when not (200 of 30)."""
    labels = np.arange(40) % 4
    crd = build_distiller("crd", build_network("resnet8", 4), build_network("resnet8", 4), data=IndexedLabels(labels),
                          negatives=negatives, seed=3)  # fmt: skip
    indices = tf.constant([1, 2, 7, 12], tf.int64)
    batch_labels = tf.constant(labels[indices.numpy()])
    idx = crd.sample(indices, batch_labels).numpy()
    assert idx.shape == (4, negatives + 1) and (idx[:, 0] == indices.numpy()).all()
    for row, label in zip(idx, batch_labels.numpy(), strict=True):
        assert (labels[row[1:]] != label).all()
        if negatives == 7:
            assert len(set(row[1:])) == 7
    assert not np.array_equal(crd.sample(indices, batch_labels).numpy(), idx)  # the counter moved on


def test_memory_size_and_labels_are_checked():
    teacher, student = build_network("resnet8", 4), build_network("resnet8", 4)
    with pytest.raises(ValueError, match=r"crd keeps two memories of 40 images × 128 floats .* max_memory_gb=1e-09"):
        build_distiller("crd", teacher, student, data=IndexedLabels(np.arange(40) % 4), max_memory_gb=1e-9)
    with pytest.raises(ValueError, match="crd keeps one entry per training image: give data"):
        build_distiller("crd", teacher, student)
    with pytest.raises(ValueError, match=r"crd: data gives \(40, 1\) labels; expected one class index"):
        build_distiller("crd", teacher, student, data=np.zeros((40, 1), np.int64))
    assert build_distiller("crd", teacher, student, data=np.arange(40) % 4).n_data == 40  # a label array will do


def test_the_crd_gradient_pulls_positives_in_and_pushes_negatives_out():
    """With the memory and the sample held, gradient steps on the embeddings lower the loss, and the positive's
    score rises against the negatives' (the contrastive task the memory poses)."""
    n, d, b, k = 60, 16, 8, 20
    memory_s, memory_t = _unit(RNG.normal(size=(n, d))), _unit(RNG.normal(size=(n, d)))
    idx = np.concatenate([np.arange(b)[:, None], RNG.integers(b, n, (b, k))], axis=1)
    e_s = tf.Variable(_unit(RNG.normal(size=(b, d))))
    e_t = tf.Variable(_unit(RNG.normal(size=(b, d))))

    def loss_and_margin():
        u_s, u_t = tf.math.l2_normalize(e_s, 1), tf.math.l2_normalize(e_t, 1)
        exp_s, exp_t = contrast_scores(memory_s, memory_t, u_s, u_t, idx, 0.07)
        loss = nce_loss(exp_s / (n * 1.0), n) + nce_loss(exp_t / (n * 1.0), n)
        return loss, float(tf.reduce_mean(tf.math.log(exp_s[:, 0]) - tf.reduce_mean(tf.math.log(exp_s[:, 1:]), 1)))

    first, margin0 = loss_and_margin()
    optimizer = tf.keras.optimizers.SGD(0.01)
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss, _ = loss_and_margin()
        optimizer.apply_gradients(zip(tape.gradient(loss, [e_s, e_t]), [e_s, e_t], strict=True))
    last, margin = loss_and_margin()
    assert float(last) < float(first) and margin > margin0


def test_crd_trains_on_real_cifar10(cifar10_subset, tmp_path):
    """Two epochs on 500 real images: finite losses, Z set from the first batch, every image's memory rows
    rewritten by its embeddings, the sampler's counter at the steps taken."""
    from iep.engine.trainer import TrainConfig, Trainer
    from tests.helpers import frozen_teacher_and_student

    teacher, student = frozen_teacher_and_student(cifar10_subset, "wrn-10-1", "wrn-10-1")
    crd = build_distiller("crd", teacher, student, data=cifar10_subset, seed=0)
    assert isinstance(crd, CRDDistiller) and crd.n_data == cifar10_subset.num_train
    before = crd.memory_s.numpy().copy()
    config = TrainConfig(epochs=2, batch_size=100, progress=False, export=False, lr_schedule="constant", lr=0.05)
    trainer = Trainer(student, cifar10_subset, config, str(tmp_path), crd)
    trainer.evaluate = lambda split=None: 0.0
    writer = tf.summary.create_noop_writer()
    records = [trainer._main_epoch(epoch, writer) for epoch in range(2)]
    assert all(np.isfinite(r["loss/crd"]) and r["loss/crd"] > 0 for r in records)
    assert (crd.z.numpy() > 0).all() and int(crd.draws.numpy()) == 2 * trainer.steps_per_epoch
    changed = np.any(crd.memory_s.numpy() != before, axis=1)
    assert changed.sum() == trainer.steps_per_epoch * 100  # every image of the epoch's full batches
    np.testing.assert_allclose(np.linalg.norm(crd.memory_s.numpy()[changed], axis=1), 1.0, rtol=1e-5)


def test_a_resumed_crd_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, capsys):
    """Killed after epoch 1 of 2 and resumed: every checkpointed value (the memory, Z and the sampler's counter
    included) equals the uninterrupted run's."""
    from tests.helpers import train_in_process

    teacher = tmp_path / "teacher"
    train_in_process(teacher, "--epochs=1", "--arch=resnet8")
    flags_ = ("--epochs=2", "--arch=resnet8", "--distill=crd", f"--teacher={teacher}", "--distill_args=negatives=64")
    straight, killed, _ = kill_and_resume(tmp_path, flags_, 1, capsys)
    prefix_a, a = checkpoint_values(straight)
    prefix_b, b = checkpoint_values(killed)
    assert prefix_a.endswith("epoch-2") and prefix_b.endswith("epoch-2") and a.keys() == b.keys()
    assert any("crd_memory" in k for k in a) and any("crd_state" in k for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
