"""Truncated SVD through an eigendecomposition of the smaller Gram matrix, with a custom gradient.

Why not `tf.linalg.svd`: the method (and the author's KD-SVD work) computes
the SVD of per-sample feature maps F (HW×D) through `eigh` of FᵀF or FFᵀ,
whichever is smaller, recovers the other factor by a matmul and a
normalization, keeps the top-n triplets, and fixes their signs. `eigh` is
cheap for these sizes, runs on every device and compiles under XLA.

`decomposition="svd"` computes the same triplets with `tf.linalg.svd`
instead (KD-SVD's forward in the author's benchmark, `nets/SVP.py` `SVD`,
where KD-EID uses the eigendecomposition); the gradient is the same.

The gradient is the matrix-backprop formula for the thin SVD (Ionescu et al.
2015; in the form of Townsend 2016):

    Ā = U[(F∘(UᵀŪ−ŪᵀU))S + diag(s̄) + S(F∘(VᵀV̄−V̄ᵀV))]Vᵀ
        + (I−UUᵀ)ŪS⁻¹Vᵀ + US⁻¹V̄ᵀ(I−VVᵀ),    F_ij = 1/(s_j²−s_i²), F_ii = 0,

applied to the full thin factors with zero cotangents for the dropped
triplets. Entries made non-finite by repeated or zero singular values are
zeroed, as in the original code, so nothing non-finite reaches training.

`gradient="reference"` is instead the gradient the IEP author's benchmark
registers for its SVDs, KD_methods_with_TF `nets/SVP.py` at 9fb5414, `gradient_svd`
('Svd_', used by `SVD` and, through `SVD_grad_map`, by `SVD_eid`; lines 92-128). It reads
only V̄ (the s̄ and Ū of the triplets are dropped), after the benchmark's
`tf.nn.l2_normalize` of the sliced V (which removes V̄'s radial part):

    m ≥ n (`right_grad`, lines 121-123):  Ā = 2·U S msym(K ∘ VᵀV̄) Vᵀ,
    m < n (`left_grad`, lines 111-119):   the same formula on Aᵀ with V in U's place,

msym(X) = X + Xᵀ, K_ij = 1/(s_j² − s_i²) (0 on the diagonal). For m ≥ n this
is exactly twice the exact formula's V̄ term (msym(K∘X) = K∘(X − Xᵀ)), so the
KD-SVD family trains its student with twice the SVD gradient the exact
formula gives: "as the reference executes".
"""

from __future__ import annotations

import tensorflow as tf


