"""The symmetric blockwise grad_sum (Y = X) against the dense closed form and forward AD."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import sample_points, select
from references import rbf_closed_form

import kernelgrad as kg
from kernelgrad.execution import gaussian, symmetric


@pytest.mark.parametrize("case", select(lambda c: c.closed), ids=repr)
def test_blocks_match_the_dense_closed_form(case, rng):
    """Small blocks (8 rows, 5 x 5 block pairs) on every closed-form kernel, float64."""
    d = case.dim()
    with jax.enable_x64(True):
        X = jnp.asarray(sample_points(rng, 40, d, np.float64))
        X = X.at[7].set(X[3])  # a duplicate pair across two blocks
        w = jnp.asarray(rng.normal(size=40))
        blocked = symmetric.grad_sum(case.kernel, X, w, block=8)
        dense = kg.grad_sum(case.kernel, X, weights=w, mode="closed")  # 40 points: unsymmetric
        assert blocked.shape == (40, d)
        np.testing.assert_allclose(blocked, dense, rtol=1e-12, atol=1e-12 * jnp.max(abs(dense)))


@pytest.mark.parametrize(
    "kernel", [kg.RBF(lengthscale=0.4), kg.Matern12(), kg.Linear() * kg.Matern52()], ids=repr
)
def test_transform_takes_the_symmetric_path_above_its_threshold(kernel, rng, monkeypatch):
    """A ragged n (not a multiple of the block) through kg.grad_sum, checked against forward
    AD and against the same points passed as a separate Y (which cannot use symmetry)."""
    d, n = 3, kg.policy.current().symmetric_min_points + 37
    X = rng.normal(size=(n, d))
    assert symmetric.applies(kernel, X)
    calls = []
    run = symmetric.run
    monkeypatch.setattr(symmetric, "run", lambda *args: calls.append(1) or run(*args))
    X[11] = X[3000]  # duplicate points: Matern 1/2's zero subgradient, never a NaN
    w = rng.normal(size=n)
    out = kg.grad_sum(kernel, X, weights=w)
    other = kg.grad_sum(kernel, X, X.copy(), weights=w)
    forward = kg.grad_sum(kernel, X, weights=w, mode="forward")
    scale = np.max(np.abs(forward))
    assert calls and out.shape == (n, d) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, forward, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(out, other, rtol=0, atol=1e-12 * scale)


GAUSSIAN = [kg.RBF(), kg.RBF(variance=2.5, lengthscale=np.array([0.8, 1.0, 2.0]))]


def _textbook_grad_sum(kernel, X, w):
    return rbf_closed_form(X, X, w, float(kernel.variance), kernel.lengthscale)[2]


@pytest.mark.parametrize("kernel", GAUSSIAN, ids=["rbf", "rbf_ard"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_the_gaussian_factorisation_matches_the_textbook_formula(kernel, dtype, rng):
    """a_i a_j exp(z_i . z_j) blocks (8 rows, 6 x 6 block pairs), a duplicate point across
    two blocks, points up to 4 lengthscales out: the same as the textbook RBF grad map."""
    with jax.enable_x64(dtype == np.float64):
        X = rng.normal(size=(48, 3))
        X[9] = X[40]
        w = rng.normal(size=48)
        assert gaussian.factorises(kernel, X.astype(dtype))
        out = symmetric.gaussian_grad_sum(
            kernel, jnp.asarray(X, dtype), jnp.asarray(w, dtype), block=8
        )
    brute = _textbook_grad_sum(kernel, X, w)
    tol = 1e-13 if dtype == np.float64 else 2e-5
    assert out.dtype == dtype
    np.testing.assert_allclose(out, brute, rtol=0, atol=tol * np.max(np.abs(brute)))


def test_the_factorisation_is_refused_where_exp_could_overflow(rng):
    """Not for other profiles, nor for a point 40 lengthscales from the centre (float64) or
    10 (float32), where exp(z_i . z_j) could overflow; the engine's answer stays exact."""
    X = rng.normal(size=(1500, 3))
    assert gaussian.factorises(kg.RBF(), X)
    assert not gaussian.factorises(kg.Matern52(), X)
    assert not gaussian.factorises(kg.RBF() + kg.RBF(lengthscale=2.0), X)

    def under_a_transform(lengthscale):  # traced hyperparameters: their range is unknown
        assert not gaussian.factorises(kg.RBF(lengthscale=lengthscale), X)
        return lengthscale

    jax.jit(under_a_transform)(1.0)
    far = X.copy()
    far[0] = [40.0, 0.0, 0.0]
    assert not gaussian.factorises(kg.RBF(), far)
    assert gaussian.factorises(kg.RBF(lengthscale=2.0), far)  # 20 lengthscales
    assert not gaussian.factorises(kg.RBF(), (far / 4).astype(np.float32))
    out = kg.grad_sum(kg.RBF(), far)
    np.testing.assert_allclose(out, _textbook_grad_sum(kg.RBF(), far, np.ones(1500)), atol=1e-12)


def test_an_rbf_takes_the_gaussian_symmetric_path_from_its_threshold(rng, monkeypatch):
    """kg.grad_sum on RBF points from symmetric_gaussian_min_points (ragged n) runs the
    factorised blocks and equals forward AD; below it, and in d = 1 and 2, it does not."""
    chosen = kg.policy.current()
    n = chosen.symmetric_gaussian_min_points + 5
    assert n < chosen.symmetric_min_points  # the Gaussian threshold is the earlier one
    X, w = rng.normal(size=(n, 3)), rng.normal(size=n)
    assert not symmetric.applies(kg.RBF(), X[: n - 10])
    assert not symmetric.applies(kg.RBF(), X[:, :1])
    assert not symmetric.applies(kg.RBF(), X[:, :2])  # d = 2: the factorised tiles are faster
    assert not symmetric.applies(kg.RBF(), np.tile(X[:, :2], (4, 1)))
    assert symmetric.applies(kg.Matern52(), np.tile(X[:, :2], (4, 1)))  # the general threshold
    assert not symmetric.applies(kg.Matern52(), X)
    calls = []
    compiled = symmetric._compiled
    monkeypatch.setattr(symmetric, "_compiled", lambda *a: calls.append(a[-1]) or compiled(*a))
    kernel = kg.RBF(lengthscale=0.7)
    out = kg.grad_sum(kernel, X, weights=w)
    assert calls == [True]
    forward = kg.grad_sum(kernel, X, weights=w, mode="forward")
    np.testing.assert_allclose(out, forward, rtol=0, atol=1e-12 * np.max(np.abs(forward)))
