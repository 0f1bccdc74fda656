"""MLKD against a NumPy transcription of the authors' `KD_ours.forward_train` (Jin-Ying/Multi-Level-Logit-
Distillation `mdistiller/distillers/KD_ours.py`), its median as `np.percentile(·, 50)`, and a short run on real
CIFAR-10 with the strong view the data adds beside each batch."""

import numpy as np
import pytest
import tensorflow as tf

from iep.baselines.mlkd import median, mlkd_terms
from iep.methods import build_distiller

RNG = np.random.default_rng(23)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kd(s, t, temperature):
    """`kd_loss` (reduce=True): T² · batch mean of Σ_c p_t (log p_t − log p_s)."""
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    return temperature**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))


def _cc(s, t, temperature):
    p_s, p_t = _softmax(s / temperature), _softmax(t / temperature)
    return np.sum((p_t.T @ p_t - p_s.T @ p_s) ** 2) / s.shape[1]


def _bc(s, t, temperature):
    p_s, p_t = _softmax(s / temperature), _softmax(t / temperature)
    return np.sum((p_t @ p_t.T - p_s @ p_s.T) ** 2) / s.shape[0]


def _np_forward_train(sw, sg, tw, tg, temperature=4.0, weight=0.9):
    """`forward_train`'s `loss_kd`, `loss_cc`, `loss_bc`, term by term as the file writes them: a reduced (scalar)
    loss times the boolean mask, then `.mean()`."""
    pred_teacher_weak = _softmax(tw)
    confidence = pred_teacher_weak.max(axis=1)
    mask = confidence <= np.percentile(confidence.flatten(), 50)
    class_confidence = pred_teacher_weak.sum(axis=0)
    class_mask = class_confidence <= np.percentile(class_confidence.flatten(), 50)
    ts = (temperature, 3.0, 5.0, 2.0, 6.0)
    kd_weak = sum(weight * np.mean(_kd(sw, tw, t) * mask) for t in ts)
    kd_strong = (
        weight * _kd(sg, tg, ts[0])
        + weight * _kd(sg, tg, 3.0)
        + weight * _kd(sg, tg, 5.0)
        + weight * _kd(sw, tw, 2.0)
        + weight * _kd(sw, tw, 6.0)
    )
    cc_weak = sum(weight * np.mean(_cc(sw, tw, t) * class_mask) for t in ts)
    bc_weak = sum(weight * np.mean(_bc(sw, tw, t) * mask) for t in ts)
    return {"kd": kd_weak + kd_strong, "cc": cc_weak, "bc": bc_weak}


@pytest.mark.parametrize("size", [1, 2, 5, 8, 11])
def test_median_is_numpys_percentile_50(size):
    values = RNG.normal(size=size).astype(np.float32)
    np.testing.assert_allclose(float(median(values)), np.percentile(values, 50), rtol=1e-6)


@pytest.mark.parametrize("batch, classes", [(8, 10), (7, 5)])
def test_terms_match_the_authors_forward_train(batch, classes):
    sw, sg, tw, tg = (RNG.normal(scale=3.0, size=(batch, classes)) for _ in range(4))
    expected = _np_forward_train(sw, sg, tw, tg)
    ours = mlkd_terms(*(tf.constant(x, tf.float32) for x in (sw, sg, tw, tg)), temperature=4.0, weight=0.9)
    assert set(ours) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(float(ours[name]), value, rtol=2e-5, err_msg=name)


def test_the_masks_scale_by_the_share_at_or_below_the_median():
    """Ties at the median all count (`le`): with every confidence equal the masks keep the whole batch."""
    logits = tf.zeros([6, 4])
    student = tf.constant(RNG.normal(size=(6, 4)), tf.float32)
    masked = mlkd_terms(student, student, logits, logits, 4.0, 1.0)
    ts = (4.0, 3.0, 5.0, 2.0, 6.0)
    s, t = student.numpy(), logits.numpy()
    np.testing.assert_allclose(float(masked["bc"]), sum(_bc(s, t, x) for x in ts), rtol=2e-5)
    np.testing.assert_allclose(float(masked["cc"]), sum(_cc(s, t, x) for x in ts), rtol=2e-5)


def test_mlkd_trains_on_real_cifar10_with_the_strong_view(cifar10_subset, tmp_path):
    """One epoch on 500 real images, the strong view beside each batch: every term finite, the student moved,
    and the strong cross-entropy at the 0.1 weight the code gives it."""
    from iep.engine.trainer import TrainConfig, Trainer
    from tests.helpers import frozen_teacher_and_student

    teacher, student = frozen_teacher_and_student(cifar10_subset, "wrn-10-2", "wrn-10-1")
    mlkd = build_distiller("mlkd", teacher, student)
    assert mlkd.batch_extras == ("strong_view",) and mlkd.cross_entropy_weight == pytest.approx(0.1)
    before = [v.numpy().copy() for v in student.model.trainable_variables]
    config = TrainConfig(epochs=1, batch_size=64, progress=False, export=False, lr_schedule="constant", lr=0.02)
    trainer = Trainer(student, cifar10_subset, config, str(tmp_path), mlkd)
    trainer.evaluate = lambda split=None: 0.0
    record = trainer._main_epoch(0, tf.summary.create_noop_writer())
    for name in ("ce_strong", "kd", "cc", "bc"):
        assert np.isfinite(record[f"loss/{name}"]) and record[f"loss/{name}"] > 0, name
    assert 0.1 * np.log(10) * 0.5 < record["loss/ce_strong"] < 0.1 * np.log(10) * 3
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, student.model.trainable_variables, strict=True))
