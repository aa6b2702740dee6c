"""The eager single-point gradient: when it applies, it agrees with every other mode.

``kg.grad`` on NumPy points tries :mod:`kernelgrad.eager_grad` first. These tests pin down
which kernels and inputs take that path, and that its answers match forward-mode AD and the
general closed form on every kernel of the shared table, in both dtypes and at r = 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import CASES, sample_points

import kernelgrad as kg
from kernelgrad import eager_grad

TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}


def _takes_fast_path(kernel) -> bool:
    """The kernels the fast path is built for: one stationary kernel, one lengthscale."""
    return isinstance(kernel, kg.AbstractStationaryKernel) and np.ndim(kernel.lengthscale) == 0


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("one_dim", [True, False], ids=["1d", "nd"])
def test_fast_path_matches_forward_mode(case, one_dim, dtype, rng):
    d = 1 if one_dim else case.dim()
    if not case.accepts(d) or (one_dim and case.dims == 1):
        pytest.skip("the kernel fixes d")
    X = sample_points(rng, 40, d, dtype)
    X[7] = X[3]  # a duplicate of x: r = 0 is in the result
    points = X[:, 0] if one_dim else X
    x = points[3]
    fast = eager_grad.grad(case.kernel, x, points)
    assert (fast is not None) == _takes_fast_path(case.kernel)
    out = kg.grad(case.kernel, x, points)
    reference = kg.grad(case.kernel, x, points, mode="forward")
    assert type(out) is np.ndarray and out.dtype == dtype and out.shape == reference.shape
    scale = max(float(np.max(np.abs(reference))), 1.0)
    np.testing.assert_allclose(out, reference, rtol=0, atol=TOL[dtype] * scale)
    if fast is not None:
        np.testing.assert_array_equal(fast, out)
        # The duplicate point's derivative is exactly zero (a zero subgradient for Matern 1/2).
        assert np.all(fast[7] == 0)


def test_fast_path_declines_what_it_does_not_handle(rng):
    X = sample_points(rng, 20, 3, np.float64)
    k = kg.RBF(lengthscale=0.9)
    assert eager_grad.grad(k, X[0], X) is not None
    declined = {
        "JAX points": (k, jnp.asarray(X[0]), jnp.asarray(X)),
        "mixed dtypes": (k, X[0].astype(np.float32), X),
        "wrong x shape": (k, X[0, :2], X),
        "no points": (k, X[0], X[:0]),
        "integer points": (k, X[0].astype(int), X.astype(int)),
        "ARD lengthscales": (kg.RBF(lengthscale=[1.0, 2.0, 3.0]), X[0], X),
        "a composite": (k + kg.Matern32(), X[0], X),
        "a pair function": (kg.kernel(lambda x, y: jnp.dot(x, y)), X[0], X),
        "a Python list": (k, X[0], X.tolist()),
    }
    for what, args in declined.items():
        assert eager_grad.grad(*args) is None, what


def test_errors_still_come_from_the_general_path(rng):
    X = sample_points(rng, 20, 3, np.float64)
    with pytest.raises(ValueError, match="shape"):
        kg.grad(kg.RBF(), X[0, :2], X)
    with pytest.raises(ValueError, match="mode"):
        kg.grad(kg.RBF(), X[0], X, mode="sideways")
