"""Conjugate gradients by float32 solves refined in float64 (``mixed_precision=True``).

The reference is the textbook solve on the brute-force joint covariance
(``references.brute_joint_covariance``, from ``jax.hessian`` of the pair function) in NumPy:
it shares no code with the solver it checks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from kernel_table import sample_points
from references import brute_joint_covariance

import kernelgrad as kg


def _problem(rng, n, d):
    X = sample_points(rng, n, d)
    return X, np.sin(X).sum(1), np.cos(X)


@pytest.mark.parametrize("tol", [1e-6, 1e-11])
def test_mixed_precision_meets_tol_on_the_float64_residual(rng, tol):
    X, y, G = _problem(rng, 40, 3)
    kernel = kg.RBF(lengthscale=1.3)
    post = kg.GradientGP(kernel, 1e-3, 1e-3).condition(
        X, y, G, method="cg", tol=tol, mixed_precision=True
    )
    info = post.cg_info
    assert info.refinements >= 1 and info.relative_residual <= tol, info
    # The residual of the reference system, recomputed here in NumPy.
    A = brute_joint_covariance(kernel, X, X) + 1e-3 * np.eye(X.shape[0] * (X.shape[1] + 1))
    b = np.concatenate([y, G.ravel()])
    assert np.linalg.norm(A @ post.weights - b) <= 1.01 * tol * np.linalg.norm(b)


def test_float64_cg_finishes_where_float32_stalls(rng):
    """Noise 1e-5 on a smooth 2-D kernel: float32 CG stalls far above tol = 1e-8."""
    X, y, G = _problem(rng, 30, 2)
    gp = kg.GradientGP(kg.RBF(lengthscale=1.5), 1e-5, 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "stopped after" warning: it converged
        mixed = gp.condition(X, y, G, method="cg", tol=1e-8, maxiter=3000, mixed_precision=True)
    assert mixed.cg_info.refinements >= 1 and mixed.cg_info.relative_residual <= 1e-8
    plain = gp.condition(X, y, G, method="cg", tol=1e-8, maxiter=3000)
    assert plain.cg_info.refinements == 0
    Xs = sample_points(rng, 5, 2)
    np.testing.assert_allclose(mixed.mean(Xs), plain.mean(Xs), rtol=1e-6, atol=1e-7)


def test_float32_data_and_other_methods_ignore_it(rng):
    X, y, G = _problem(rng, 20, 2)
    gp = kg.GradientGP(kg.RBF(), 1e-3, 1e-3)
    f32 = [a.astype(np.float32) for a in (X, y, G)]
    assert gp.condition(*f32, method="cg", tol=1e-4, mixed_precision=True).cg_info.refinements == 0
    assert gp.condition(X, y, G, method="cholesky", mixed_precision=True).cg_info is None


def test_a_bad_mixed_precision_is_refused(rng):
    X, y, G = _problem(rng, 5, 2)
    with pytest.raises(TypeError, match="mixed_precision must be True or False"):
        kg.GradientGP(kg.RBF()).condition(X, y, G, method="cg", mixed_precision="yes")


def test_cg_with_and_without_cached_coefficients_agree(rng, policy_with):
    X, y, G = _problem(rng, 40, 3)
    gp = kg.GradientGP(kg.Matern52(lengthscale=1.1), 1e-3, 1e-3)
    # One preconditioner for both ("auto" takes Jacobi where nothing may be cached).
    cached = gp.condition(X, y, G, method="cg", tol=1e-10, preconditioner="jacobi")
    policy_with(cached_coefficients_max_bytes=0)
    tiled = gp.condition(X, y, G, method="cg", tol=1e-10, preconditioner="jacobi")
    np.testing.assert_allclose(cached.weights, tiled.weights, rtol=1e-7, atol=1e-9)
