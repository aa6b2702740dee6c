"""Partial and directional derivative observations, and the posterior's covariances.

The reference writes the observation matrix P out densely from the documented layout
(values, then observed partials row-major, then directional derivatives row-major) and
applies the textbook formulas to P A P^T, with A the brute-force joint covariance of
``references.brute_joint_blocks`` (``jax.hessian`` and ``jax.jacfwd`` of the pair
function): no code shared with ``kernelgrad.gp``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, sample_points
from references import brute_joint_blocks, dense_P
from references import cached_joint_blocks as blocks

import kernelgrad as kg
from kernelgrad.gp.gradient_gp import _Covariance
from kernelgrad.gp.observations import observations

KERNELS = [BY_ID["rbf_ard"].kernel, BY_ID["nested"].kernel]
VALUE_NOISE, GRADIENT_NOISE = 1e-3, 2e-3


def brute(kernel, X, b, P, noise, Xs):
    """Mean and gradient, the joint covariance of [f, grad f] at Xs, and the training
    covariance, from dense NumPy algebra."""
    A, C, prior = blocks(kernel, X, Xs)
    A = P @ A @ P.T + np.diag(noise)
    C = C @ P.T  # (ns (d + 1), size)
    post = prior - C @ np.linalg.solve(A, C.T)
    return C @ np.linalg.solve(A, b), post, A


def problem(rng, d=3, n=8):
    """Values at every point, a random half of the partials, two directions a point."""
    X = sample_points(rng, n, d)
    y = np.sin(X).sum(1)
    G = np.cos(X)
    observed = rng.random((n, d)) < 0.5
    G[~observed] = np.nan  # unobserved entries may hold anything
    directions = rng.normal(size=(n, 2, d))
    D = np.einsum("nrd,nd->nr", directions, np.cos(X))
    b = np.concatenate([y, G[observed], D.ravel()])
    noise = np.concatenate([np.full(n, VALUE_NOISE), np.full(b.size - n, GRADIENT_NOISE)])
    return X, y, G, observed, directions, D, b, noise, sample_points(rng, 5, d)


def test_partial_and_directional_observations_match_the_dense_formulas(rng):
    """ARD RBF by Cholesky; CG, and the dot-product composite, are covered below (unit
    directions, the Jacobi diagonal and products)."""
    kernel, method = KERNELS[0], "cholesky"
    X, y, G, observed, directions, D, b, noise, Xs = problem(rng)
    n, d = X.shape
    P = dense_P(n, d, True, observed, directions)
    mean, post, _ = brute(kernel, X, b, P, noise, Xs)
    gp = kg.GradientGP(kernel, VALUE_NOISE, GRADIENT_NOISE)
    fitted = gp.condition(
        X, y, G, observed=observed, directions=directions, D=D, method=method, tol=1e-12
    )
    ns = len(Xs)
    assert fitted.weights.shape == (b.size,)
    np.testing.assert_allclose(fitted.mean(Xs), mean[:ns], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fitted.mean_gradient(Xs), mean[ns:].reshape(ns, d), atol=1e-8)
    np.testing.assert_allclose(fitted.variance(Xs), np.diag(post)[:ns], atol=1e-8)
    np.testing.assert_allclose(fitted.covariance(Xs), post[:ns, :ns], atol=1e-8)
    blocks = np.stack(
        [post[ns + j * d : ns + (j + 1) * d, ns + j * d : ns + (j + 1) * d] for j in range(ns)]
    )
    np.testing.assert_allclose(fitted.gradient_covariance(Xs), blocks, atol=1e-8)


def test_the_likelihood_of_partial_observations_is_the_dense_gaussians(rng):
    kernel = KERNELS[0]
    X, y, G, observed, directions, D, b, noise, Xs = problem(rng)
    n, d = X.shape
    _, _, A = brute(kernel, X, b, dense_P(n, d, True, observed, directions), noise, Xs)
    sign, logdet = np.linalg.slogdet(A)
    expected = -0.5 * (b @ np.linalg.solve(A, b) + logdet + b.size * np.log(2 * np.pi))
    gp = kg.GradientGP(kernel, VALUE_NOISE, GRADIENT_NOISE)
    lml = gp.log_marginal_likelihood(X, y, G, observed=observed, directions=directions, D=D)
    assert sign > 0 and lml == pytest.approx(expected, rel=1e-9)


def test_every_partial_as_unit_directions_equals_the_full_gradient_path(rng):
    """Unit directions go through the general scatter and gather path, G through the
    operator alone: the same observations, so the same posterior."""
    X = sample_points(rng, 10, 3)
    y, G = np.sin(X).sum(1), np.cos(X)
    Xs = sample_points(rng, 4, 3)
    gp = kg.GradientGP(kg.Matern52(lengthscale=0.9), VALUE_NOISE, GRADIENT_NOISE)
    units = np.broadcast_to(np.eye(3), (10, 3, 3))
    for method in ("cholesky", "cg"):
        full = gp.condition(X, y, G, method=method, tol=1e-12)
        general = gp.condition(X, y, directions=units, D=G, method=method, tol=1e-12)
        for name in ("mean", "mean_gradient", "variance", "covariance", "gradient_covariance"):
            np.testing.assert_allclose(
                getattr(general, name)(Xs), getattr(full, name)(Xs), atol=1e-9, err_msg=name
            )
        np.testing.assert_allclose(general.weights, full.weights, rtol=1e-6, atol=1e-8)


def test_gradient_only_observations_and_values_only_covariances(rng):
    X, _, G, observed, *_, Xs = problem(rng)
    n, d = X.shape
    kernel = KERNELS[0]
    b = G[observed]
    P = dense_P(n, d, False, observed, None)
    mean, post, _ = brute(kernel, X, b, P, np.full(b.size, GRADIENT_NOISE), Xs)
    post_gp = kg.GradientGP(kernel, VALUE_NOISE, GRADIENT_NOISE).condition(
        X, None, G, observed=observed
    )
    np.testing.assert_allclose(post_gp.mean(Xs), mean[: len(Xs)], atol=1e-9)
    # Values only: the gradient covariance still comes from the joint prior.
    y = np.sin(X).sum(1)
    P = dense_P(n, d, True, None, None)
    _, post, _ = brute(kernel, X, y, P, np.full(n, VALUE_NOISE), Xs)
    values = kg.GradientGP(kernel, VALUE_NOISE).condition(X, y)
    ns = len(Xs)
    blocks = np.stack(
        [post[ns + j * d : ns + (j + 1) * d, ns + j * d : ns + (j + 1) * d] for j in range(ns)]
    )
    np.testing.assert_allclose(values.gradient_covariance(Xs), blocks, atol=1e-9)
    np.testing.assert_allclose(values.covariance(Xs), post[:ns, :ns], atol=1e-9)


def test_noisy_predictions_add_the_observation_noise(rng):
    X = sample_points(rng, 6, 2)
    post = kg.GradientGP(kg.RBF(), 0.3, 0.05).condition(X, np.sin(X[:, 0]), np.cos(X))
    Xs = sample_points(rng, 3, 2)
    np.testing.assert_allclose(post.variance(Xs, noisy=True), post.variance(Xs) + 0.3)
    np.testing.assert_allclose(
        post.covariance(Xs, noisy=True), post.covariance(Xs) + 0.3 * np.eye(3)
    )
    np.testing.assert_allclose(
        post.gradient_covariance(Xs, noisy=True), post.gradient_covariance(Xs) + 0.05 * np.eye(2)
    )


def test_the_jacobi_diagonal_of_directional_observations_is_exact(rng):
    X, _, _, observed, directions, *_, Xs = problem(rng)
    n, d = X.shape
    kernel = KERNELS[1]
    P = dense_P(n, d, True, observed, directions)
    obs = observations(n, d, values=True, observed=observed, directions=directions)
    with jax.enable_x64(True):
        cov = _Covariance(kernel, jnp.asarray(X), obs, "closed")
        diag = np.asarray(cov.diagonal())
        V = rng.normal(size=(obs.size, 2))
        product = np.asarray(cov.matvec(jnp.asarray(V)))
    dense = P @ blocks(kernel, X, Xs)[0] @ P.T
    np.testing.assert_allclose(diag, np.diag(dense), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(product, dense @ V, rtol=1e-9, atol=1e-10)


def test_directional_products_never_form_the_d_by_d_blocks():
    """XLA's memory plan at n = 1000, d = 100 with a direction a point and half the partials:
    the joint covariance's blocks would be 80 GB."""
    n, d = 1000, 100
    rng = np.random.default_rng(0)
    obs = observations(
        n, d, values=True, observed=rng.random((n, d)) < 0.5, directions=rng.normal(size=(n, 1, d))
    )
    with jax.enable_x64(True):
        cov = _Covariance(kg.RBF(lengthscale=3.0), jnp.zeros((n, d)), obs, "closed")
        V = jax.ShapeDtypeStruct((obs.size, 1), jnp.float64)
        temp = jax.jit(lambda c, V: c.matvec(V)).lower(cov, V).compile().memory_analysis()
    assert temp.temp_size_in_bytes < 8 * n * n * 8, f"{temp.temp_size_in_bytes / 1e6:.0f} MB"


