"""ReviewKD against a NumPy transcription of the authors' `CIFAR-100/model/reviewkd.py` (ABF, ReviewKD.forward,
hcl) and train.py's warm-up, with torch's nearest interpolation and adaptive average pooling written out."""

import math

import numpy as np
import pytest
import tensorflow as tf

from iep.baselines.reviewkd import adaptive_avg_pool, hcl_loss, nearest_resize
from iep.methods import build_distiller
from iep.nets import build_network

RNG = np.random.default_rng(21)


def _np_nearest(x, size):
    """torch `F.interpolate(mode="nearest")`: src = floor(dst · scale), scale = in / out."""
    h, w = x.shape[1:3]
    rows = [min(int(math.floor(i * (h / size[0]))), h - 1) for i in range(size[0])]
    cols = [min(int(math.floor(j * (w / size[1]))), w - 1) for j in range(size[1])]
    return x[:, rows][:, :, cols]


def _np_adaptive_pool(x, size):
    """torch `adaptive_avg_pool2d`: bin i spans [floor(i·L/s), ceil((i+1)·L/s))."""
    h, w = x.shape[1:3]
    out = np.zeros((x.shape[0], size, size, x.shape[3]))
    for i in range(size):
        for j in range(size):
            r0, r1 = math.floor(i * h / size), math.ceil((i + 1) * h / size)
            c0, c1 = math.floor(j * w / size), math.ceil((j + 1) * w / size)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


def _np_hcl(fstudent, fteacher):
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher, strict=True):
        h = fs.shape[1]
        loss, cnt, tot = np.mean((fs - ft) ** 2), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            cnt /= 2.0
            loss += np.mean((_np_adaptive_pool(fs, size) - _np_adaptive_pool(ft, size)) ** 2) * cnt
            tot += cnt
        loss_all += loss / tot
    return loss_all


def _np_batch_norm(x, bn):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + 1e-5) * bn.gamma.numpy() + bn.beta.numpy()


def _np_conv(x, kernel):
    """'same' convolution, stride 1 (torch padding = k // 2)."""
    k = kernel.shape[0]
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    h, w = x.shape[1:3]
    return sum(padded[:, i : i + h, j : j + w] @ kernel[i, j] for i in range(k) for j in range(k))


def _np_abf(abf, x, y, out_size):
    x = _np_batch_norm(_np_conv(x, abf.conv1.kernel.numpy()), abf.bn1)
    if abf.att_conv is not None:
        y = _np_nearest(y, x.shape[1:3])
        z = np.concatenate([x, y], axis=-1) @ abf.att_conv.kernel.numpy()[0, 0] + abf.att_conv.bias.numpy()
        z = 1.0 / (1.0 + np.exp(-z))
        x = x * z[..., :1] + y * z[..., 1:]
    if x.shape[1:3] != tuple(out_size):
        x = _np_nearest(x, out_size)
    return _np_batch_norm(_np_conv(x, abf.conv2.kernel.numpy()), abf.bn2), x


@pytest.mark.parametrize("length, size", [(32, 16), (5, 8), (8, 3), (1, 8), (7, 7)])
def test_nearest_resize_is_torchs(length, size):
    x = RNG.normal(size=(2, length, length, 3)).astype(np.float32)
    np.testing.assert_array_equal(nearest_resize(tf.constant(x), (size, size)).numpy(), _np_nearest(x, (size, size)))


@pytest.mark.parametrize("length, size", [(8, 4), (8, 1), (7, 4), (5, 2), (3, 2)])
def test_adaptive_pool_is_torchs(length, size):
    x = RNG.normal(size=(2, length, length, 3)).astype(np.float32)
    np.testing.assert_allclose(adaptive_avg_pool(tf.constant(x), size).numpy(), _np_adaptive_pool(x, size),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_hcl_is_the_reference():
    """Levels of 32, 8, 2 and 1: all three pools, all three, the 1×1 only, none."""
    shapes = [(3, 32, 32, 4), (3, 8, 8, 6), (3, 2, 2, 5), (3, 1, 1, 7)]
    fs = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    ft = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    got = hcl_loss([tf.constant(a) for a in fs], [tf.constant(b) for b in ft])
    np.testing.assert_allclose(float(got), _np_hcl(fs, ft), rtol=1e-5)


def _pair(student_arch="wrn-10-1", teacher_arch="wrn-10-2"):
    teacher, student = build_network(teacher_arch, 10, name="t"), build_network(student_arch, 10, name="s")
    return teacher, student, build_distiller("reviewkd", teacher, student, epochs=12, seed=0)


def test_the_review_is_the_references_forward():
    """ReviewKD.forward on the student's levels, deepest first: each ABF as the reference computes it (BN in
    training mode), the teacher's widths at the outputs, mid = the student's last width."""
    teacher, student, reviewkd = _pair()
    images = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=2)
    outputs = student(images, training=True)
    levels = [m.numpy() for m in outputs["stage_outputs"]]
    levels.append(outputs["taps"][-1].numpy().mean(axis=(1, 2))[:, None, None, :])
    got = reviewkd.review([tf.constant(v) for v in levels])

    expected, residual = [None] * len(levels), None
    for i in reversed(range(len(levels))):
        expected[i], residual = _np_abf(reviewkd.abfs[i], levels[i], residual, reviewkd.out_sizes[i])
    teacher_widths = [s.shape[-1] for s in teacher.tap_specs] + [teacher.tap_specs[-1].shape[-1]]
    assert [g.shape[-1] for g in got] == teacher_widths
    assert reviewkd.abfs[0].conv1.filters == student.tap_specs[-1].shape[-1]
    assert [a.att_conv is None for a in reviewkd.abfs] == [False] * (len(levels) - 1) + [True]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e, rtol=2e-3, atol=2e-3)


