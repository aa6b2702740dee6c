"""The Woodbury solve for d >> n against the textbook formulas on the brute-force joint
covariance (``references.brute_joint_covariance``, from ``jax.hessian`` of the pair
function), and against kernelgrad's own Cholesky path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import sample_points
from references import brute_joint_blocks

import kernelgrad as kg
from kernelgrad.gp import woodbury
from kernelgrad.gp.gradient_gp import _woodbury

#: Against the brute-force covariance (each reference compiles anew: one kernel, ARD); RBF
#: and RQ are checked against kernelgrad's Cholesky path below.
KERNELS = {
    "matern52_ard": kg.Matern52(variance=0.8, lengthscale=np.linspace(1.5, 4.0, 12)),
    "polynomial_3": kg.Polynomial(degree=3, offset=2.0),
}


def data(rng, n, d):
    X = sample_points(rng, n, d)
    return X, np.sin(X).sum(1), np.cos(X), sample_points(rng, 4, d)


def test_woodbury_equals_the_dense_solve(rng):
    """Every covered family's weights against the dense solve (a stationary and a
    dot-product kernel); the posterior's mean and covariances for the last one."""
    n, d = 6, 12
    X, y, G, Xs = data(rng, n, d)
    b = np.concatenate([y, G.ravel()])
    noise = np.diag(np.concatenate([np.full(n, 1e-3), np.full(n * d, 2e-3)]))
    for name, kernel in KERNELS.items():
        A, C, prior = brute_joint_blocks(kernel, X, Xs)
        A = A + noise
        post = kg.GradientGP(kernel, 1e-3, 2e-3).condition(X, y, G, method="woodbury")
        assert post.method == "woodbury"
        expected = np.linalg.solve(A, b)
        assert np.abs(post.weights - expected).max() <= 1e-8 * np.abs(expected).max(), name
    full = prior - C @ np.linalg.solve(A, C.T)
    ns = len(Xs)
    np.testing.assert_allclose(post.mean(Xs), (C @ expected)[:ns], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post.covariance(Xs), full[:ns, :ns], atol=1e-9)
    blocks = np.stack(
        [full[ns + j * d : ns + (j + 1) * d, ns + j * d : ns + (j + 1) * d] for j in range(ns)]
    )
    np.testing.assert_allclose(post.gradient_covariance(Xs), blocks, atol=1e-9)


@pytest.mark.parametrize(
    "kernel, n, d",
    [
        (kg.RBF(variance=1.3, lengthscale=0.8), 9, 2),
        (kg.RationalQuadratic(0.9, 0.7, 0.8), 9, 2),
        (kg.Linear(variance=0.7), 5, 12),  # g'' = 0: no rank-one parts
        (kg.Polynomial(degree=2, offset=0.5), 5, 12),
    ],
    ids=["rbf-n>d", "rq-n>d", "linear", "quadratic"],
)
def test_woodbury_equals_cholesky(rng, kernel, n, d):
    """Stationary kernels with more points than dimensions too. (Dot-product kernels only
    with d > n: with n > d their gradients nearly determine the values, and the values'
    Schur complement, a difference of near-equal matrices, loses digits: 2e-5 relative in
    the weights at n = 9, d = 2.)"""
    X, y, G, Xs = data(rng, n, d)
    gp = kg.GradientGP(kernel, 1e-4, 1e-4)
    exact = gp.condition(X, y, G, method="cholesky")
    fast = gp.condition(X, y, G, method="woodbury")
    np.testing.assert_allclose(fast.weights, exact.weights, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fast.variance(Xs), exact.variance(Xs), atol=1e-10)


def test_auto_takes_woodbury_where_d_exceeds_n(rng, policy_with):
    gp = kg.GradientGP(kg.RBF(lengthscale=2.0), 1e-3, 1e-3)
    X, y, G, _ = data(rng, 5, 20)
    assert gp.condition(X, y, G).method == "woodbury"
    X, y, G, _ = data(rng, 20, 5)
    assert gp.condition(X, y, G).method == "cholesky"
    policy_with(woodbury_max_points=4)
    X, y, G, _ = data(rng, 5, 20)
    assert gp.condition(X, y, G).method == "cholesky"
    assert gp.condition(X, y).method == "cholesky"  # values alone: no gradient block


def test_woodbury_refuses_what_it_does_not_cover(rng):
    X, y, G, _ = data(rng, 4, 6)
    for kernel in (kg.Periodic(), kg.RBF() + kg.Matern52(), kg.Linear() + kg.Polynomial()):
        with pytest.raises(ValueError, match="method='woodbury' needs"):
            kg.GradientGP(kernel).condition(X, y, G, method="woodbury")
    with pytest.raises(ValueError, match="full gradients"):
        kg.GradientGP(kg.RBF()).condition(X, y, G, observed=np.eye(4, 6) > 0, method="woodbury")
    assert woodbury.applies(kg.Matern52()) and not woodbury.applies(kg.Matern32())


def test_woodbury_memory_stays_below_the_dense_matrix():
    """XLA's memory plan at n = 20, d = 5000: the dense joint covariance is 80 GB."""
    n, d = 20, 5000
    with jax.enable_x64(True):
        X = jax.ShapeDtypeStruct((n, d), jnp.float64)
        compiled = _woodbury.lower(kg.RBF(lengthscale=30.0), X, 1e-3, 1e-3).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 16 * n * n * d * 8, f"{temp / 1e9:.1f} GB"  # a few (n, n, d) arrays