@pytest.mark.parametrize("case", ["matern52_ard", "poly3", "product_rbf_periodic"])
def test_the_dense_covariance_of_observations_is_the_brute_force_one(rng, case):
    """Built observation by observation (never the joint matrix), for a stationary kernel
    with a repeated point (r = 0), a dot-product kernel and a product; values, half the
    partials and two directions a point."""
    kernel = BY_ID[case].kernel
    X, _, _, observed, directions, *_ = problem(rng)
    X[1] = X[0]
    n, d = X.shape
    A, _, _ = brute_joint_blocks(kernel, X, X[:1])
    P = dense_P(n, d, True, observed, directions)
    obs = observations(n, d, observed=observed, directions=directions)
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        got = np.asarray(_Covariance(kernel, jnp.asarray(X), obs, "closed").dense())
    np.testing.assert_allclose(got, P @ A @ P.T, rtol=1e-10, atol=1e-12 * np.abs(A).max())


def test_dense_partial_observations_never_form_the_d_by_d_blocks():
    """XLA's memory plan for Cholesky's dense matrix at n = 200, d = 100, a direction a
    point: 40,000 entries are needed, the joint matrix would hold 4 x 10^8 (3.3 GB)."""
    n, d = 200, 100
    obs = observations(n, d, values=False, directions=np.ones((n, 1, d)))
    with jax.enable_x64(True):
        cov = _Covariance(kg.RBF(lengthscale=3.0), jnp.zeros((n, d)), obs, "closed")
        temp = jax.jit(lambda c: c.dense()).lower(cov).compile().memory_analysis()
    assert temp.temp_size_in_bytes < 64 * n * n * 8, f"{temp.temp_size_in_bytes / 1e6:.0f} MB"


