"""The symmetric blockwise grad_sum (Y = X) against the dense closed form and forward AD."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import sample_points, select

import kernelgrad as kg
from kernelgrad.execution import symmetric


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
    assert symmetric.applies(n, d)
    calls = []
    run = symmetric.run
    monkeypatch.setattr(symmetric, "run", lambda *args: calls.append(1) or run(*args))
    X = rng.normal(size=(n, d))
    X[11] = X[3000]  # duplicate points: Matern 1/2's zero subgradient, never a NaN
    w = rng.normal(size=n)
    out = kg.grad_sum(kernel, X, weights=w)
    other = kg.grad_sum(kernel, X, X.copy(), weights=w)
    forward = kg.grad_sum(kernel, X, weights=w, mode="forward")
    scale = np.max(np.abs(forward))
    assert calls and out.shape == (n, d) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, forward, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(out, other, rtol=0, atol=1e-12 * scale)
