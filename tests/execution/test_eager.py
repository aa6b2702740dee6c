"""The lean eager paths: when they apply, they agree with every other mode.

``kg.grad``, ``kg.gram`` and ``kg.grad_sum`` on small NumPy problems try
:mod:`kernelgrad.execution.eager` first. These tests pin down which kernels and inputs take that
path, and that its answers match forward-mode AD (and, for the Gram matrix, the pair function
itself) on every kernel of the shared table, in both dtypes and at r = 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import CASES, sample_points

import kernelgrad as kg
from kernelgrad.execution import eager

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
    fast = eager.grad(case.kernel, x, points)
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
    assert eager.grad(k, X[0], X) is not None
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
        assert eager.grad(*args) is None, what


def test_errors_still_come_from_the_general_path(rng):
    X = sample_points(rng, 20, 3, np.float64)
    with pytest.raises(ValueError, match="shape"):
        kg.grad(kg.RBF(), X[0, :2], X)
    with pytest.raises(ValueError, match="mode"):
        kg.grad(kg.RBF(), X[0], X, mode="sideways")


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("one_dim", [True, False], ids=["1d", "nd"])
def test_eager_gram_and_grad_sum_match_other_modes(case, one_dim, dtype, rng):
    d = 1 if one_dim else case.dim()
    if not case.accepts(d) or (one_dim and case.dims == 1):
        pytest.skip("the kernel fixes d")
    X = sample_points(rng, 40, d, dtype)
    X[7] = X[3]  # a duplicate pair: r = 0 is in the result
    Y = sample_points(rng, 30, d, dtype)
    w = rng.normal(size=30).astype(dtype)
    points, others = (X[:, 0], Y[:, 0]) if one_dim else (X, Y)
    fast_k = eager.gram(case.kernel, points, others)
    fast_g = eager.grad_sum(case.kernel, points, others, w)
    fast_self = eager.grad_sum(case.kernel, points, None, None)
    for fast in (fast_k, fast_g, fast_self):
        assert (fast is not None) == _takes_fast_path(case.kernel)
    if fast_k is None:
        pytest.skip("this kernel takes the general path")
    # References that share no code with the eager path: the pair function itself for K,
    # forward-mode AD of it for the grad maps.
    K = np.asarray(
        kg.gram(case.kernel, points.astype(np.float64), others.astype(np.float64), mode="forward")
    )
    G = kg.grad_sum(
        case.kernel,
        points.astype(np.float64),
        others.astype(np.float64),
        w.astype(np.float64),
        mode="forward",
    )
    G_self = kg.grad_sum(case.kernel, points.astype(np.float64), mode="forward")
    for fast, ref in ((fast_k, K), (fast_g, G), (fast_self, G_self)):
        assert type(fast) is np.ndarray and fast.dtype == dtype and fast.shape == ref.shape
        scale = max(float(np.max(np.abs(ref))), 1.0)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=30 * TOL[dtype] * scale)
    # The public calls take this path and return exactly its answers.
    np.testing.assert_array_equal(kg.gram(case.kernel, points, others), fast_k)
    np.testing.assert_array_equal(kg.grad_sum(case.kernel, points, others, w), fast_g)


def test_eager_pairwise_paths_decline_what_they_do_not_handle(rng):
    X = sample_points(rng, 20, 3, np.float64)
    w = np.ones(20)
    k = kg.RBF(lengthscale=0.9)
    assert eager.gram(k, X, X) is not None and eager.grad_sum(k, X, X, w) is not None
    big = sample_points(rng, 2000, 3, np.float64)
    declined = {
        "JAX points": (k, jnp.asarray(X), None),
        "mixed dtypes": (k, X.astype(np.float32), X),
        "mixed d": (k, X, X[:, :2]),
        "1-D against 2-D": (k, X[:, 0], X),
        "no points": (k, X[:0], None),
        "too many pairs for eager": (k, big, None),
        "ARD lengthscales": (kg.RBF(lengthscale=[1.0, 2.0, 3.0]), X, None),
        "a composite": (k + kg.Matern32(), X, None),
        "a Python list": (k, X.tolist(), None),
    }
    for what, (kernel, A, B) in declined.items():
        assert eager.gram(kernel, A, B) is None, what
        assert eager.grad_sum(kernel, A, B, None) is None, what
    for what, weights in {"float32 weights": w.astype(np.float32), "wrong length": w[:5]}.items():
        assert eager.grad_sum(k, X, None, weights) is None, what


def test_hyperparameters_are_private_read_only_copies():
    # The eager path memoises a kernel's constants: editing the caller's array afterwards
    # must not change the kernel (and so can never leave the memo stale).
    ell = np.array(0.5)
    k = kg.RBF(lengthscale=ell)
    X = np.linspace(-1.0, 1.0, 5)
    before = kg.gram(k, X)
    ell[...] = 5.0
    np.testing.assert_array_equal(kg.gram(k, X), before)
    with pytest.raises(ValueError, match="read-only"):
        k.lengthscale[...] = 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factorised_rbf_grad_map_and_its_fallback(dtype, rng):
    """An RBF grad map in d > 1 runs as a_i a_j exp(z_i . z_j); a point too far from the
    centre (exp would overflow) sends the call back to the difference form. Both agree
    with the textbook formula in NumPy float64 (references.rbf_closed_form), points 1e4
    from the origin included (the centre takes the offset out)."""
    from references import rbf_closed_form

    k = kg.RBF(variance=1.7, lengthscale=0.8)
    c = eager._constants(k)
    reach = {np.float32: 8.9, np.float64: 25.3}[dtype] * 0.8  # |z| = 8.9 or 25.3 lengthscales
    near = (rng.normal(size=(60, 3)) + 1e4 * (dtype == np.float64)).astype(dtype)
    near[7] = near[3]  # r = 0 in the sums
    far = near.copy()
    far[0] = far[1:].mean(axis=0) + 1.1 * reach  # past the range, as centred on the mean
    Y = near[:45]
    w = rng.normal(size=45).astype(dtype)
    for X, factorised in ((near, True), (far, False)):
        assert (eager._gaussian_points(c, X, X) is not None) == factorised
        for Yi, wi in ((None, None), (Y, w)):
            G = eager.grad_sum(k, X, Yi, wi)
            Y64 = X if Yi is None else Yi
            w64 = np.ones(len(Y64)) if wi is None else wi
            expected = rbf_closed_form(X, Y64, w64, 1.7, 0.8)[2]
            scale = max(float(np.max(np.abs(expected))), 1.0)
            np.testing.assert_allclose(G, expected, rtol=0, atol=30 * TOL[np.dtype(dtype)] * scale)


def test_the_factorised_rbf_grad_map_runs_eagerly_to_its_own_limit(rng):
    """Where the policy's lean_gaussian_grad_sum_max_pairs says (d >= 3 up to the tiled
    threshold, d = 2 up to a smaller size), and not past it; a far point at a size beyond
    the difference form's own limit goes to the compiled program. Each gives the textbook
    values."""
    from references import rbf_closed_form

    k = kg.RBF(lengthscale=0.9)
    in_3d, in_2d = kg.policy.current().lean_gaussian_grad_sum_max_pairs
    side_3d, side_2d = int(np.sqrt(in_3d)), int(np.sqrt(in_2d))
    cases = {
        "d=3 at the limit": (rng.normal(size=(side_3d, 3)), "eager"),
        "d=2 at the limit": (rng.normal(size=(side_2d, 2)), "eager"),
        "d=2 past it": (rng.normal(size=(side_2d + 1, 2)), "dense"),
        "d=1 (difference form)": (rng.normal(size=(side_2d, 1)), "dense"),
    }
    far = rng.normal(size=(600, 3))
    far[0] = 40.0  # |z| > 25 lengthscales from the centre: exp(z_i . z_j) could overflow
    cases["far point"] = (far, "dense")
    for name, (X, engine) in cases.items():
        assert kg.explain("grad_sum", k, X).engine == engine, name
        expected = rbf_closed_form(X, X, np.ones(len(X)), 1.0, 0.9)[2] if len(X) <= 600 else None
        if expected is not None:
            np.testing.assert_allclose(
                kg.grad_sum(k, X), expected, rtol=0, atol=1e-12, err_msg=name
            )


@pytest.mark.parametrize("d", [1, 3])
def test_explain_does_not_promise_the_eager_grad_for_a_nan_point(d, rng):
    """explain answers as the call does: a NaN point leaves the eager grad (which checks
    d > 1 points on its squared distances) for the general path, which names it."""
    Y = rng.normal(size=(50, d)) if d > 1 else rng.normal(size=50)
    x = Y[0].copy()
    assert kg.explain("grad", kg.RBF(), x, Y).engine == "eager"
    Y[7] = np.nan
    for call in (kg.explain, lambda op, *args: getattr(kg, op)(*args)):
        with pytest.raises(ValueError, match="non-finite value"):
            call("grad", kg.RBF(), x, Y)
    assert kg.explain("grad", kg.RBF(), x, Y, check_finite=False).engine == "eager"
