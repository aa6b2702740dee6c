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
from references import cached_joint_blocks as blocks
from references import dense_P

import kernelgrad as kg
from kernelgrad.gp import preconditioner
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