def test_the_loss_warms_up_from_zero_as_train_py():
    """weight · min(1, epoch / warm-up) · hcl with epoch counted from 0: 20/240 of a 12-epoch run is 1 epoch."""
    teacher, student, reviewkd = _pair()
    images = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=3)
    outputs = student(images, training=True)
    labels = tf.zeros([4], tf.int32)
    values = [float(reviewkd.losses(images, labels, outputs, tf.constant(e))["reviewkd"]) for e in (0.0, 0.5, 1, 5)]
    assert values[0] == 0.0 and values[2] > 0
    np.testing.assert_allclose(values[1], 0.5 * values[2], rtol=1e-5)
    np.testing.assert_allclose(values[3], values[2], rtol=1e-5)
    teacher_levels = [tf.cast(t, tf.float32) for t in teacher(images, training=False)["preact_taps"]]
    teacher_levels.append(tf.reduce_mean(teacher(images, training=False)["taps"][-1], axis=[1, 2])[:, None, None])
    student_levels = [*outputs["stage_outputs"], tf.reduce_mean(outputs["taps"][-1], axis=[1, 2])[:, None, None]]
    hcl = float(hcl_loss(reviewkd.review(student_levels), teacher_levels))
    np.testing.assert_allclose(values[2], 5.0 * hcl, rtol=1e-4)


def test_the_gradient_reaches_the_student_and_every_abf():
    teacher, student, reviewkd = _pair()
    images = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=4)
    variables = [*student.model.trainable_variables, *reviewkd.trainable_variables]
    with tf.GradientTape() as tape:
        loss = reviewkd.losses(images, tf.zeros([4], tf.int32), student(images, training=True), tf.constant(3.0))
    grads = tape.gradient(loss["reviewkd"], variables)
    head = {id(v) for v in student.head.trainable_variables}  # the classifier is past every level
    missing = [v.path for v, g in zip(variables, grads, strict=True) if g is None and id(v) not in head]
    assert not missing
    assert all(np.isfinite(g.numpy()).all() for g in grads if g is not None)


def test_unpaired_levels_are_refused():
    """A two-point student against a three-point teacher: no one-to-one review."""
    import keras

    from iep import tap_model

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="b")(x)
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    student = tap_model(keras.Model(inputs, logits), taps=["a", "b"], trainable=True)
    with pytest.raises(ValueError, match="one to one: the teacher has 3 points, the student 2"):
        build_distiller("reviewkd", build_network("resnet8", 10), student, epochs=1)


def test_reviewkd_trains_on_real_cifar10(cifar10_subset, tmp_path):
    """One epoch on 500 real images from a frozen teacher: finite, positive loss, the ABFs trained."""
    from iep.engine.trainer import TrainConfig, Trainer
    from tests.helpers import frozen_teacher_and_student

    teacher, student = frozen_teacher_and_student(cifar10_subset, "wrn-10-2", "wrn-10-1")
    reviewkd = build_distiller("reviewkd", teacher, student, epochs=2, warmup_fraction=0.0, seed=0)
    before = [v.numpy().copy() for v in reviewkd.trainable_variables]
    config = TrainConfig(epochs=1, batch_size=100, progress=False, export=False, lr_schedule="constant", lr=0.05)
    trainer = Trainer(student, cifar10_subset, config, str(tmp_path), reviewkd)
    trainer.evaluate = lambda split=None: 0.0
    record = trainer._main_epoch(0, tf.summary.create_noop_writer())
    assert np.isfinite(record["loss/reviewkd"]) and record["loss/reviewkd"] > 0
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, reviewkd.trainable_variables, strict=True))


def test_the_teacher_runs_in_inference_mode_by_default_and_on_batch_statistics_as_the_authors_train_py():
    """mdistiller's port: teacher.eval(); the authors' train.py: BN on the batch's statistics. A preact level is
    a BN's output: with batch statistics each channel's mean over the batch is BN's β (0 at init)."""
    images = tf.random.uniform((8, 32, 32, 3), 0, 255, seed=5)
    means = {}
    for mode in ("eval", "train"):
        teacher, student = build_network("wrn-10-1", 10, name="t"), build_network("wrn-10-1", 10, name="s")
        teacher.model.trainable = False
        distiller = build_distiller("reviewkd", teacher, student, epochs=1, teacher_mode=mode)
        first = distiller.teacher_levels(images)[0].numpy()
        means[mode] = np.abs(first.mean(axis=(0, 1, 2))).max()
        assert not any(v is w for v in distiller.trainable_variables for w in teacher.model.variables)
    assert means["train"] < 1e-3 < means["eval"], means
    with pytest.raises(ValueError, match="teacher_mode for reviewkd must be one of"):
        build_distiller("reviewkd", teacher, student, epochs=1, teacher_mode="training")
