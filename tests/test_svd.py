import numpy as np
import pytest
import tensorflow as tf

from iep.op_utils.svd import sign_fix, truncated_svd


def _rng_matrix(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape))


@pytest.mark.parametrize("shape", [(3, 9, 4), (3, 4, 9), (2, 6, 6)])
def test_values_and_vectors_match_numpy_up_to_sign(shape):
    x = _rng_matrix(shape)
    s, u, v = truncated_svd(x, 3)
    ref_u, ref_s, ref_vt = np.linalg.svd(x.numpy(), full_matrices=False)
    np.testing.assert_allclose(s.numpy(), ref_s[:, :3], rtol=1e-10)
    for got, ref in ((u.numpy(), ref_u[..., :3]), (v.numpy(), np.swapaxes(ref_vt, 1, 2)[..., :3])):
        signs = np.sign(np.sum(got * ref, axis=1, keepdims=True))
        np.testing.assert_allclose(got, ref * signs, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(v.numpy(), axis=1), 1.0, rtol=1e-10)


def test_sign_fix_makes_largest_magnitude_entry_positive():
    x = _rng_matrix((4, 10, 5), seed=1)
    _, u, v = truncated_svd(x, 2)
    v = v.numpy()
    for b in range(4):
        for k in range(2):
            column = v[b, :, k]
            assert column.max() + column.min() >= 0
    # flipping the input's sign flips u (or v) but the fixed v stays the same
    _, _, v_neg = truncated_svd(-x, 2)
    np.testing.assert_allclose(np.abs(v_neg.numpy()), np.abs(v), atol=1e-10)
    np.testing.assert_allclose(sign_fix(tf.constant([[[-3.0], [1.0]]])).numpy(), [[[-1.0]]])


def test_feature_map_input_is_read_as_hw_by_d():
    fmap = _rng_matrix((2, 4, 3, 5), seed=2)
    s, u, v = truncated_svd(fmap, 1)
    assert (s.shape, u.shape, v.shape) == ((2, 1), (2, 12, 1), (2, 5, 1))
    ref = np.linalg.svd(fmap.numpy().reshape(2, 12, 5), compute_uv=False)
    np.testing.assert_allclose(s.numpy()[:, 0], ref[:, 0], rtol=1e-10)


