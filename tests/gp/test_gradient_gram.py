"""The lazy gradient-kernel operator against a brute-force joint covariance.

The reference builds the covariance of [f(X), grad f(X)] with [f(Y), grad f(Y)] from the
kernel's pair function alone: ``jax.jacfwd`` in x and in y for the cross blocks and the
off-diagonal block of ``jax.hessian`` in z = (x, y) for the gradient block, laid out
block-major (values first, then gradients point by point, as documented).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, modes_for, points_with_a_duplicate, sample_points, select
from references import assert_close, brute_joint_covariance

import kernelgrad as kg
from kernelgrad.gp.gradient_gp import gradient_kernel

twice = select(lambda c: c.twice_smooth_at_zero)


@pytest.mark.parametrize("case", twice)
def test_to_dense_matches_brute_force_for_every_twice_differentiable_kernel(case, rng):
    X, Y = points_with_a_duplicate(case, rng)
    ref = brute_joint_covariance(case.kernel, X, Y)
    assert np.all(np.isfinite(ref))
    for mode in modes_for(case):
        op = kg.gradient_gram(case.kernel, X, Y, mode=mode)
        d = X.shape[1]
        assert op.shape == (X.shape[0] * (d + 1), Y.shape[0] * (d + 1))
        dense = op.to_dense()
        assert isinstance(dense, np.ndarray) and dense.dtype == np.float64
        assert_close(dense, ref, np.float64, err_msg=f"mode={mode}")


#: Closed-form kernels whose tiled matvec is also checked in the AD modes. The AD tile is
#: one kernel-agnostic program (a JVP and a VJP of the pair call), so a single family, a
#: composite and the pair functions (AD only) cover it; every kernel's AD modes are checked
#: against the brute-force matrix above.
AD_TILED = {"rbf", "nested"}


@pytest.mark.parametrize("case", twice)
def test_matvec_matches_dense_product_across_tiles(case, rng):
    """Blocks of 8 rows and columns on 21 x 19 points: ragged, several tiles each way."""
    d = case.dim()
    X, Y = sample_points(rng, 21, d), sample_points(rng, 19, d)
    X[3] = Y[5]
    modes = modes_for(case) if case.id in AD_TILED or not case.closed else ["closed", "auto"]
    for mode in modes:
        op = kg.gradient_gram(case.kernel, X, Y, mode=mode, row_block=8, col_block=8)
        dense = op.to_dense()
        v = rng.normal(size=op.shape[1])
        V = rng.normal(size=(op.shape[1], 3))
        assert_close(op.matvec(v), dense @ v, err_msg=f"mode={mode}")
        assert_close(op @ V, dense @ V, err_msg=f"mode={mode}, 3 columns")


@pytest.mark.parametrize("case", select(lambda c: c.twice_smooth_at_zero and c.closed))
def test_the_cached_tile_s_products_match_the_brute_force_matrix(case, rng):
    """The products a CG solve runs, the tile's coefficients worked out once for all pairs:
    the joint one, and the same in two steps, as the Gauss-Seidel preconditioner runs it."""
    d = case.dim()
    X, Y = sample_points(rng, 21, d), sample_points(rng, 19, d)
    X[3] = Y[5]
    ref = brute_joint_covariance(case.kernel, X, Y)
    v = rng.normal(size=ref.shape[1])
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        cached = gradient_kernel.cached_tile(case.kernel, jnp.asarray(X), jnp.asarray(Y), 1 << 30)
        assert_close(np.asarray(cached.product(jnp.asarray(v))), ref @ v)
        # Split: ref[:21, 19:] is cov(f(X), grad f(Y)), ref[21:] cov(grad f(X), [f, grad f](Y)).
        from_gradients, gradient_rows = cached.split(jnp.asarray(v[19:].reshape(19, d)))
        assert_close(np.asarray(from_gradients), ref[:21, 19:] @ v[19:])
        u = rng.normal(size=19)  # any values' weights, given after the first step
        grads = np.asarray(gradient_rows(jnp.asarray(u)))
        assert grads.shape == (21, d)
        assert_close(grads.ravel(), ref[21:] @ np.concatenate([u, v[19:]]))

        # Under jit: XLA:CPU's fused kernels gave NaN for a split of zero gradient weights.
        def from_values(X, Y, u):
            return gradient_kernel.CachedTile(case.kernel, X, Y).gradients_from_values(u)

        alone = jax.jit(from_values)(jnp.asarray(X), jnp.asarray(Y), jnp.asarray(u))
        assert_close(np.asarray(alone).ravel(), ref[21:, :19] @ u)
        # One byte short of its arrays: declined.
        tile = case.kernel.tile(
            jnp, jnp.asarray(X), jnp.asarray(Y), jnp.asarray(X), jnp.asarray(Y), order=2
        )
        needed = 21 * 19 * 8 * gradient_kernel.coefficient_arrays(tile)
        assert (
            gradient_kernel.cached_tile(case.kernel, jnp.asarray(X), jnp.asarray(Y), needed - 1)
            is None
        )


@pytest.mark.parametrize("case", select(lambda c: not c.twice_smooth_at_zero))
def test_kernels_without_second_derivatives_are_refused(case):
    with pytest.raises(ValueError, match="not twice differentiable at r = 0"):
        kg.gradient_gram(case.kernel, np.zeros((2, case.dim())))


def test_layout_is_block_major_values_then_gradients(rng):
    """Rows: f(x_0..x_{n-1}), then d f / dx_ia at row n + i d + a (columns likewise)."""
    k = kg.RBF(variance=1.3, lengthscale=0.9)
    X, Y = sample_points(rng, 4, 3), sample_points(rng, 5, 3)
    dense = kg.gradient_gram(k, X, Y).to_dense()
    J = kg.jacobian(k, X, Y)  # (n, m, d): d k(x_i, y_j) / dx_ia
    H = kg.cross_hessian(k, X, Y)
    assert_close(dense[:4, :5], kg.gram(k, X, Y))
    i, j, a, b = 2, 3, 1, 2
    assert_close(dense[4 + i * 3 + a, j], J[i, j, a])
    assert_close(dense[4 + i * 3 + a, 5 + j * 3 + b], H[i, j, a, b])
    # d k / dy = -d k / dx for a stationary kernel.
    assert_close(dense[i, 5 + j * 3 + b], -J[i, j, b])


@pytest.mark.parametrize("case_id", ["rbf_ard", "matern52", "rq", "product_rbf_periodic"])
def test_training_covariance_is_symmetric_positive_semidefinite(case_id, rng):
    case = BY_ID[case_id]
    X = sample_points(rng, 8, case.dim())
    op = kg.gradient_gram(case.kernel, X)
    dense = op.to_dense()
    np.testing.assert_allclose(dense, dense.T, atol=1e-12)
    assert np.linalg.eigvalsh(dense).min() > -1e-10
    assert_close(op.diagonal(), np.diag(dense))


def test_jax_inputs_give_jax_outputs_and_float32_is_accurate(rng):
    k = kg.Matern52(lengthscale=0.8) + kg.Linear(variance=0.3)
    X, Y = sample_points(rng, 40, 3), sample_points(rng, 30, 3)
    v = rng.normal(size=30 * 4)
    ref = kg.gradient_gram(k, X, Y).matvec(v)
    out = kg.gradient_gram(k, jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)).matvec(
        jnp.asarray(v, jnp.float32)
    )
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    assert_close(out, ref, np.float32)


def test_matvec_rejects_a_vector_of_the_wrong_length():
    op = kg.gradient_gram(kg.RBF(), np.zeros((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(12,\) or \(12, p\)"):
        op.matvec(np.ones(9))


def test_closed_matvec_never_allocates_the_n_m_d_squared_blocks():
    """XLA's own memory plan for n = m = 1000, d = 100: the dense blocks would be 80 GB."""
    n, d = 1000, 100
    with jax.enable_x64(True):
        X = jax.ShapeDtypeStruct((n, d), jnp.float64)
        v = jax.ShapeDtypeStruct((n * (d + 1),), jnp.float64)
        compiled = gradient_kernel.joint_matvec.lower(
            kg.RBF(lengthscale=3.0), X, X, v, method="closed", row_block=None, col_block=None
        ).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < n * n * 8 * 4, f"{temp / 1e6:.0f} MB of temporaries"  # a few n x m at most
    assert temp < n * n * d * d * 8 / 1000


