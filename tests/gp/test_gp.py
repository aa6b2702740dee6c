"""GPs with derivative observations, hyperparameter gradients and hyperparameter fitting.

Posterior references are the textbook formulas evaluated in NumPy on the brute-force joint
covariance of ``references.brute_joint_covariance`` (built from ``jax.hessian`` and
``jax.jacfwd`` of the pair function), so they share no code with ``kernelgrad.gp.gradient_gp``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, CASES, sample_points, select
from references import brute_joint_covariance, dense_gram

import kernelgrad as kg


def brute_posterior(kernel, X, b, noise, Xs, with_gradients=True):
    """Mean, mean gradient and variance at Xs from dense NumPy linear algebra."""
    n, d = X.shape
    ns = Xs.shape[0]
    if with_gradients:
        A = brute_joint_covariance(kernel, X, X)
        C = brute_joint_covariance(kernel, Xs, X)  # rows: [f(Xs), grad f(Xs)]
    else:
        A = dense_gram(kernel, X, X)
        C = brute_joint_covariance(kernel, Xs, X)[:, :n]  # observations are values only
    A = A + np.diag(noise)
    alpha = np.linalg.solve(A, b)
    out = C @ alpha
    values = C[:ns]
    var = np.diag(brute_joint_covariance(kernel, Xs, Xs))[:ns] - np.einsum(
        "ij,ji->i", values, np.linalg.solve(A, values.T)
    )
    return out[:ns], out[ns:].reshape(ns, d), var, A


def noise_vector(n, d, value_noise, gradient_noise, with_gradients=True):
    values = np.full(n, value_noise)
    return np.concatenate([values, np.full(n * d, gradient_noise)]) if with_gradients else values


@pytest.fixture
def data(rng):
    """Observations of a smooth 2-D function, its gradient, and a few test points."""
    X = sample_points(rng, 12, 2)
    y = np.sin(X[:, 0]) * np.cos(0.5 * X[:, 1])
    G = np.stack(
        [np.cos(X[:, 0]) * np.cos(0.5 * X[:, 1]), -0.5 * np.sin(X[:, 0]) * np.sin(0.5 * X[:, 1])],
        axis=1,
    )
    Xs = sample_points(rng, 7, 2)
    return X, y, G, Xs


#: A single kernel and a composite with a dot-product part, from the shared table.
KERNELS = [BY_ID["rbf"].kernel, BY_ID["nested"].kernel]


@pytest.mark.parametrize("kernel", KERNELS, ids=["rbf", "nested"])
@pytest.mark.parametrize("with_gradients", [True, False], ids=["grads", "values"])
def test_cholesky_posterior_matches_the_textbook_formulas(kernel, with_gradients, data):
    X, y, G, Xs = data
    gp = kg.GradientGP(kernel, value_noise=1e-3, gradient_noise=2e-3)
    post = gp.condition(X, y, G if with_gradients else None, method="cholesky")
    b = np.concatenate([y, G.ravel()]) if with_gradients else y
    noise = noise_vector(12, 2, 1e-3, 2e-3, with_gradients)
    mean, grad, var, _ = brute_posterior(kernel, X, b, noise, Xs, with_gradients)
    np.testing.assert_allclose(post.mean(Xs), mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(post.mean_gradient(Xs), grad, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(post.variance(Xs), var, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("with_gradients", [True, False], ids=["grads", "values"])
def test_cg_on_the_lazy_operator_matches_cholesky(with_gradients, data):
    X, y, G, Xs = data
    gp = kg.GradientGP(kg.Matern52(lengthscale=0.9), value_noise=1e-2, gradient_noise=1e-2)
    G = G if with_gradients else None
    exact = gp.condition(X, y, G, method="cholesky")
    cg = gp.condition(X, y, G, method="cg", tol=1e-11)
    assert cg.method == "cg" and cg.cg_info.relative_residual <= 1e-11
    np.testing.assert_allclose(cg.mean(Xs), exact.mean(Xs), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(cg.mean_gradient(Xs), exact.mean_gradient(Xs), atol=1e-8)
    np.testing.assert_allclose(cg.variance(Xs), exact.variance(Xs), atol=1e-8)


def test_cg_that_does_not_converge_warns(data):
    X, y, G, _ = data
    gp = kg.GradientGP(kg.RBF(), value_noise=1e-6, gradient_noise=1e-6)
    with pytest.warns(RuntimeWarning, match="conjugate gradients stopped after 3"):
        gp.condition(X, y, G, method="cg", maxiter=3)


def test_mean_gradient_is_the_derivative_of_the_mean(data):
    X, y, G, Xs = data
    post = kg.GradientGP(kg.RBF(lengthscale=0.7), 1e-4, 1e-4).condition(X, y, G)
    h = 1e-5
    for a in range(2):
        e = np.zeros(2)
        e[a] = h
        fd = (post.mean(Xs + e) - post.mean(Xs - e)) / (2 * h)
        np.testing.assert_allclose(post.mean_gradient(Xs)[:, a], fd, atol=1e-7)


def test_tiny_noise_interpolates_values_and_gradients(data):
    X, y, G, _ = data
    post = kg.GradientGP(kg.RBF(lengthscale=0.7), 1e-9, 1e-9).condition(X, y, G)
    np.testing.assert_allclose(post.mean(X), y, atol=1e-5)
    np.testing.assert_allclose(post.mean_gradient(X), G, atol=1e-5)
    assert np.all(post.variance(X) < 1e-6)


def test_noise_on_values_and_gradients_is_separate(data):
    """Gradients with a huge noise variance carry no information: values-only posterior."""
    X, y, G, Xs = data
    k = kg.RBF(lengthscale=0.7)
    ignored = kg.GradientGP(k, value_noise=1e-3, gradient_noise=1e12).condition(X, y, G)
    values_only = kg.GradientGP(k, value_noise=1e-3).condition(X, y)
    np.testing.assert_allclose(ignored.mean(Xs), values_only.mean(Xs), atol=1e-8)
    np.testing.assert_allclose(ignored.variance(Xs), values_only.variance(Xs), atol=1e-8)
    # ... and trusted gradients shrink the variance.
    trusted = kg.GradientGP(k, value_noise=1e-3, gradient_noise=1e-3).condition(X, y, G)
    assert np.all(trusted.variance(Xs) < values_only.variance(Xs))


def test_log_marginal_likelihood_matches_a_dense_gaussian(data):
    X, y, G, _ = data
    k = kg.Matern52(variance=0.8, lengthscale=1.3)
    gp = kg.GradientGP(k, value_noise=1e-2, gradient_noise=3e-2)
    b = np.concatenate([y, G.ravel()])
    A = brute_joint_covariance(k, X, X) + np.diag(noise_vector(12, 2, 1e-2, 3e-2))
    sign, logdet = np.linalg.slogdet(A)
    expected = -0.5 * b @ np.linalg.solve(A, b) - 0.5 * logdet - 0.5 * len(b) * np.log(2 * np.pi)
    assert sign > 0
    np.testing.assert_allclose(gp.log_marginal_likelihood(X, y, G), expected, rtol=1e-10)


def test_jax_grad_of_the_likelihood_through_the_kernel_matches_finite_differences(data):
    X, y, G, _ = data
    gp = kg.GradientGP(kg.RBF(variance=1.1, lengthscale=np.array([0.8, 1.3])), 1e-2, 2e-2)
    with jax.enable_x64(True):
        grads = jax.grad(lambda g: g.log_marginal_likelihood(jnp.asarray(X), y, G))(gp)
    leaves, treedef = jax.tree.flatten(gp)
    flat_grads = jax.tree.leaves(grads)
    for index, leaf in enumerate(leaves):
        for e in np.ndindex(np.shape(leaf)):
            h = 1e-6 * float(np.asarray(leaf)[e])

            def moved(delta, index=index, e=e):
                new = [np.array(x, dtype=np.float64) for x in leaves]
                new[index][e] += delta
                return jax.tree.unflatten(treedef, new).log_marginal_likelihood(X, y, G)

            fd = (moved(h) - moved(-h)) / (2 * h)
            np.testing.assert_allclose(np.asarray(flat_grads[index])[e], fd, rtol=1e-5)


# --------------------------------------------------------------------------- hyper_grad


def _central_difference(kernel, X, Y, gradients):
    """dK/dtheta for every entry of every leaf, by central differences in float64."""
    leaves, treedef = jax.tree.flatten(kernel)
    out = []
    for index, leaf in enumerate(leaves):
        leaf = np.asarray(leaf, dtype=np.float64)
        entries = []
        for e in np.ndindex(leaf.shape):
            h = 1e-6 * max(abs(float(leaf[e])), 1.0)

            def matrix(delta, index=index, e=e):
                new = [np.array(x, dtype=np.float64) for x in leaves]
                new[index][e] += delta
                moved = jax.tree.unflatten(treedef, new)
                if gradients:
                    return kg.gradient_gram(moved, X, Y).to_dense()
                return kg.gram(moved, X, Y)

            entries.append((matrix(h) - matrix(-h)) / (2 * h))
        stacked = np.stack(entries, axis=-1) if entries else None
        out.append(stacked.reshape(*stacked.shape[:2], *leaf.shape))
    return out


@pytest.mark.parametrize("case", select(lambda c: c.closed))
def test_hyper_grad_matches_finite_differences(case, rng):
    X, Y = sample_points(rng, 4, case.dim()), sample_points(rng, 3, case.dim())
    got = jax.tree.leaves(kg.hyper_grad(case.kernel, X, Y))
    expected = _central_difference(case.kernel, X, Y, gradients=False)
    assert len(got) == len(expected) == len(jax.tree.leaves(case.kernel)) > 0
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case_id", ["rbf_ard", "matern52", "rq", "product_poly_rq"])
def test_hyper_grad_of_the_gradient_kernel_matches_finite_differences(case_id, rng):
    case = next(c for c in CASES if c.id == case_id)
    X, Y = sample_points(rng, 3, case.dim()), sample_points(rng, 2, case.dim())
    got = jax.tree.leaves(kg.hyper_grad(case.kernel, X, Y, gradients=True))
    expected = _central_difference(case.kernel, X, Y, gradients=True)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)


def test_hyper_grad_is_shaped_like_the_kernel():
    k = kg.RBF(variance=2.0, lengthscale=np.array([1.0, 2.0])) * kg.Polynomial(2, 0.5)
    dK = kg.hyper_grad(k, np.zeros((3, 2)), np.ones((4, 2)))
    assert isinstance(dK, kg.Product) and dK.k2.degree == 2
    assert dK.k1.variance.shape == (3, 4) and dK.k1.lengthscale.shape == (3, 4, 2)
    assert dK.k2.offset.shape == (3, 4)
    # K = v exp(...), so dK/dv = K / v.
    np.testing.assert_allclose(dK.k1.variance, kg.gram(k, np.zeros((3, 2)), np.ones((4, 2))) / 2.0)


# --------------------------------------------------------------------------- fitting


def sample_prior(kernel, n, d, value_noise, gradient_noise, seed):
    """Values and gradients at n uniform points, jointly from the GP prior, plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, size=(n, d))
    A = brute_joint_covariance(kernel, X, X)
    f = np.linalg.cholesky(A + 1e-10 * np.eye(len(A))) @ rng.normal(size=len(A))
    y = f[:n] + np.sqrt(value_noise) * rng.normal(size=n)
    G = f[n:].reshape(n, d) + np.sqrt(gradient_noise) * rng.normal(size=(n, d))
    return X, y, G


