"""CG's preconditioners (kernelgrad.gp.preconditioner) and the covariance columns they are
built from.

The factor is checked against the matrix it factors (dense NumPy); the columns against the
brute-force joint covariance of ``references.brute_joint_blocks`` (``jax.hessian`` of the
pair function) seen through the dense observation matrix of ``test_observations``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, sample_points
from references import brute_joint_covariance, dense_P
from references import cached_joint_blocks as blocks

import kernelgrad as kg
from kernelgrad.gp import gradient_kernel, preconditioner
from kernelgrad.gp.gradient_gp import _Covariance
from kernelgrad.gp.observations import observations


def psd(rng, N, rank):
    A = rng.normal(size=(N, rank))
    return A @ A.T


def factor(K, rank):
    K = jnp.asarray(K)
    return np.asarray(preconditioner.pivoted_cholesky(jnp.diagonal(K), lambda I: K[I], rank))


@pytest.mark.parametrize("rank", [8, 40], ids=["rank-of-K", "past-it"])
def test_a_factor_of_k_s_rank_or_more_reproduces_k(rng, rank):
    """K has rank 8. Past it, pivots on round-off give zero rows, not a division by it."""
    K = psd(rng, 60, 8)
    with jax.enable_x64(True):
        L = factor(K, rank)
    assert L.shape == (preconditioner.factor_rank(rank), 60)
    assert np.all(np.isfinite(L))
    np.testing.assert_allclose(L.T @ L, K, atol=1e-10 * np.abs(K).max())


def test_a_partial_factor_leaves_a_psd_remainder_that_shrinks_with_rank(rng):
    """A full-rank K (60 x 60, a smooth kernel's, whose eigenvalues decay): K - L^T L stays
    PSD and its trace falls as the rank grows, to a small part of K's at rank 40."""
    X = rng.normal(size=(60, 2))
    K = np.exp(-0.5 * ((X[:, None] - X[None]) ** 2).sum(-1))
    traces = []
    with jax.enable_x64(True):
        for rank in (5, 10, 20, 40):
            L = factor(K, rank)
            remainder = K - L.T @ L
            assert np.linalg.eigvalsh(remainder).min() > -1e-10
            traces.append(np.trace(remainder))
    assert np.all(np.diff(traces) < 0), traces
    assert traces[-1] < 1e-3 * np.trace(K), traces


@pytest.mark.parametrize("rank", [0, 12], ids=["jacobi", "pivoted-cholesky"])
def test_solve_logdet_and_sample_agree_with_the_dense_preconditioner(rng, rank):
    K = psd(rng, 50, 30)
    noise = np.full(50, 0.1)
    with jax.enable_x64(True):
        Kj = jnp.asarray(K)
        M = preconditioner.build(jnp.diagonal(Kj), jnp.asarray(noise), lambda I: Kj[I], rank)
        if rank:
            L = np.asarray(M.L)
            dense = L.T @ L + np.diag(np.asarray(M.D))
            # exact on the diagonal: D holds what L leaves out
            np.testing.assert_allclose(np.diagonal(dense), np.diagonal(K) + noise, rtol=1e-12)
        else:
            dense = np.diag(np.diagonal(K) + noise)
        R = rng.normal(size=(50, 3))
        np.testing.assert_allclose(np.asarray(M.solve(jnp.asarray(R))), np.linalg.solve(dense, R),
                                   rtol=1e-9, atol=1e-12)  # fmt: skip
        np.testing.assert_allclose(float(M.logdet()), np.linalg.slogdet(dense)[1], rtol=1e-12)
        # sample is linear in the probes: its matrix T has T T^T = M, so z = T e has
        # covariance M for probes e of unit covariance
        k = preconditioner.factor_rank(rank)
        T = np.asarray(M.sample(jnp.eye(50 + k)))
    np.testing.assert_allclose(T @ T.T, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["values", "full", "general"])
def test_covariance_columns_are_the_brute_force_ones(rng, kind):
    """Column j of P A P^T for values only, values and full gradients, and values with
    partials and directional derivatives, against the dense P and a jax.hessian A."""
    n, d = 6, 3
    X = sample_points(rng, n, d)
    kernel = BY_ID["rbf_ard"].kernel
    A, _, _ = blocks(kernel, X, X[:1])
    if kind == "values":
        obs, P = observations(n, d), dense_P(n, d, True, None, None)
    elif kind == "full":
        every = np.ones((n, d), bool)
        obs, P = observations(n, d, observed=every), dense_P(n, d, True, every, None)
    else:
        observed = rng.random((n, d)) < 0.5
        directions = rng.normal(size=(n, 2, d))
        obs = observations(n, d, observed=observed, directions=directions)
        P = dense_P(n, d, True, observed, directions)
    want = P @ A @ P.T
    # the rules broadcast (n, d) against (d,) on purpose: kernelgrad's programs allow it
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        cov = _Covariance(kernel, jnp.asarray(X), obs, "closed")
        got = np.asarray(jax.vmap(cov.column)(jnp.arange(obs.size)))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cg_with_a_pivoted_cholesky_matches_cholesky_in_fewer_iterations(rng):
    """Partial and directional observations, 60 points in 2-D: the mean and the variance
    equal the Cholesky posterior's, and the rank-40 factor takes fewer CG iterations than
    Jacobi on this smooth, strongly correlated covariance."""
    X = rng.uniform(-2, 2, size=(60, 2))
    observed = rng.random((60, 2)) < 0.5
    directions = rng.normal(size=(60, 1, 2))
    G = np.cos(X)
    D = np.einsum("nrd,nd->nr", directions, G)
    gp = kg.GradientGP(kg.RBF(lengthscale=1.0), 1e-4, 1e-4)
    data = dict(observed=observed, directions=directions, D=D)
    exact = gp.condition(X, np.sin(X).sum(1), G, method="cholesky", **data)
    runs = {
        rank: gp.condition(X, np.sin(X).sum(1), G, method="cg", preconditioner_rank=rank, **data)
        for rank in (0, 40)
    }
    Xs = rng.uniform(-2, 2, size=(4, 2))
    for post in runs.values():  # the weights solve an ill-conditioned system: compare f
        np.testing.assert_allclose(post.mean(Xs), exact.mean(Xs), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(post.variance(Xs), exact.variance(Xs), atol=1e-8)
    assert runs[40].cg_info.iterations < runs[0].cg_info.iterations, runs


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_a_bad_rank_is_refused(rng, bad):
    X = rng.normal(size=(5, 2))
    gp = kg.GradientGP(kg.RBF())
    with pytest.raises(ValueError, match="preconditioner_rank must be an integer >= 0"):
        gp.condition(X, np.zeros(5), np.zeros((5, 2)), method="cg", preconditioner_rank=bad)


def dense_gauss_seidel_factor(A, n):
    """(L1, D) of M = L1 D L1^T for A's blocks [[V, C^T], [C, G]], written out: D =
    blockdiag(W, diag(G)) with W = V + jitter I, the jitter sqrt(eps) mean(diag V) as
    documented, and L1 = [[I, 0], [C W^-1, I]]."""
    jitter = np.sqrt(np.finfo(np.float64).eps) * np.mean(np.diagonal(A[:n, :n]))
    D = np.diag(np.diagonal(A)).copy()
    D[:n, :n] = A[:n, :n] + jitter * np.eye(n)
    L1 = np.eye(len(A))
    L1[n:, :n] = A[n:, :n] @ np.linalg.inv(D[:n, :n])
    return L1, D


def gauss_seidel_of(kernel, X, noise):
    """The library's Gauss-Seidel preconditioner of kernel's joint covariance on X plus
    diag(noise), and the cached tile it splits with."""
    n = X.shape[0]
    every = np.ones(X.shape, bool)
    cov = _Covariance(kernel, jnp.asarray(X), observations(n, X.shape[1], observed=every), "closed")
    M = cov.preconditioner(jnp.asarray(noise), "gauss-seidel")
    return M, gradient_kernel.cached_tile(kernel, cov.X, cov.X, 1 << 30)


def test_the_gauss_seidel_split_is_the_dense_transformed_system(rng):
    """Eisenstat's form against dense matrices: into = L1^-1, operator = L1^-1 A L1^-T
    (symmetric positive definite, as CG needs), out_of = L1^-T, and the preconditioner
    of the transformed system, D^-1, for several columns; and M = L1 D L1^T is the
    symmetric block Gauss-Seidel sweep (D + L) D^-1 (D + U)."""
    n, d = 7, 3
    N = n * (d + 1)
    X = sample_points(rng, n, d)
    kernel = BY_ID["rbf_ard"].kernel
    noise = np.concatenate([np.full(n, 1e-2), np.full(n * d, 3e-2)])
    A = brute_joint_covariance(kernel, X, X) + np.diag(noise)
    L1, D = dense_gauss_seidel_factor(A, n)
    B = np.linalg.solve(L1, np.linalg.solve(L1, A).T)  # L1^-1 A L1^-T (A symmetric)
    lower = np.zeros_like(A)
    lower[n:, :n] = A[n:, :n]  # C alone
    sweep = (D + lower) @ np.linalg.solve(D, D + lower.T)
    np.testing.assert_allclose(L1 @ D @ L1.T, sweep, rtol=1e-10, atol=1e-12)
    y, R = rng.normal(size=(N, 1)), rng.normal(size=(N, 3))
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        M, tile = gauss_seidel_of(kernel, X, noise)
        operator, into, out_of = M.split(tile)
        got = [np.asarray(f(jnp.asarray(y))) for f in (into, operator, out_of)]
        columns = np.asarray(jnp.concatenate([operator(e[:, None]) for e in jnp.eye(N)], axis=1))
        block_jacobi = np.asarray(M.solver(tile)(jnp.asarray(R)))
        assert preconditioner.Jacobi(jnp.ones(N)).split(tile) is None
        assert M.split(None) is None
    wants = (np.linalg.solve(L1, y), B @ y, np.linalg.solve(L1.T, y))
    for name, value, want in zip(("into", "operator", "out_of"), got, wants, strict=True):
        np.testing.assert_allclose(value, want, rtol=1e-8, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(columns, columns.T, rtol=1e-8, atol=1e-10)
    assert np.linalg.eigvalsh(0.5 * (columns + columns.T)).min() > 0
    np.testing.assert_allclose(block_jacobi, np.linalg.solve(D, R), rtol=1e-8, atol=1e-10)


def test_a_values_block_that_will_not_factorise_leaves_its_diagonal():
    V = jnp.asarray([[1.0, 2.0], [2.0, 1.0]])  # indefinite, positive diagonal
    with jax.enable_x64(True):
        M = preconditioner.gauss_seidel(V, jnp.zeros(2), jnp.ones(4), jnp.zeros(4))
    np.testing.assert_array_equal(np.asarray(M.value_inverse), np.eye(2))


def test_cg_with_gauss_seidel_matches_cholesky_in_fewer_iterations_than_jacobi(rng):
    """Values and gradients of 40 points in 3-D under a smooth, strongly correlated RBF:
    the mean, its gradient and the variance equal the Cholesky posterior's, in plain and
    mixed precision, and "auto" takes Gauss-Seidel here."""
    X = rng.uniform(-2, 2, size=(40, 3))
    y, G = np.sin(X).sum(1), np.cos(X)
    gp = kg.GradientGP(kg.RBF(lengthscale=1.5), 1e-4, 1e-4)
    exact = gp.condition(X, y, G, method="cholesky")
    runs = {
        name: gp.condition(X, y, G, method="cg", preconditioner=pre, mixed_precision=mixed)
        for name, pre, mixed in [
            ("jacobi", "jacobi", False),
            ("gauss-seidel", "gauss-seidel", False),
            ("auto", "auto", False),
            ("mixed", "gauss-seidel", True),
        ]
    }
    Xs = rng.uniform(-2, 2, size=(5, 3))
    for name, post in runs.items():
        np.testing.assert_allclose(post.mean(Xs), exact.mean(Xs), rtol=1e-6, atol=1e-7,
                                   err_msg=name)  # fmt: skip
        np.testing.assert_allclose(post.mean_gradient(Xs), exact.mean_gradient(Xs), rtol=1e-6,
                                   atol=1e-7, err_msg=name)  # fmt: skip
        np.testing.assert_allclose(post.variance(Xs), exact.variance(Xs), atol=1e-8, err_msg=name)
    assert isinstance(runs["auto"].factor, preconditioner.GaussSeidel)
    assert runs["auto"].cg_info.iterations == runs["gauss-seidel"].cg_info.iterations
    assert 2 * runs["gauss-seidel"].cg_info.iterations < runs["jacobi"].cg_info.iterations, runs


def test_auto_takes_jacobi_where_gauss_seidel_does_not_apply_or_fit(rng, policy_with):
    X = rng.normal(size=(12, 2))
    y, G = np.sin(X).sum(1), np.cos(X)
    gp = kg.GradientGP(kg.RBF(), 1e-3, 1e-3)
    partial = gp.condition(X, y, G, observed=rng.random((12, 2)) < 0.5, method="cg")
    assert isinstance(partial.factor, preconditioner.Jacobi)
    ranked = gp.condition(X, y, G, method="cg", preconditioner_rank=8)
    assert isinstance(ranked.factor, preconditioner.PivotedCholesky)
    # V^-1 and the tile's coefficient arrays, 12 x 12 float64 each, one byte short
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        Xj = jnp.asarray(X)
        t = gp.kernel.tile(jnp, Xj, Xj, *gradient_kernel.terms.centre(jnp, Xj, Xj), order=2)
        arrays = gradient_kernel.coefficient_arrays(t)
    assert arrays >= 1
    needed = 12 * 12 * 8 * (1 + arrays)
    policy_with(cached_coefficients_max_bytes=needed)
    assert isinstance(gp.condition(X, y, G, method="cg").factor, preconditioner.GaussSeidel)
    policy_with(cached_coefficients_max_bytes=needed - 1)
    assert isinstance(gp.condition(X, y, G, method="cg").factor, preconditioner.Jacobi)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(preconditioner="ilu"), "preconditioner must be one of"),
        (dict(preconditioner="pivoted-cholesky", preconditioner_rank=0), "needs .*rank >= 1"),
        (dict(preconditioner="gauss-seidel", observed=np.eye(5, 2, dtype=bool)), "needs values"),
    ],
)  # fmt: skip
def test_a_preconditioner_that_cannot_be_had_is_refused(rng, kwargs, message):
    X = rng.normal(size=(5, 2))
    gp = kg.GradientGP(kg.RBF())
    with pytest.raises(ValueError, match=message):
        gp.condition(X, np.zeros(5), np.zeros((5, 2)), method="cg", **kwargs)


def test_gauss_seidel_cg_meets_tol_on_the_true_residual_where_the_split_one_stops_short():
    """CG on the split system stops on its own residual, L1^-1 (b - A x); on these points
    (found by a search, seed 0) that first stop left the true residual at 1.1 tol, and the
    check that follows must carry on to tol: the residual of the dense system is checked
    here, and the weights against Cholesky's."""
    X = np.random.default_rng(0).normal(size=(30, 5))
    y, G = np.sin(3 * X).sum(1) / 10, 0.3 * np.cos(3 * X)
    gp = kg.GradientGP(kg.RBF(lengthscale=np.sqrt(5)), 1e-3, 1e-3)
    post = gp.condition(X, y, G, method="cg", tol=1e-6, preconditioner="gauss-seidel")
    A = brute_joint_covariance(gp.kernel, X, X) + 1e-3 * np.eye(180)
    b = np.concatenate([y, G.ravel()])
    assert np.linalg.norm(b - A @ post.weights) <= 1e-6 * np.linalg.norm(b)
    exact = gp.condition(X, y, G, method="cholesky")
    np.testing.assert_allclose(
        post.weights, exact.weights, rtol=1e-4, atol=1e-6 * np.abs(exact.weights).max()
    )