def test_many_right_hand_sides_are_taken_in_chunks_with_the_same_product(rng, policy_with):
    """Seven columns in chunks (the last one ragged; for the RBF's shared tile a single
    column, which takes the per-vector tile) against the dense product."""
    policy_with(gradient_rhs_chunk=2, gradient_shared_rhs_chunk=3)
    X, Y = sample_points(rng, 9, 3), sample_points(rng, 7, 3)
    cases = [(kg.RBF(lengthscale=0.8), "closed"), (BY_ID["pair_rbf"].kernel, "reverse")]
    for kernel, mode in cases:
        op = kg.gradient_gram(kernel, X, Y, mode=mode)
        V = rng.normal(size=(op.shape[1], 7))
        assert_close(op @ V, op.to_dense() @ V, err_msg=f"mode={mode}")


def test_many_right_hand_sides_keep_the_memory_of_a_few():
    """A GPyTorch predictive solve at n = 1000, d = 10 multiplies 1100 columns at once: XLA's
    memory plan must stay that of a chunk of them (all at once took over 24 GB)."""
    n, d, p = 1000, 10, 1100
    with jax.enable_x64(True):
        X = jax.ShapeDtypeStruct((n, d), jnp.float64)
        V = jax.ShapeDtypeStruct((n * (d + 1), p), jnp.float64)
        compiled = gradient_kernel.joint_matvec.lower(
            kg.RBF(lengthscale=3.0), X, X, V, method="closed", row_block=None, col_block=None
        ).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    rows, cols = kg.policy.current().gradient_shared_blocks  # an RBF's: the shared tile
    tile = rows * cols * kg.policy.current().gradient_shared_rhs_chunk * 8
    assert temp < 8 * tile + 4 * n * (d + 1) * p * 8, f"{temp / 1e9:.1f} GB of temporaries"
    assert temp < rows * cols * p * 8  # one tile of every column at once


def test_a_dense_matrix_that_cannot_fit_is_refused_and_matvec_is_named():
    op = kg.gradient_gram(kg.RBF(), np.zeros((30_000, 100)))  # (3.03e6)^2 float64: 73 TB
    with pytest.raises(MemoryError, match=r"op\.matvec"):
        op.to_dense()
