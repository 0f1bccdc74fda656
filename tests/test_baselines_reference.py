"""SRM, RKD, AT, FSP, DML, KD-SVD and KD-EID against NumPy transcriptions of their reference code, and each
method's steps on the one loop (SRM's two Adam pre-phases train only their own variables)."""

import numpy as np
import pytest
import tensorflow as tf

from iep.baselines.feature_kd import rkd_loss
from iep.baselines.hints import flow_matrix, fsp_loss
from iep.baselines.mutual import mutual_kl
from iep.baselines.srm import SparseCoder, atom_count, dictionary_loss, init_losses, sparsity, top_k_mask
from iep.baselines.svd_kd import svd_kd_loss
from iep.engine.trainer import TrainConfig, Trainer
from iep.methods import build_distiller, method_options
from iep.nets import build_network
from tests.helpers import frozen_teacher_and_student

RNG = np.random.default_rng(7)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_top_k_mask(codes, k):
    kth = -np.sort(-codes, axis=-1)[..., k - 1 : k]
    return codes * (codes >= kth)


def test_srm_sizes_follow_their_configuration():
    # DenseNet-121 teacher points of their CIFAR-100 code (128, 256, 1024 channels), multipliers 2.0 and 0.02.
    assert [atom_count(c, 2.0) for c in (128, 256, 1024)] == [256, 512, 2048]
    assert [sparsity(c, 2.0, 0.02) for c in (128, 256, 1024)] == [5, 10, 40]
    assert sparsity(16, 2.0, 0.02) == 1  # int(0.64) = 0 → 1, as their `if sparsity == 0: sparsity = 1`


def test_srm_dictionary_and_init_losses_against_numpy():
    features = RNG.normal(size=(2, 3, 3, 4)).astype(np.float32)
    coder = SparseCoder(4, 6, seed=0)
    coder(tf.constant(features))
    d, b = coder.atoms.numpy(), coder.bias.numpy()
    bound = np.sqrt(6 / 6)
    assert np.all(np.abs(d) <= bound) and -1 <= b[0] <= 1 and b.shape == (1,)
    codes = _sigmoid(features @ d + b)
    np.testing.assert_allclose(coder(tf.constant(features)).numpy(), codes, rtol=1e-5)
    masked = _np_top_k_mask(codes, 2)
    assert np.all((masked > 0).sum(-1) == 2)
    np.testing.assert_allclose(top_k_mask(tf.constant(codes), 2).numpy(), masked, rtol=1e-6)
    expected = np.mean((features - masked @ d.T) ** 2)
    np.testing.assert_allclose(dictionary_loss(tf.constant(features), coder, 2).numpy(), expected, rtol=1e-5)

    scores = _sigmoid(RNG.normal(size=(2, 3, 3, 6))).astype(np.float32)
    global_label, local_label = masked.mean(axis=(1, 2)), masked.argmax(-1)
    global_pred = scores.mean(axis=(1, 2))
    bce = -np.mean(global_label * np.log(global_pred) + (1 - global_label) * np.log(1 - global_pred))
    log_p = _log_softmax(scores)  # their CrossEntropyLoss takes the sigmoid scores as logits
    ce = -np.mean(np.take_along_axis(log_p, local_label[..., None], -1))
    image, pixel = init_losses(tf.constant(scores), tf.constant(codes), 2)
    np.testing.assert_allclose([float(image), float(pixel)], [bce, ce], rtol=1e-5)


def _np_rkd(s, t, wd=25.0, wa=50.0):
    """RepDistiller's RKDLoss forward."""

    def pdist(e):
        d = np.sqrt(np.maximum(((e[:, None] - e[None]) ** 2).sum(-1), 1e-12))
        np.fill_diagonal(d, 0)
        return d

    def smooth_l1(a, b):
        x = np.abs(a - b)
        return np.mean(np.where(x < 1, 0.5 * x**2, x - 0.5))

    def angles(e):
        diff = e[None] - e[:, None]
        n = np.linalg.norm(diff, axis=2, keepdims=True)
        unit = diff / np.maximum(n, 1e-12)
        return np.einsum("ijd,ikd->ijk", unit, unit)

    ds, dt = pdist(s), pdist(t)
    ds, dt = ds / ds[ds > 0].mean(), dt / dt[dt > 0].mean()
    return wd * smooth_l1(ds, dt) + wa * smooth_l1(angles(s), angles(t))


