import numpy as np
import tensorflow as tf

from iep.op_utils.clipping import clip_schedule, clipped_multitask_gradients
from iep.procedure.black_box import MultiHeadGraph
from iep.procedure.clipped import ClippedDistiller
from iep.procedure.losses import estimator_loss, kld, message_l1, module_l2
from iep.procedure.mpnn import MessagePassing
from iep.procedure.spca import StackedPCA, batch_pca, cosine_affinity, first_pca, plane_mapping, project_student


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_plane_mapping_matches_its_formula():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    center = np.ones((1, 8)) / np.sqrt(8)
    theta = np.arccos(np.sum(v * center, axis=1, keepdims=True))
    expected = (v + center) / np.cos(theta / 2) ** 2 - 2 * center
    np.testing.assert_allclose(plane_mapping(tf.constant(v)).numpy(), expected, rtol=1e-10)


def test_cosine_affinity():
    x = np.random.default_rng(1).normal(size=(4, 3))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(cosine_affinity(tf.constant(x)).numpy(), unit @ unit.T, rtol=1e-10)


def _principal_cosines(a, b):
    return np.linalg.svd(np.linalg.qr(a)[0].T @ np.linalg.qr(b)[0], compute_uv=False)


def test_ipca_converges_to_the_full_data_principal_subspace():
    rng = np.random.default_rng(2)
    dim, components = 16, 8
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    scales = np.concatenate([np.linspace(6, 3, components), np.full(dim - components, 0.3)])
    data = (rng.normal(size=(4096, dim)) * scales) @ basis.T + 5.0
    spca = StackedPCA("ipca")
    spca.build((None, 4, 4, dim))
    ema = np.zeros(dim)
    for _ in range(3):
        for batch in np.split(rng.permutation(data), 64):
            spca.ipca_update(tf.constant(batch, tf.float32))
            ema = 0.1 * ema + 0.9 * batch.mean(0)  # the code's rate-0.9 EMA, from a zero state
    centered = data - data.mean(0)
    truth = np.linalg.svd(centered, full_matrices=False)[2][:components].T
    cosines = _principal_cosines(spca.state_basis.numpy(), truth)
    assert cosines.min() > 0.99, cosines
    np.testing.assert_allclose(spca.state_mean.numpy(), ema, rtol=1e-4)
    assert np.all(np.diff(spca.state_singular_values.numpy()) <= 1e-3)  # descending


def test_ipca_state_survives_a_checkpoint_round_trip(tmp_path):
    spca = StackedPCA("ipca")
    spca.build((None, 2, 2, 6))
    spca.ipca_update(tf.random.normal((10, 6), seed=1))
    path = tf.train.Checkpoint(spca=spca).write(str(tmp_path / "ckpt"))
    restored = StackedPCA("ipca")
    restored.build((None, 2, 2, 6))
    tf.train.Checkpoint(spca=restored).read(path).assert_existing_objects_matched()
    for a, b in zip(spca.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(restored.state_basis.numpy()).sum() > 0


def test_pca_mode_equals_per_batch_pca():
    rng = np.random.default_rng(3)
    fmap = tf.constant(rng.normal(size=(12, 3, 3, 8)), tf.float32)
    out = StackedPCA("pca")(fmap)
    _, p = first_pca(fmap)
    p = p.numpy().astype(np.float64)
    mean = p.mean(0)
    vt = np.linalg.svd(p - mean, full_matrices=False)[2][:4].T
    vt *= np.sign(vt.max(0) + vt.min(0))
    np.testing.assert_allclose(out["mean"].numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["basis"].numpy(), vt, atol=2e-3)
    np.testing.assert_allclose(out["c"].numpy(), (p - mean) @ vt, atol=5e-3)
    m, s, b = batch_pca(tf.constant(p), 4)
    np.testing.assert_allclose(b.numpy(), vt, atol=1e-8)


def test_student_projection_of_the_teacher_map_recovers_the_teacher_pcs():
    fmap = tf.random.normal((6, 4, 4, 8), seed=4)
    spca = StackedPCA("pca")
    teacher = spca(fmap)
    student = project_student(fmap, teacher["u"], teacher["mean"], teacher["basis"])
    np.testing.assert_allclose(student.numpy(), teacher["c"].numpy(), atol=1e-4)


def test_mpnn_shapes_weight_sharing_and_bn_modes():
    x_from, x_to = tf.random.normal((5, 4), seed=5), tf.random.normal((5, 6), seed=6)
    one, three = MessagePassing(6, iterations=1), MessagePassing(6, iterations=3)
    readout, messages = three(x_from, x_to, training=True)
    one(x_from, x_to)
    assert readout.shape == (5, 5) and messages.shape == (5, 5, 18)
    assert len(three.weights) == len(one.weights)  # message/gate weights shared across iterations
    before = [w.numpy().copy() for w in three.non_trainable_weights]
    three(x_from, x_to, training=False)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, three.non_trainable_weights, strict=True))
    three(x_from, x_to, training=True)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, three.non_trainable_weights, strict=True))
    train_out = three(x_from, x_to, training=True)[0].numpy()
    assert not np.allclose(train_out, three(x_from, x_to, training=False)[0].numpy())


