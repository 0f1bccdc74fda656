import numpy as np
import pytest
import tensorflow as tf

from iep.core.clipped import ClippedDistiller
from iep.op_utils.clipping import clip_schedule, clipped_multitask_gradients
from iep.procedure.black_box import MultiHeadGraph
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


def test_per_term_clip_caps_each_distillation_term_on_its_own():
    """clip_terms=per_term (IEP's default): g = ∇CE + ∇wd + Σ_t clip(∇t, ‖∇CE‖·σ); clip_terms=sum (the base
    class's default, MHGD's) clips ∇(Σ_t t) once."""
    a, w = np.array([0.3, -0.4]), np.array([1.0, 2.0])  # ‖∇CE‖ = 0.5: cap 0.25 at σ(0) = 0.5
    b1, b2 = np.array([30.0, 40.0]), np.array([0.06, -0.08])  # ‖∇t1‖ = 50 (clipped), ‖∇t2‖ = 0.1 (kept)
    variable = tf.Variable(w.astype(np.float32))

    def grads(distiller):
        with tf.GradientTape(persistent=True) as tape:
            task = tf.reduce_sum(variable * a.astype(np.float32))
            decay = 1e-3 * tf.reduce_sum(variable**2)
            terms = {"t1": tf.reduce_sum(variable * b1.astype(np.float32)), "t2": tf.reduce_sum(variable * b2)}
            distill = tf.add_n(list(terms.values()))
        extra = {"terms": terms} if distiller.gradient_reads_terms else {}
        (g,) = distiller.gradients(tape, task, decay, distill, [variable], tf.constant(0.0), **extra)
        return g.numpy(), distiller.step_metrics()

    per_term, stats = grads(ClippedDistiller(None, clip_terms="per_term"))
    expected = a + 2e-3 * w + b1 * (0.25 / 50.0) + b2
    np.testing.assert_allclose(per_term, expected, rtol=1e-5)
    np.testing.assert_allclose(float(stats["clip_ratio"]), (0.25 + 0.1) / (50.0 + 0.1), rtol=1e-5)
    assert float(stats["clipped_fraction"]) == 0.5
    summed, _ = grads(ClippedDistiller(None))
    total = b1 + b2
    np.testing.assert_allclose(summed, a + 2e-3 * w + total * 0.25 / np.linalg.norm(total), rtol=1e-5)
    with pytest.raises(ValueError, match=r"clip_terms for none must be one of \('sum', 'per_term'\)"):
        ClippedDistiller(None, clip_terms="each")


def test_iep_takes_its_options_as_distill_args():
    """IEP's options are --distill_args like every method's (the --iep_* flags are aliases of the same names)."""
    from iep.methods import build_distiller
    from iep.nets import build_network

    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    options = {"clip_terms": "sum", "knowledge": "alteration+interim", "iterations": "3", "module_epochs": "2"}
    distiller = build_distiller("iep", teacher, student, overrides=options, main_steps=50, epochs=10)
    assert distiller.clip_terms == "sum" and not distiller.gradient_reads_terms
    assert distiller.knowledge == ("alteration", "interim") and distiller.iterations == 3
    assert distiller.pre_phase_steps == 10  # 2 passes of 5 steps
    bb = build_distiller("iep_bb", teacher, student, overrides={"module_steps": 7, "clip": False})
    assert bb.black_box and bb.pre_phase_steps == 7 and not bb.clip and bb.clip_terms == "per_term"
    for bad, message in (
        ({"clip_terms": "each"}, r"clip_terms for iep must be one of"),
        ({"iterations": "0"}, r"option iterations for iep must be >= 1"),
        ({"beta": "1"}, r"options \['beta'\] unknown for iep; it accepts"),
        ({"module_steps": "5", "module_epochs": "1"}, "both size iep's module phase"),
    ):
        with pytest.raises(ValueError, match=message):
            build_distiller("iep", teacher, student, overrides=bad, main_steps=50, epochs=10)


def test_the_training_step_clips_iep_bb_terms_one_by_one():
    """The step (`distillation_gradients`, the trainer's and model.fit's) passes each term to a per-term clip:
    its gradient equals ∇CE + ∇wd + Σ_t clip(∇t, ‖∇CE‖·σ(0)) computed term by term here."""
    from iep.engine.trainer import distillation_gradients
    from iep.methods import build_distiller
    from iep.nets import build_network
    from iep.op_utils import decayed_variables, l2_penalty

    tf.keras.utils.set_random_seed(0)
    teacher, student = build_network("wrn-10-1", 10, dropout=0.0), build_network("wrn-10-1", 10, dropout=0.0)
    distiller = build_distiller("iep_bb", teacher, student, overrides={"clip_terms": "per_term", "module_steps": 1})
    iep_losses = distiller.losses
    distiller.losses = lambda *args: {k: 1e4 * v for k, v in iep_losses(*args).items()}  # so that some terms clip
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32))
    labels = tf.constant(np.arange(8) % 10, tf.int32)
    distiller.pre_phase_losses(images, labels)  # a module-phase step fills the IPCA state the terms read
    variables, decayed = student.model.trainable_variables, decayed_variables(student.model.trainable_variables)
    epoch = tf.Variable(0)
    grads, values = distillation_gradients(student, distiller, images, labels, variables, decayed, 5e-4, epoch)
    assert set(values) >= {"loss/alteration", "loss/interim", "loss/black_box"}
    with tf.GradientTape(persistent=True) as tape:
        outputs = student(images, training=True)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs["logits"]))
        decay = l2_penalty(decayed, 5e-4)
        terms = distiller.losses(images, labels, outputs, epoch)
    g_ce, g_wd = tape.gradient(ce, variables), tape.gradient(decay, variables)
    g_terms = [tape.gradient(t, variables) for t in terms.values()]
    clipped_some = False
    for i, got in enumerate(grads):
        expected = g_ce[i].numpy() + (0 if g_wd[i] is None else g_wd[i].numpy())
        cap = 0.5 * np.linalg.norm(g_ce[i].numpy())
        for g in g_terms:
            if g[i] is not None:
                raw = g[i].numpy()
                expected = expected + raw * min(1.0, cap / max(np.linalg.norm(raw), 1e-12))
                clipped_some |= np.linalg.norm(raw) > cap
        np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4, atol=1e-6)
    assert clipped_some and 0 < float(values["distill/clipped_fraction"]) < 1