def finite_or_zero(x: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def sign_fix(v: tf.Tensor) -> tf.Tensor:
    """Per column of v [..., n, k]: sign(max + min), so the largest-magnitude entry is positive (0 -> +1)."""
    sign = tf.sign(tf.reduce_max(v, axis=-2, keepdims=True) + tf.reduce_min(v, axis=-2, keepdims=True))
    return tf.where(tf.equal(sign, 0), tf.ones_like(sign), sign)


def _thin_svd_by_eigh(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Full thin SVD (k = min(m, n)) of x [B, m, n], descending, via eigh of the smaller Gram."""
    m, n = x.shape[-2], x.shape[-1]
    if m >= n:
        eigvals, v = tf.linalg.eigh(tf.matmul(x, x, transpose_a=True))
        eigvals, v = tf.reverse(eigvals, [-1]), tf.reverse(v, [-1])
        s = tf.sqrt(tf.maximum(eigvals, 0.0))
        u = finite_or_zero(tf.matmul(x, v) / s[:, None, :])
    else:
        eigvals, u = tf.linalg.eigh(tf.matmul(x, x, transpose_b=True))
        eigvals, u = tf.reverse(eigvals, [-1]), tf.reverse(u, [-1])
        s = tf.sqrt(tf.maximum(eigvals, 0.0))
        v = finite_or_zero(tf.matmul(x, u, transpose_a=True) / s[:, None, :])
    return s, u, v


def _svd_backward(s, u, v, ds, du, dv) -> tf.Tensor:
    """Ā of the thin SVD given cotangents of all k triplets (see the module docstring)."""
    k = s.shape[-1]
    s2 = tf.square(s)
    off_diagonal = 1.0 - tf.eye(k, dtype=s.dtype)
    f = finite_or_zero(off_diagonal / (s2[:, None, :] - s2[:, :, None]))
    ut_du = tf.matmul(u, du, transpose_a=True)
    vt_dv = tf.matmul(v, dv, transpose_a=True)
    j = f * (ut_du - tf.linalg.matrix_transpose(ut_du))
    kk = f * (vt_dv - tf.linalg.matrix_transpose(vt_dv))
    inner = j * s[:, None, :] + tf.linalg.diag(ds) + s[:, :, None] * kk
    grad = tf.matmul(tf.matmul(u, inner), v, transpose_b=True)
    s_inv = finite_or_zero(1.0 / s)
    left = (du - tf.matmul(u, ut_du)) * s_inv[:, None, :]
    grad += tf.matmul(left, v, transpose_b=True)
    right = (dv - tf.matmul(v, vt_dv)) * s_inv[:, None, :]
    grad += tf.matmul(u, right, transpose_b=True)
    return finite_or_zero(grad)


def _svd_backward_reference(s, u, v, dv) -> tf.Tensor:
    """Ā of the benchmark's 'Svd_' gradient (see the module docstring) from V̄ [B, n_cols, k] alone."""
    k = s.shape[-1]
    s2 = tf.square(s)
    eye = tf.eye(k, dtype=s.dtype)
    kt = finite_or_zero(tf.linalg.matrix_transpose((1.0 - eye) / (s2[:, :, None] - s2[:, None, :] + eye)))

    def msym(x):
        return x + tf.linalg.matrix_transpose(x)

    if u.shape[-2] >= v.shape[-2]:  # right_grad
        us = u * s[:, None, :]
        return finite_or_zero(
            tf.matmul(2.0 * tf.matmul(us, msym(kt * tf.matmul(v, dv, transpose_a=True))), v, transpose_b=True)
        )
    # left_grad: U and V (and their cotangents) swapped, the result transposed
    big_u, big_v = v, u
    d = dv / (s[:, None, :] + 1e-8)
    us = big_u * s[:, None, :]
    grad = tf.matmul(d, big_v, transpose_b=True)
    grad += tf.matmul(
        big_u * -tf.linalg.diag_part(tf.matmul(big_u, d, transpose_a=True))[:, None, :], big_v, transpose_b=True
    )
    inner = tf.matmul(big_v, -tf.matmul(big_v, tf.matmul(d, us, transpose_a=True)), transpose_a=True)
    grad += tf.matmul(2.0 * tf.matmul(us, msym(kt * inner)), big_v, transpose_b=True)
    return finite_or_zero(tf.linalg.matrix_transpose(grad))


DECOMPOSITIONS = ("eigh", "svd")
GRADIENTS = ("exact", "reference")


def _thin_svd(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Full thin SVD of x [B, m, n] by `tf.linalg.svd` (descending, as `_thin_svd_by_eigh`)."""
    return tf.linalg.svd(x, full_matrices=False)


def truncated_svd(
    x: tf.Tensor, n: int = 1, decomposition: str = "eigh", gradient: str = "exact"
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Top-n singular triplets of each matrix in x, sign-fixed.

    x: [B, m, n_cols] or a feature map [B, H, W, D] (read as [B, H·W, D]).
    Returns s [B, n] (descending), u [B, m, n], v [B, n_cols, n]; u and v are
    unit columns, multiplied by `sign_fix(v)`. Non-finite inputs are read as 0.
    `gradient`: "exact" (the thin-SVD formula) or "reference" (the benchmark's 'Svd_'; module docstring).
    """
    if x.shape.rank == 4:
        x = tf.reshape(x, [-1, x.shape[1] * x.shape[2], x.shape[3]])
    if x.shape.rank != 3:
        raise ValueError(f"truncated_svd expects [B, m, n] or [B, H, W, D], got shape {x.shape}")
    if decomposition not in DECOMPOSITIONS:
        raise ValueError(f"truncated_svd: decomposition must be one of {DECOMPOSITIONS}, got {decomposition!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"truncated_svd: gradient must be one of {GRADIENTS}, got {gradient!r}")
    thin_svd = _thin_svd_by_eigh if decomposition == "eigh" else _thin_svd
    k = min(x.shape[-2], x.shape[-1])
    if not 1 <= n <= k:
        raise ValueError(f"truncated_svd: n must be in [1, {k}] for matrices of shape {x.shape[1:]}, got {n}")

    @tf.custom_gradient
    def _op(matrix):
        matrix = finite_or_zero(matrix)
        s, u, v = thin_svd(matrix)
        sign = sign_fix(v[..., :n])

        def grad(ds, du, dv):
            pad = [[0, 0], [0, 0], [0, k - n]]
            if gradient == "reference":
                dv_n = dv * sign if dv is not None else tf.zeros_like(v[..., :n])
                # the benchmark's l2_normalize of the sliced V: its backward at unit columns drops the radial part
                dv_n -= v[..., :n] * tf.reduce_sum(v[..., :n] * dv_n, axis=-2, keepdims=True)
                return _svd_backward_reference(s, u, v, tf.pad(dv_n, pad))
            ds_full = tf.pad(ds, pad[1:]) if ds is not None else tf.zeros_like(s)
            du_full = tf.pad(du * sign, pad) if du is not None else tf.zeros_like(u)
            dv_full = tf.pad(dv * sign, pad) if dv is not None else tf.zeros_like(v)
            return _svd_backward(s, u, v, ds_full, du_full, dv_full)

        return (s[..., :n], u[..., :n] * sign, v[..., :n] * sign), grad

    return _op(x)