def test_fit_moves_the_likelihood_of_partial_observations(rng):
    X, y, G, observed, *_ = problem(rng, d=2, n=10)
    start = kg.GradientGP(kg.RBF(lengthscale=3.0), 0.1, 0.1)
    result = kg.fit(start, X, y, G, observed=observed, steps=30, learning_rate=0.1)
    assert result.losses[-1] < result.losses[0] - 0.1


def test_bad_observations_are_refused_with_what_was_expected(rng):
    X = sample_points(rng, 4, 2)
    y, G = np.zeros(4), np.zeros((4, 2))
    gp = kg.GradientGP(kg.RBF())
    cases = [
        (dict(G=G, observed=np.ones((4, 3), bool)), "boolean array of shape \\(4, 2\\)"),
        (dict(G=G, observed=np.ones((4, 2))), "boolean array"),
        (dict(observed=np.ones((4, 2), bool)), "G is missing"),
        (dict(directions=np.ones((4, 2))), "need both directions and D"),
        (dict(directions=np.ones((4, 3)), D=np.ones(4)), "directions must have shape"),
        (dict(directions=np.ones((4, 2)), D=np.ones(3)), "directions must have shape"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            gp.condition(X, y, **kwargs)
    bad = G.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"G contains 1 .* at index \(1, 0\)"):
        gp.condition(X, y, bad, observed=np.ones((4, 2), bool))
    skip = np.ones((4, 2), bool)
    skip[1, 0] = False
    assert np.isfinite(gp.condition(X, y, bad, observed=skip).mean(X)).all()
    with pytest.raises(ValueError, match="nothing is observed"):
        gp.condition(X, None)


def test_the_observed_operator_is_p_a_p_transposed(rng):
    """kg.observe on a rectangular gradient_gram: different observations of X and of Y."""
    kernel = KERNELS[1]
    X, Y = sample_points(rng, 6, 3), sample_points(rng, 5, 3)
    rows_mask, cols_mask = rng.random((6, 3)) < 0.5, rng.random((5, 3)) < 0.5
    directions = rng.normal(size=(5, 2, 3))
    rows = kg.observations(6, 3, observed=rows_mask)
    cols = kg.observations(5, 3, values=False, observed=cols_mask, directions=directions)
    cov = kg.observe(kg.gradient_gram(kernel, X, Y), rows, cols)
    _, YX, YY = brute_joint_blocks(kernel, X, Y)
    P = dense_P(5, 3, False, cols_mask, directions)
    expected = dense_P(6, 3, True, rows_mask, None) @ YX.T @ P.T
    assert cov.shape == expected.shape
    np.testing.assert_allclose(cov.to_dense(), expected, rtol=1e-10, atol=1e-12)
    V = rng.normal(size=(cov.shape[1], 2))
    np.testing.assert_allclose(cov @ V, expected @ V, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(cov.matvec(V[:, 0]), expected @ V[:, 0], rtol=1e-9, atol=1e-11)
    square = kg.observe(kg.gradient_gram(kernel, Y), cols)
    dense = P @ YY @ P.T
    np.testing.assert_allclose(square.diagonal(), np.diag(dense), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"kg.observations\(6, 3"):
        kg.observe(kg.gradient_gram(kernel, X, Y), cols)
    with pytest.raises(ValueError, match="same points and observations"):
        cov.diagonal()
    with pytest.raises(ValueError, match="boolean array of shape"):
        kg.observations(6, 3, observed=np.ones((6, 2), bool))