def test_rkd_equals_the_authors_fixed_rkd_at_its_defaults():
    """KD_methods_with_TF `nets/Relation.py` RKD: the embeddings L2-normalized, then RepDistiller's potentials at
    weights 25 / 50."""
    assert method_options("rkd") == {
        "distance_weight": 25.0,
        "angle_weight": 50.0,
        "normalize": True,
        "distance_mean": "off_diagonal",
    }
    s, t = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5)) * 3
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (s, t)]
    got = rkd_loss(tf.constant(s, tf.float32), tf.constant(t, tf.float32), 25.0, 50.0).numpy()
    np.testing.assert_allclose(got, _np_rkd(*unit), rtol=1e-5)
    raw = rkd_loss(tf.constant(s, tf.float32), tf.constant(t, tf.float32), 25.0, 50.0, normalize=False).numpy()
    np.testing.assert_allclose(raw, _np_rkd(s, t), rtol=1e-5)  # RepDistiller's own, without the normalization
    assert abs(got - raw) > 1e-3


def _np_rkd_tf1(s, t, wd=100.0, wa=200.0):
    """KD_methods_with_TF nets/Relation.py RKD, transcribed: L2-normalized inputs; the distance mean of lines
    22-23 (sum over every entry / count of entries > 0: the diagonal's √1e-12 counts), no zeroed diagonal."""
    s, t = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (s, t))

    def potential(x):
        sq = (x**2).sum(-1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 1e-12))
        return d / (d.sum() / (d > 0).sum() + 1e-8)

    def huber(a, b):
        x = np.abs(a - b)
        return np.mean(np.where(x <= 1, x**2 / 2, x - 0.5))

    def angles(x):
        e = x[None, :, :] - x[:, None, :]
        e = e / np.maximum(np.linalg.norm(e, axis=2, keepdims=True), 1e-12)
        return np.einsum("ijd,ikd->ijk", e, e)

    return wd * huber(potential(s), potential(t)) + wa * huber(angles(s), angles(t))


def test_rkd_offers_the_tf1_benchmarks_distance_mean():
    s, t = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5)) * 3
    args = (tf.constant(s, tf.float32), tf.constant(t, tf.float32), 100.0, 200.0)
    got = rkd_loss(*args, distance_mean="all").numpy()
    np.testing.assert_allclose(got, _np_rkd_tf1(s, t), rtol=1e-4)  # float32 sums
    assert abs(got - rkd_loss(*args).numpy()) > 1e-6  # the means differ by (B−1)/B and the diagonal
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    assert build_distiller("rkd", teacher, student, overrides={"distance_mean": "all"}).distance_mean == "all"
    with pytest.raises(ValueError, match=r"distance_mean for rkd must be one of \('off_diagonal', 'all'\)"):
        build_distiller("rkd", teacher, student, overrides={"distance_mean": "diag"})