def test_black_box_shapes_and_head_drop():
    module = MultiHeadGraph(4, 6, seed=0)
    x_from, x_to = tf.random.normal((5, 4), seed=7), tf.random.normal((5, 6), seed=8)
    logits = module.attention(x_from, x_to)
    assert logits.shape == (7, 5, 5)
    estimate = module.estimate(x_from, logits, tf.random.normal((5, 5), seed=9), training=True)
    assert estimate.shape == (5, 6)
    np.testing.assert_allclose(np.linalg.norm(estimate.numpy(), axis=1), 1.0, rtol=1e-5)
    a = module.estimate(x_from, logits, tf.zeros((5, 5)), training=False).numpy()
    b = module.estimate(x_from, logits, tf.zeros((5, 5)), training=False).numpy()
    np.testing.assert_allclose(a, b)  # no head drop at inference
    c = module.estimate(x_from, logits, tf.zeros((5, 5)), training=True).numpy()
    assert not np.allclose(a, c)


def test_kld_l1_estimator_and_l2_against_numpy():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    px, py = _softmax(x), _softmax(y)
    np.testing.assert_allclose(kld(tf.constant(x), tf.constant(y)).numpy(), np.sum(px * np.log(px / py)), rtol=1e-10)
    ms, mt = rng.normal(size=(3, 3, 5)), rng.normal(size=(3, 3, 5))
    np.testing.assert_allclose(
        message_l1(tf.constant(ms), tf.constant(mt)).numpy(), np.abs(ms - mt).sum(-1).mean(), rtol=1e-10
    )
    t, e = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(
        estimator_loss(tf.constant(t), tf.constant(e)).numpy(), np.mean(1 - np.sum(t * e, -1)), rtol=1e-10
    )
    v = [tf.Variable(rng.normal(size=(2, 3))), tf.Variable(rng.normal(size=(4,)))]
    np.testing.assert_allclose(module_l2(v, 5e-4).numpy(), 5e-4 * sum(np.sum(w.numpy() ** 2) for w in v))


def test_clipped_gradient_caps_distillation_and_keeps_the_target():
    rng = np.random.default_rng(11)
    scale = clip_schedule(tf.constant(0.0))
    assert float(scale) == 0.5 and float(clip_schedule(tf.constant(40.0))) == 1.0
    for _ in range(20):
        target = [tf.constant(rng.normal(size=(3, 4)) * rng.uniform(0.01, 3)) for _ in range(3)]
        decay = [tf.constant(rng.normal(size=(3, 4)) * 1e-3) for _ in range(3)]
        distill = [tf.constant(rng.normal(size=(3, 4)) * rng.uniform(0.01, 10)) for _ in range(3)]
        combined = clipped_multitask_gradients(target, decay, distill, tf.constant(0.5, tf.float64))
        for g, t, w, d in zip(combined, target, decay, distill, strict=True):
            clipped = (g - t - w).numpy()
            cap = 0.5 * np.linalg.norm(t.numpy())
            assert np.linalg.norm(clipped) <= cap * (1 + 1e-9)
            np.testing.assert_allclose(
                clipped / max(np.linalg.norm(clipped), 1e-30), d.numpy() / np.linalg.norm(d.numpy()), atol=1e-9
            )  # direction kept
            if np.linalg.norm(d.numpy()) < cap:
                np.testing.assert_allclose(clipped, d.numpy(), atol=1e-12)
    stats = {}
    target, distill = [tf.constant([1.0, 0.0]), tf.constant([1.0])], [tf.constant([0.0, 4.0]), tf.constant([0.1])]
    clipped_multitask_gradients(target, [None, None], distill, tf.constant(0.5), stats=stats)
    # first distill gradient 4 -> cap 0.5; second 0.1 < cap 0.5 stays: ratio (0.5 + 0.1) / (4 + 0.1)
    np.testing.assert_allclose(float(stats["clip_ratio"]), 0.6 / 4.1, rtol=1e-6)
    assert float(stats["clipped_fraction"]) == 0.5
    only_distill = clipped_multitask_gradients([None], [None], [tf.constant([3.0, 4.0])], tf.constant(0.5))
    np.testing.assert_allclose(only_distill[0].numpy(), [3.0, 4.0])  # adapters: nothing to cap by
    zeros = clipped_multitask_gradients([tf.zeros(2)], [None], [tf.zeros(2)], tf.constant(0.5))
    assert np.all(np.isfinite(zeros[0].numpy()))


def test_unclipped_ablation_adds_the_raw_distillation_gradient():
    """--noiep_clip: g = ∇CE + ∇wd + ∇dist exactly; the clipped default caps the same ∇dist at ‖∇CE‖·σ(0)."""
    a, b, w = np.array([0.3, -0.4]), np.array([30.0, 40.0]), np.array([1.0, 2.0])
    variable = tf.Variable(w.astype(np.float32))

    def grads(distiller):
        with tf.GradientTape(persistent=True) as tape:
            task = tf.reduce_sum(variable * a.astype(np.float32))
            decay = 1e-3 * tf.reduce_sum(variable**2)
            distill = tf.reduce_sum(variable * b.astype(np.float32))
        (g,) = distiller.gradients(tape, task, decay, distill, [variable], tf.constant(0.0))
        return g.numpy(), float(distiller.step_metrics()["clip_ratio"])

    raw, ratio = grads(ClippedDistiller(None, clip=False))
    np.testing.assert_allclose(raw, a + 2e-3 * w + b, rtol=1e-6)
    assert ratio == 1.0
    clipped, ratio = grads(ClippedDistiller(None))
    np.testing.assert_allclose(clipped, a + 2e-3 * w + b * (0.5 * 0.5 / 50.0), rtol=1e-6)  # ‖a‖ = 0.5, ‖b‖ = 50
    np.testing.assert_allclose(ratio, 0.25 / 50.0, rtol=1e-6)