@pytest.mark.parametrize("shape,n", [((2, 7, 4), 2), ((2, 4, 7), 2), ((1, 5, 5), 1), ((1, 6, 3), 3)])
def test_gradient_matches_finite_differences(shape, n):
    x = _rng_matrix(shape, seed=3)
    weights = [_rng_matrix(t.shape, seed=10 + i) for i, t in enumerate(truncated_svd(x, n))]

    def objective(x):
        return tf.add_n([tf.reduce_sum(o * w) for o, w in zip(truncated_svd(x, n), weights, strict=True)])

    theoretical, numerical = tf.test.compute_gradient(objective, [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


@pytest.mark.parametrize("matrix", ["rank_deficient", "zeros", "with_nan"])
def test_degenerate_inputs_give_finite_values_and_gradients(matrix):
    rng = np.random.default_rng(4)
    if matrix == "rank_deficient":
        x = np.outer(rng.normal(size=8), rng.normal(size=6))[None].repeat(2, 0)
    else:
        x = np.zeros((2, 8, 6))
    if matrix == "with_nan":
        x[0, 0, 0] = np.nan
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        s, u, v = truncated_svd(x, 3)
        total = tf.reduce_sum(s) + tf.reduce_sum(u) + tf.reduce_sum(v)
    grad = tape.gradient(total, x)
    for t in (s, u, v, grad):
        assert np.all(np.isfinite(t.numpy()))


def test_runs_in_tf_function_and_under_xla():
    x = _rng_matrix((2, 16, 8), seed=5)
    x32 = tf.cast(x, tf.float32)
    eager = truncated_svd(x32, 2)[0]

    @tf.function(jit_compile=True)
    def compiled(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            s, _, v = truncated_svd(x, 2)
            out = tf.reduce_sum(s) + tf.reduce_sum(v)
        return s, tape.gradient(out, x)

    s, grad = compiled(x32)
    np.testing.assert_allclose(s.numpy(), eager.numpy(), rtol=1e-4)
    assert np.all(np.isfinite(grad.numpy()))


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError, match="n must be in"):
        truncated_svd(tf.zeros((1, 3, 2)), 3)


def _reference_svd_gradient_numpy(x: np.ndarray, n: int, w: np.ndarray) -> np.ndarray:
    """KD_methods_with_TF nets/SVP.py `gradient_svd` ('Svd_'), transcribed line by line, for the objective
    Σ V_out ∘ w (V_out: the top-n right singular vectors, sign-fixed); the cotangent reaches it through the
    benchmark's `tf.nn.l2_normalize` of the sliced V."""
    grads = []
    for a, wb in zip(x, w, strict=True):
        u_full, s, vt = np.linalg.svd(a, full_matrices=False)
        v_full = vt.T
        k = s.shape[0]
        v_n = v_full[:, :n]
        sign = np.sign(v_n.max(0) + v_n.min(0))
        dv_n = wb * sign
        dv_n = dv_n - v_n * np.sum(v_n * dv_n, axis=0, keepdims=True)  # l2_normalize's backward, unit columns
        dv = np.concatenate([dv_n, np.zeros((v_full.shape[0], k - n))], axis=1)  # tf.slice's backward
        big_s = np.diag(s)
        eye = np.eye(k)
        with np.errstate(divide="ignore", invalid="ignore"):
            kmat = (1 - eye) / (s[:, None] ** 2 - s[None, :] ** 2 + eye)
        kt = np.where(np.isfinite(kmat.T), kmat.T, 0.0)

        def msym(m):
            return m + m.T

        u, v = u_full, v_full
        if v.shape[0] > u.shape[0]:  # left_grad
            u, v = v, u
            du = dv
            d = du @ np.diag(1 / (s + 1e-8))
            us = u @ big_s
            grad = (
                d @ v.T + u @ np.diag(np.diag(-u.T @ d)) @ v.T + 2 * (us @ msym(kt * (v.T @ -(v @ (d.T @ us))))) @ v.T
            )
            grad = grad.T
        else:  # right_grad
            us = u @ big_s
            grad = 2 * (us @ msym(kt * (v.T @ dv))) @ v.T
        grads.append(grad)
    return np.stack(grads)


@pytest.mark.parametrize("shape,n", [((2, 9, 4), 1), ((2, 9, 4), 3), ((2, 4, 9), 2), ((1, 6, 6), 4)])
def test_reference_gradient_matches_a_numpy_transcription_of_the_benchmark(shape, n):
    x = _rng_matrix(shape, seed=5)
    w = _rng_matrix((shape[0], shape[2], n), seed=6)
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, _, v = truncated_svd(x, n, gradient="reference")
        objective = tf.reduce_sum(v * w)
    got = tape.gradient(objective, x).numpy()
    np.testing.assert_allclose(got, _reference_svd_gradient_numpy(x.numpy(), n, w.numpy()), atol=1e-8)


@pytest.mark.parametrize("decomposition", ["eigh", "svd"])
def test_reference_gradient_is_twice_the_exact_one_for_tall_matrices(decomposition):
    """m >= n (every sensing point of a CIFAR WRN): the benchmark's right_grad is 2x the exact V̄ term."""
    x = _rng_matrix((3, 16, 6), seed=7)
    w = _rng_matrix((3, 6, 2), seed=8)

    def gradient(kind):
        with tf.GradientTape() as tape:
            tape.watch(x)
            objective = tf.reduce_sum(truncated_svd(x, 2, decomposition, gradient=kind)[2] * w)
        return tape.gradient(objective, x).numpy()

    exact = gradient("exact")
    assert np.abs(exact).max() > 1e-3
    np.testing.assert_allclose(gradient("reference"), 2.0 * exact, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="gradient must be one of"):
        truncated_svd(x, 1, gradient="approximate")