def test_at_reads_the_raw_group_outputs():
    network = build_network("wrn-16-1", 10)
    images = tf.random.uniform((2, 32, 32, 3), 0, 255, seed=0)
    outputs = network(images)
    raw = [network.model.get_layer(n).output for n in ("stage1_block1_add", "stage2_block1_add", "stage3_block1_add")]
    import keras

    expected = keras.Model(network.model.input, raw)(images)
    for got, want in zip(outputs["stage_outputs"], expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert float(tf.reduce_min(outputs["stage_outputs"][0])) < 0  # before any ReLU


def test_fsp_against_numpy():
    maps = [RNG.normal(size=(2, 4, 4, 3)), RNG.normal(size=(2, 2, 2, 5)), RNG.normal(size=(2, 2, 2, 5))]
    teacher = [m + RNG.normal(size=m.shape) for m in maps]

    def gram(top, bot):
        if top.shape[1] > bot.shape[1]:  # 2×2 max pooling, stride 2
            top = top.reshape(top.shape[0], top.shape[1] // 2, 2, top.shape[2] // 2, 2, -1).max(axis=(2, 4))
        hw = bot.shape[1] * bot.shape[2]
        return np.einsum("bpi,bpj->bij", top.reshape(len(top), hw, -1), bot.reshape(len(bot), hw, -1)) / hw

    np.testing.assert_allclose(flow_matrix(tf.constant(maps[0]), tf.constant(maps[1])).numpy(), gram(maps[0], maps[1]))
    expected = 1e-3 * sum(
        np.mean(((gram(teacher[i], teacher[i + 1]) - gram(maps[i], maps[i + 1])) ** 2).sum((1, 2)) / 2)
        for i in range(2)
    )
    got = fsp_loss([tf.constant(m) for m in maps], [tf.constant(m) for m in teacher], 1e-3).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_dml_mutual_term_against_numpy():
    a, b = RNG.normal(size=(5, 4)) * 2, RNG.normal(size=(5, 4))
    la, lb = _log_softmax(a), _log_softmax(b)
    expected = (np.mean((np.exp(la) * (la - lb)).sum(-1)) + np.mean((np.exp(lb) * (lb - la)).sum(-1))) / 2
    np.testing.assert_allclose(mutual_kl(tf.constant(a), tf.constant(b)).numpy(), expected, rtol=1e-10)


def _np_aligned(s_map, t_map, k_student=4):
    """KD_methods_with_TF `SVP.SVD*(tfm, 1)`, `SVP.SVD*(sfm, K+3)` and `SVP.Align_rsv(V_S, V_T)` (the student
    vector of largest |cosine| with the teacher's, times that cosine's sign), by NumPy's SVD: (v_s, v_t), [B, D]."""

    def top(x, k):
        b, h, w, d = x.shape
        _, s, vt = np.linalg.svd(x.reshape(b, h * w, d), full_matrices=False)
        v = np.swapaxes(vt[:, :k, :], 1, 2)  # [B, D, k]; s normalized over K = 1 is 1
        return v * np.sign(v.max(1, keepdims=True) + v.min(1, keepdims=True))  # op_utils.svd's sign rule

    v_t, v_s = top(t_map, 1)[..., 0], top(s_map, k_student)
    cosine = np.einsum("bdk,bd->bk", v_s, v_t)
    best = np.abs(cosine).argmax(-1)
    rows = np.arange(len(best))
    return v_s[rows, :, best] * np.sign(cosine[rows, best])[:, None], v_t


def _np_svd_kd(student_maps, teacher_maps, k_student=4):
    """KD_methods_with_TF Shared.KD_SVD: the RBF relations of the aligned vectors between consecutive points."""
    loss, previous = 0.0, None
    for s_map, t_map in zip(student_maps, teacher_maps, strict=True):
        v_s, v_t = _np_aligned(s_map, t_map, k_student)
        if previous is not None:
            r_s = np.exp(-((v_s[:, :, None] - previous[0][:, None, :]) ** 2) / 8)
            r_t = np.exp(-((v_t[:, :, None] - previous[1][:, None, :]) ** 2) / 8)
            loss += ((r_s - r_t) ** 2).sum()
        previous = (v_s, v_t)
    return loss


@pytest.mark.parametrize("decomposition", ["svd", "eigh"])
def test_kd_svd_and_kd_eid_against_numpy(decomposition):
    assert method_options("kd_svd") == {"components": 1, "student_components": 4, "svd_gradient": "reference"}
    shapes = [(3, 6, 6, 4), (3, 3, 3, 5), (3, 3, 3, 5)]
    student = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    teacher = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    got = svd_kd_loss([tf.constant(x) for x in student], [tf.constant(x) for x in teacher], 1, decomposition, 4)
    np.testing.assert_allclose(got.numpy(), _np_svd_kd(student, teacher), rtol=1e-3)
    # With one student vector the loss is a different number: the K+3 candidates change which vector is matched.
    one = svd_kd_loss([tf.constant(x) for x in student], [tf.constant(x) for x in teacher], 1, decomposition, 1)
    np.testing.assert_allclose(one.numpy(), _np_svd_kd(student, teacher, k_student=1), rtol=1e-3)
    assert abs(float(one) - float(got)) > 1e-3
    variables = [tf.Variable(x) for x in student]
    with tf.GradientTape() as tape:
        loss = svd_kd_loss(variables, [tf.constant(x) for x in teacher], 1, decomposition, 4)
    grads = tape.gradient(loss, variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads) and any(np.abs(g.numpy()).max() > 0 for g in grads)


def test_kd_svd_family_trains_with_the_benchmarks_svd_gradient():
    """KD_methods_with_TF nets/SVP.py: 'Svd_' is twice the exact gradient on tall maps; SVD_eid passes none
    where 2/3 < H·W/D < 3/2 (a stop-gradient tf.svd), SVD (KD-SVD) does."""
    assert method_options("mhgd")["svd_gradient"] == "reference" == method_options("kd_eid")["svd_gradient"]
    shapes = [(3, 6, 6, 4), (3, 3, 3, 8), (3, 3, 3, 5)]  # H·W/D = 9, 1.125 (the band), 1.8
    student = [tf.Variable(RNG.normal(size=s).astype(np.float64)) for s in shapes]
    teacher = [tf.constant(RNG.normal(size=s).astype(np.float64)) for s in shapes]

    def gradients(decomposition, svd_gradient):
        with tf.GradientTape() as tape:
            loss = svd_kd_loss(student, teacher, 1, decomposition, 4, svd_gradient)
        grads = tape.gradient(loss, student)
        return [np.zeros(v.shape) if g is None else g.numpy() for v, g in zip(student, grads, strict=True)]

    for decomposition in ("svd", "eigh"):
        exact, reference = gradients(decomposition, "exact"), gradients(decomposition, "reference")
        assert all(np.abs(g).max() > 1e-6 for g in exact)
        for i, (e, r) in enumerate(zip(exact, reference, strict=True)):
            if decomposition == "eigh" and i == 1:  # SVD_eid's band: no gradient reaches the student
                assert not np.any(r)
            else:
                np.testing.assert_allclose(r, 2.0 * e, rtol=1e-6, atol=1e-12)
    teacher_net, student_net = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    for method in ("kd_svd", "kd_eid", "mhgd"):
        with pytest.raises(ValueError, match=rf"svd_gradient for {method} must be one of \('exact', 'reference'\)"):
            build_distiller(method, teacher_net, student_net, overrides={"svd_gradient": "twice"}, main_steps=10,
                            epochs=1)  # fmt: skip
    exact = build_distiller("kd_eid", teacher_net, student_net, overrides={"svd_gradient": "exact"})
    assert exact.svd_gradient == "exact"


def test_mhgd_heads_read_kd_svd_vectors_as_relation_py_does():
    """KD_methods_with_TF `nets/Relation.py` MHGD: per point the teacher's first right singular vector and the
    student's best-aligned of 4 (SVD_eid), [B, D]; the graph loss is KL(softmax(tanh G_S) ‖ softmax(tanh G_T))
    of the heads' attention between consecutive points, summed."""
    from iep.procedure.losses import kld

    assert method_options("mhgd")["inputs"] == "svd"
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    distiller = build_distiller("mhgd", teacher, student, overrides={"pre_phase_steps": "1"}, seed=0)
    assert distiller.trainable_variables == []  # no adapters: the vectors live in the points' own width
    images = tf.constant(RNG.normal(size=(4, 32, 32, 3)).astype(np.float32))
    s_maps = student(images, training=False)["taps"]
    t_maps = teacher(images, training=False)["taps"]
    teacher_c, student_c = distiller._compressed(images, s_maps)
    expected = [
        _np_aligned(s.numpy().astype(np.float64), t.numpy().astype(np.float64))
        for s, t in zip(s_maps, t_maps, strict=True)
    ]
    for got_s, got_t, (v_s, v_t) in zip(student_c, teacher_c, expected, strict=True):
        np.testing.assert_allclose(got_t.numpy(), v_t, atol=2e-3)
        np.testing.assert_allclose(got_s.numpy(), v_s, atol=2e-3)
    graph = 0.0
    for i, module in enumerate(distiller.heads, start=1):
        g_t = module.attention(tf.constant(expected[i - 1][1], tf.float32), tf.constant(expected[i][1], tf.float32))
        g_s = module.attention(tf.constant(expected[i - 1][0], tf.float32), tf.constant(expected[i][0], tf.float32))
        graph += float(kld(tf.tanh(g_s), tf.tanh(g_t)))
    got = distiller.losses(images, None, {"taps": s_maps}, 0)["graph"]
    np.testing.assert_allclose(float(got), graph, rtol=1e-2)  # the vectors agree to ~1e-4 (float32 eigh)
    # The pre-phase estimator rebuilds the teacher's next vector from the previous one: same vectors.
    assert np.isfinite(float(distiller.pre_phase_losses(images, None)["estimator"]))
    # Widths differ: the alignment cannot compare the vectors; the stacked-PCA variant can.
    wide = build_network("wrn-10-2", 10)
    with pytest.raises(ValueError, match="mhgd aligns singular vectors: it needs equal widths"):
        build_distiller("mhgd", teacher, wide, overrides={"pre_phase_steps": "1"})
    spca = build_distiller("mhgd", teacher, wide, overrides={"pre_phase_steps": "1", "inputs": "spca"})
    assert spca.trainable_variables  # its adapters
    with pytest.raises(ValueError, match=r"inputs for mhgd must be one of \('svd', 'spca'\), got 'pca'"):
        build_distiller("mhgd", teacher, student, overrides={"pre_phase_steps": "1", "inputs": "pca"})


def test_srm_stages_train_their_own_variables_on_real_cifar10(cifar10_subset, tmp_path):
    data = cifar10_subset
    teacher, student = frozen_teacher_and_student(data, "wrn-10-1", "wrn-10-1")
    distiller = build_distiller(
        "srm", teacher, student, main_steps=10, epochs=2, seed=0, overrides={"dictionary_epochs": 2}
    )
    assert (distiller.dictionary_steps, distiller.init_steps) == (10, 8)  # 2 passes of 5 steps; 0.8× the main phase
    distiller = build_distiller("srm", teacher, student, main_steps=10, epochs=2, seed=0)
    assert distiller.dictionary_steps == 500  # the authors' 100 cluster epochs: passes (CLOCK_RULE)
    distiller = build_distiller(
        "srm", teacher, student, main_steps=10, epochs=1, seed=0, overrides={"dictionary_epochs": "0.5"}
    )
    assert (distiller.dictionary_steps, distiller.init_steps) == (5, 8)
    phases = distiller.pre_phases()
    assert [p.name for p in phases] == ["srm_dictionary", "srm_init"] and {p.optimizer for p in phases} == {"adam"}
    config = TrainConfig(epochs=1, batch_size=100, progress=False, export=False, lr_schedule="constant", lr=0.05)
    trainer = Trainer(student, data, config, str(tmp_path), distiller)
    trainer.evaluate = lambda split=None: 0.0
    writer = tf.summary.create_noop_writer()
    assert trainer.pre_phase_epochs == 3  # 5 steps: one pass of 5 steps; 8 steps: two passes (5 + 3)
    snap = lambda vs: [v.numpy().copy() for v in vs]  # noqa: E731
    changed = lambda before, vs: [not np.array_equal(a, v.numpy()) for a, v in zip(before, vs, strict=True)]  # noqa: E731
    dictionaries = [v for c in distiller.dictionaries for v in c.trainable_variables]
    predictors = [v for c in distiller.predictors for v in c.trainable_variables]
    d0, p0, s0, t0 = snap(dictionaries), snap(predictors), snap(student.model.weights), snap(teacher.model.weights)
    trainer._pre_phase_epoch(0, writer)
    assert all(changed(d0, dictionaries)) and not any(changed(p0, predictors))
    assert not any(changed(s0, student.model.weights)) and not any(changed(t0, teacher.model.weights))
    assert int(trainer._stages[0].optimizer.iterations) == 5
    d1 = snap(dictionaries)
    trainer._pre_phase_epoch(1, writer)
    trainer._pre_phase_epoch(2, writer)
    assert int(trainer._stages[1].optimizer.iterations) == 8
    assert not any(changed(d1, dictionaries)) and all(changed(p0, predictors))
    assert any(changed(s0, student.model.weights)) and not any(changed(t0, teacher.model.weights))
    head = snap(student.model.get_layer("logits").weights)
    assert not any(changed(head, student.model.get_layer("logits").weights))
    record = trainer._main_epoch(0, writer)
    assert np.isfinite(record["loss/kd"]) and record["loss/kd"] > 0
    expected = 0.5 * record["loss/cross_entropy"] + record["loss/weight_decay"] + record["loss/kd"]
    assert record["loss/total"] == pytest.approx(expected, rel=1e-5)


def test_adam_stage_schedule_decays_at_the_stated_fractions(cifar10_subset, tmp_path):
    teacher, student = frozen_teacher_and_student(cifar10_subset, "wrn-10-1", "wrn-10-1")
    distiller = build_distiller(
        "srm", teacher, student, main_steps=100, epochs=1, seed=0, overrides={"dictionary_epochs": "0.5"}
    )  # dictionary: 50 steps
    config = TrainConfig(epochs=1, batch_size=100, progress=False, export=False)
    stage = Trainer(student, cifar10_subset, config, str(tmp_path), distiller)._stages[0]
    schedule = stage.learning_rate
    lrs = [float(schedule(step)) for step in (0, 4, 5, 34, 35, 49)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)


@pytest.mark.parametrize("method", ["fsp", "dml", "kd_svd", "kd_eid"])
def test_table7_methods_train_on_real_cifar10(cifar10_subset, tmp_path, method):
    data = cifar10_subset
    teacher, student = frozen_teacher_and_student(data, "wrn-10-1", "wrn-10-1")
    teacher_before = [w.numpy().copy() for w in teacher.model.weights]
    overrides = {"pre_phase_steps": "3"} if method == "fsp" else {}
    distiller = build_distiller(method, teacher, student, overrides=overrides, seed=0, main_steps=5, epochs=1)
    config = TrainConfig(epochs=1, batch_size=100, progress=False, export=False, lr_schedule="constant", lr=0.05)
    trainer = Trainer(student, data, config, str(tmp_path), distiller)
    trainer.evaluate = lambda split=None: 0.0
    writer = tf.summary.create_noop_writer()
    if method == "fsp":
        body = [w.numpy().copy() for w in student.model.trainable_weights]
        trainer._pre_phase_epoch(0, writer)
        assert any(not np.array_equal(a, w.numpy()) for a, w in zip(body, student.model.trainable_weights, strict=True))
    extra_before = [v.numpy().copy() for v in distiller.trainable_variables]
    record = trainer._main_epoch(0, writer)
    for name in distiller.loss_names:
        assert np.isfinite(record[f"loss/{name}"]) and record[f"loss/{name}"] > 0, name
    parts = (
        record["loss/cross_entropy"]
        + record["loss/weight_decay"]
        + sum(record[f"loss/{n}"] for n in distiller.loss_names)
    )
    assert record["loss/total"] == pytest.approx(parts, rel=1e-5)
    if method == "dml":  # the peer trains from scratch beside the student; the teacher's weights are not used
        assert extra_before and all(
            not np.array_equal(a, v.numpy()) for a, v in zip(extra_before, distiller.trainable_variables, strict=True)
        )
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(teacher_before, teacher.model.weights, strict=True))


def test_table7_methods_refuse_unequal_widths():
    teacher, student = build_network("wrn-10-2", 10), build_network("wrn-10-1", 10)
    for method in ("fsp", "kd_svd", "kd_eid"):
        with pytest.raises(ValueError, match=method):
            build_distiller(method, teacher, student, main_steps=10, epochs=1)


def test_srm_killed_inside_its_second_stage_resumes_to_the_uninterrupted_state(tmp_path, capsys):
    """Dictionary = checkpoint 1, initialization = checkpoints 2-3, epochs = 4-5: kill after 2, resume."""
    import json

    from tests.helpers import checkpoint_values, kill_and_resume, train_in_process

    teacher = tmp_path / "teacher"
    train_in_process(teacher, "--epochs=1", "--arch=wrn-10-1")
    flags_ = (
        "--epochs=2",
        "--arch=wrn-10-1",
        "--distill=srm",
        f"--teacher={teacher}",
        "--distill_args=dictionary_epochs=1",
    )
    straight, killed, resumed = kill_and_resume(tmp_path, flags_, 2, capsys)
    assert "pre-phase passes done: 2/3" in resumed and "srm_init 2/2" in resumed
    assert "srm_dictionary" not in resumed  # the finished stage is not run again
    prefix_a, a = checkpoint_values(straight)
    prefix_b, b = checkpoint_values(killed)
    assert prefix_a.endswith("epoch-5") and prefix_b.endswith("epoch-5")
    # Both stages' Adam states are saved (variables are filed under the first path that reaches them).
    assert int(a["pre_phase_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 11  # 0.5 × 22 main steps
    assert int(a["srm_init_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 18  # 0.8 × 22
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    history = json.load(open(killed / "metrics.json"))["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_ab_has_a_connector_at_every_point_as_the_tf2_code():
    student = build_network("wrn-10-1", 10)
    equal = build_distiller("ab", build_network("wrn-10-1", 10), student, main_steps=10)
    assert all(c.project is not None and c.resize is None for c in equal.connectors)  # equal widths too
    wider = build_distiller("ab", build_network("wrn-10-2", 10), student, main_steps=10)
    assert all(c.project is not None for c in wider.connectors)


def test_ft_paraphraser_decays_every_variable_as_the_tf2_code():
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    distiller = build_distiller("ft", teacher, student, main_steps=10, epochs=1)
    images = tf.random.uniform((2, 32, 32, 3), 0, 255, seed=3)
    variables = distiller.pre_phase_variables
    assert any("gamma" in v.name or "bias" in v.name for v in variables)
    expected = 5e-4 * sum(0.5 * float(np.sum(v.numpy() ** 2)) for v in variables)
    got = float(distiller.pre_phase_losses(images, tf.constant([0, 1]))["weight_decay"])
    assert got == pytest.approx(expected, rel=1e-5)


def test_relation_methods_refuse_a_batch_too_small_and_nan_overrides():
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    rkd = build_distiller("rkd", teacher, student)
    rkd.check_batch_size(3)
    with pytest.raises(ValueError, match="^rkd relates the samples of a batch and needs at least 3"):
        rkd.check_batch_size(2)
    iep = build_distiller("iep", teacher, student, module_steps=1)
    with pytest.raises(ValueError, match="^iep .* at least 2 per replica"):
        iep.check_batch_size(1)
    build_distiller("kd", teacher, student).check_batch_size(1)  # per-sample methods take any batch
    with pytest.raises(ValueError, match="beta='nan' for at: expected a finite float"):
        build_distiller("at", teacher, student, overrides={"beta": "nan"})