def test_fit_recovers_a_known_lengthscale_within_ten_percent():
    """50 noisy value-and-gradient observations in 2-D from an RBF prior with l = 0.6."""
    truth = kg.RBF(variance=1.0, lengthscale=0.6)
    X, y, G = sample_prior(truth, 50, 2, 1e-2, 1e-2, seed=0)
    start = kg.GradientGP(kg.RBF(variance=0.5, lengthscale=1.5), 0.1, 0.1)
    result = kg.fit(start, X, y, G, steps=400, learning_rate=0.05)
    lengthscale = float(result.gp.kernel.lengthscale)
    assert abs(lengthscale - 0.6) / 0.6 < 0.10, lengthscale
    assert result.losses[-1] < result.losses[0]
    # The fit beats the starting point on the objective it reports.
    lml = result.gp.log_marginal_likelihood(X, y, G)
    assert lml > start.log_marginal_likelihood(X, y, G)
    np.testing.assert_allclose(-lml / 150, result.losses[-1], rtol=1e-3)


def test_fit_keeps_fixed_noise_and_trains_the_rest(data):
    X, y, G, _ = data
    start = kg.GradientGP(kg.RBF(lengthscale=0.5) + kg.Polynomial(1, 0.0), 1e-2, 1e-2)
    result = kg.fit(start, X, y, G, steps=20, learning_rate=0.3, fixed=("gradient_noise",))
    assert float(result.gp.gradient_noise) == 1e-2
    assert float(result.gp.kernel.k2.offset) == 0.0  # zero has no log: held fixed
    # The trained leaves moved, and they moved downhill.
    assert float(result.gp.value_noise) != 1e-2
    assert float(result.gp.kernel.k1.lengthscale) != 0.5
    assert result.losses[-1] < result.losses[0]
    again = kg.GradientGP(result.gp.kernel, result.gp.value_noise, 1e-2)
    assert -float(again.log_marginal_likelihood(X, y, G)) < -float(
        start.log_marginal_likelihood(X, y, G)
    )
    with pytest.raises(ValueError, match="fixed takes"):
        kg.fit(start, X, y, G, steps=1, fixed=("lengthscale",))


def test_gradient_observations_need_a_twice_differentiable_kernel(data):
    X, y, G, Xs = data
    gp = kg.GradientGP(kg.Matern32(), 1e-3, 1e-3)
    with pytest.raises(ValueError, match="not twice differentiable"):
        gp.condition(X, y, G)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isfinite(gp.condition(X, y).mean(Xs)))  # values alone are fine


def test_observation_shapes_are_checked(data):
    X, y, G, _ = data
    gp = kg.GradientGP(kg.RBF())
    with pytest.raises(ValueError, match=r"G \(the gradients\) must have shape \(12, 2\)"):
        gp.condition(X, y, G[:, :1])
    with pytest.raises(ValueError, match=r"y must have shape \(12,\)"):
        gp.condition(X, y[:5], G)
    with pytest.raises(ValueError, match="positive"):
        kg.GradientGP(kg.RBF(), value_noise=0.0)
