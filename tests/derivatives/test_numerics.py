"""Numerical traps: r = 0, negative squared distances, float32 at realistic sizes.

Expected values are derived in each test's docstring; references are float64 NumPy written
out from the kernel formulas, or the kernel's own pair function under a local x64 context.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from kernel_table import BY_ID, select

import kernelgrad as kg
from kernelgrad.derivatives import terms

ALL_MODES = ("closed", "forward", "reverse", "auto")

#: Kernels whose input gradient exists at r = 0, with the kernel table's ARD variants.
SMOOTH_AT_ZERO = ["rbf", "matern32", "matern52", "rq", "rbf_ard", "matern32_ard", "rq_ard"]


def _with_duplicates(d, dtype=np.float64):
    """Rows 0, 1 and 3 coincide; row 2 is elsewhere: (4, d)."""
    rng = np.random.default_rng(11)
    base, other = rng.uniform(-1, 1, (2, d))
    return np.stack([base, base, other, base]).astype(dtype)


# --------------------------------------------------------------------------- r = 0


DUPLICATE_CASES = [
    *[(case_id, "numpy") for case_id in (*SMOOTH_AT_ZERO, "matern12", "periodic", "pair_rbf")],
    *[(case_id, "jax") for case_id in ("rbf", "matern32", "matern12", "rq_ard")],
]


@pytest.mark.parametrize("case_id, kind", DUPLICATE_CASES)
def test_gradients_at_duplicate_points_are_finite_and_zero(case_id, kind):
    """At x = y a stationary kernel peaks, so d/dx k(x, y) = 0 there (Matern 1/2: by convention).

    Checked in every mode, on the Jacobian, the single-point gradient and the grad map over
    columns that all coincide with the row.
    """
    case = BY_ID[case_id]
    X = _with_duplicates(case.dim(), np.float32 if kind == "jax" else np.float64)
    if kind == "jax":
        X = jnp.asarray(X)
    dup = X[np.array([0, 1, 3])]
    for mode in ("closed", "forward", "reverse") if case.closed else ("forward", "reverse"):
        J = np.asarray(kg.jacobian(case.kernel, X, mode=mode))
        g = np.asarray(kg.grad(case.kernel, X[0], X, mode=mode))
        G = np.asarray(kg.grad_sum(case.kernel, dup, mode=mode))
        for name, value in (("jacobian", J), ("grad", g), ("grad_sum", G)):
            assert np.all(np.isfinite(value)), f"{name}, mode={mode}: {value}"
        for i in (0, 1, 3):
            for j in (0, 1, 3):
                assert np.all(J[i, j] == 0), f"J[{i}, {j}], mode={mode}: {J[i, j]}"
        assert np.all(g[[0, 1, 3]] == 0), f"grad, mode={mode}"
        assert np.all(G == 0), f"grad_sum, mode={mode}: {G}"
        # Row 2 is away from the others: its gradient is not zero (the test can fail).
        assert np.any(J[2, 0] != 0), f"mode={mode}"


@pytest.mark.parametrize("case_id", SMOOTH_AT_ZERO)
def test_jax_ad_of_the_pair_call_is_finite_at_r_zero(case_id):
    """Plain JAX AD of k(x, y) at x = y: finite (no sqrt(0) NaN), zero, to first order."""
    k = BY_ID[case_id].kernel
    x = jnp.asarray(_with_duplicates(BY_ID[case_id].dim())[0], jnp.float32)
    for transform in (jax.grad, jax.jacfwd, jax.jacrev):
        g = transform(k)(x, x)
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g) == 0), transform.__name__


def test_matern12_takes_the_zero_subgradient_at_r_zero_and_documents_it():
    """d/dx v exp(-|x - y| / l) = -(v / l) sign(x - y) exp(-|x - y| / l) in 1-D.

    The one-sided limits at x = y are -v/l (from the right) and +v/l (from the left); their
    midpoint 0 is the convention at r = 0, in every mode.
    """
    assert "subgradient" in kg.Matern12.__doc__
    v, l, h = 1.2, 1.1, 1e-6
    k = kg.Matern12(variance=v, lengthscale=l)
    y = np.array([0.3])
    X = np.array([y[0] + h, y[0] - h, y[0]])
    right, left = X[0] - y[0], y[0] - X[1]  # h, as rounded in floating point
    for mode in ALL_MODES:
        J = kg.jacobian(k, X, y, mode=mode)[:, 0]
        expected = [-(v / l) * math.exp(-right / l), (v / l) * math.exp(-left / l), 0.0]
        np.testing.assert_allclose(J, expected, rtol=1e-12, atol=0, err_msg=mode)
        assert 0.5 * (J[0] + J[1]) == pytest.approx(J[2], abs=1e-9)


@pytest.mark.parametrize(
    "d, mode",
    [
        (1, "closed"),
        (20, "forward"),
        (20, "reverse"),
        (20, "closed"),
    ],
)
def test_matern12_slope_at_distinct_near_duplicates(d, mode):
    """For x != y, d/dx v exp(-r / l) = -(v / l) exp(-r / l) (x - y) / r: magnitude v / l
    however small r is. Only r = 0 exactly takes the zero subgradient.
    """
    v, l = 0.5, 0.7
    k = kg.Matern12(variance=v, lengthscale=l)
    x = np.random.default_rng(8).uniform(-2.0, 2.0, d)
    y = x.copy()
    y[0] += 1e-7
    r = float(np.linalg.norm(x - y))
    expected = -(v / l) * math.exp(-r / l) * (x - y) / r
    # Two more points away from x, so that the centre is not y itself.
    Y = np.stack([y, x + 1.0, x - 2.5])
    J = kg.jacobian(k, x[None], Y, mode=mode)[0, 0]
    np.testing.assert_allclose(J, expected, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------- squared distances


def _hard_points(d, dtype, offset, rng):
    """Points at a large offset, with exact and near duplicates (one ulp of the offset)."""
    X = offset + rng.normal(size=(40, d)) * 0.5
    X[1] = X[0]
    X[2] = X[0] + 4 * np.finfo(dtype).eps * max(offset, 1.0)
    X[3] = np.nextafter(X[0].astype(dtype), np.inf)
    return X.astype(dtype)


@pytest.mark.parametrize("d", [3, 20])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_squared_distances_are_never_negative(xp, offset, dtype, d, rng):
    """s >= 0 everywhere, s = 0 on the diagonal, and s within a round-off bound of exact.

    d = 20 takes the expansion |x|^2 + |y|^2 - 2 x.y (one matmul), which cancels; d = 3 takes
    per-dimension differences. The library feeds the function centred points; here it is also
    fed the raw points at the large offset, where the expansion cancels worst.
    """
    assert terms.expands(np, d) == (d == 20), "d = 20 must use the expansion"
    X = _hard_points(d, dtype, offset, rng)
    X64 = X.astype(np.float64)
    exact = np.sum((X64[:, None, :] - X64[None, :, :]) ** 2, axis=-1)
    eps = np.finfo(dtype).eps
    with jax.enable_x64(dtype == np.float64):
        weights = xp.asarray(1.0 / 0.7**2, dtype)
        for label, (A, B) in {
            "raw": (X, X),
            "centred": terms.centre(np, X, X),
        }.items():
            A, B = xp.asarray(A), xp.asarray(B)
            s = np.asarray(terms.squared_distance(xp, A, B, A, B, weights))
            assert s.dtype == dtype
            assert np.all(s >= 0), f"{label}: min {s.min()}"
            assert np.all(np.diag(s) == 0), f"{label}: diag {np.diag(s).max()}"
            # Round-off of the expansion is a few eps times the squared norms involved.
            norms = np.sum(np.asarray(A, np.float64) ** 2, axis=1)
            bound = 64 * d * eps * (norms[:, None] + norms[None, :] + exact) / 0.7**2
            assert np.all(np.abs(s - exact / 0.7**2) <= bound), label


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("d", [3, 20])
def test_kernels_never_exceed_their_variance_at_near_duplicates(d, kind, rng):
    """A negative s would push RBF above v and make Matern's sqrt NaN; neither happens."""
    X = _hard_points(d, np.float32, 1e3, rng)
    if kind == "jax":
        X = jnp.asarray(X)
    for k in (kg.RBF(variance=1.5), kg.Matern12(variance=1.5), kg.Matern52(variance=1.5)):
        K = np.asarray(kg.gram(k, X))
        assert np.all(np.isfinite(K)), type(k).__name__
        assert np.all(K <= np.float32(1.5)), type(k).__name__
        assert np.all(np.diag(K) == np.float32(1.5)), type(k).__name__


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
@pytest.mark.parametrize("d", [3, 20])
def test_a_nan_coordinate_makes_its_squared_distances_nan(xp, d):
    """NaN is unordered, so it fails the expansion's noise-floor test like a duplicate does.
    It must stay NaN: set to 0 it would make the point a duplicate of every other, with
    k = v in its whole row, a silent wrong answer where nothing checks the points (inside a
    user's jit, or ``check_finite=False``). Both forms, and whole Gram matrices (whose
    centring on the mean may spread the NaN further: NaN in, NaN out)."""
    X = np.random.default_rng(5).normal(size=(40, d))
    X[3, 1] = np.nan
    finite = np.ones(40, bool)
    finite[3] = False
    with jax.enable_x64(True):
        for expand in (False, True):
            A = xp.asarray(X)
            Ac = xp.asarray(X - np.nanmean(X, axis=0))  # centred on the finite points' mean
            s = np.asarray(terms.squared_distance(xp, A, A, Ac, Ac, 1.0, expand=expand))
            assert np.all(np.isnan(s[3])) and np.all(np.isnan(s[:, 3])), expand
            assert np.all(np.isfinite(s[np.ix_(finite, finite)])), expand
        for k in (kg.RBF(), kg.Matern52()):
            K = np.asarray(jax.jit(lambda A, k=k: kg.gram(k, A))(jnp.asarray(X)))
            assert np.all(np.isnan(K[3])) and np.all(np.isnan(K[:, 3])), type(k).__name__
            K = kg.gram(k, X, check_finite=False)
            assert np.all(np.isnan(K[3])) and np.all(np.isnan(K[:, 3])), type(k).__name__


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", select(lambda c: c.stationary))
def test_gram_diagonal_equals_the_variance(case, dtype, kind, rng):
    """k(x, x) = v f(0) = v for every stationary kernel (its total variance for composites)."""
    X = rng.uniform(-2.0, 2.0, (6, case.dim())).astype(dtype)
    with jax.enable_x64(kind == "jax" and dtype == np.float64):
        A = jnp.asarray(X) if kind == "jax" else X
        diag = np.diag(np.asarray(kg.gram(case.kernel, A)))
    assert diag.dtype == dtype
    np.testing.assert_allclose(diag, case.diag, rtol=2 * np.finfo(dtype).eps, atol=0)


# --------------------------------------------------------------------------- float32 at scale


def _reference(name, X, lengthscale):
    """float64 Gram matrix and grad map sum_j dk(x_i, x_j)/dx_i, written out from the formulas.

    RBF: k = exp(-r^2 / (2 l^2)), dk/dx = -k (x - y) / l^2.
    Matern 3/2: k = (1 + a r) exp(-a r) with a = sqrt(3) / l; dk/dr = -a^2 r exp(-a r), so
    dk/dx = dk/dr (x - y) / r = -a^2 exp(-a r) (x - y).

    Also returns the row scale sum_j |dk/dx_ij|, against which a row's error is judged (the sum
    cancels, so its own size says nothing of the precision of its terms).
    """
    X = X.astype(np.float64)
    diffs = [X[:, a, None] - X[None, :, a] for a in range(X.shape[1])]  # d arrays (n, n)
    r = np.sqrt(sum(df * df for df in diffs))
    if name == "rbf":
        K = np.exp(-(r**2) / (2 * lengthscale**2))
        slope = -K / lengthscale**2
    else:
        a = math.sqrt(3) / lengthscale
        K = (1 + a * r) * np.exp(-a * r)
        slope = -(a**2) * np.exp(-a * r)
    G = np.stack([np.sum(slope * df, axis=1) for df in diffs], axis=1)
    scale = np.sum(np.abs(slope) * r, axis=1)
    return K, G, scale


@pytest.mark.parametrize(
    "name, d, mode",
    [
        ("rbf", 3, "closed"),
        ("rbf", 3, "forward"),
        ("rbf", 3, "reverse"),
        ("matern32", 3, "closed"),
        ("rbf", 20, "closed"),  # the expansion form, the forum's float32 trap
    ],
)
def test_float32_at_realistic_size_matches_a_float64_reference(name, d, mode, rng):
    """n = 1000: every row of the float32 grad map and Gram matrix is float32-accurate.

    The forum's vmap(jacfwd) on the expanded |x|^2 + |y|^2 - 2 x.y got 990 of 1000 rows wrong
    at this size; here no row may be off by more than 1e-4 of its row scale.
    """
    n, lengthscale = 1000, 0.8 if d == 3 else 2.5
    X = rng.uniform(-2.0, 2.0, (n, d)).astype(np.float32) + np.float32(10.0)
    k = (kg.RBF if name == "rbf" else kg.Matern32)(lengthscale=lengthscale)
    K_ref, G_ref, scale = _reference(name, X, lengthscale)
    for kind in ("numpy", "jax"):
        A = X if kind == "numpy" else jnp.asarray(X)
        K = np.asarray(kg.gram(k, A, mode=mode))
        G = np.asarray(kg.grad_sum(k, A, mode=mode))
        assert K.dtype == G.dtype == np.float32
        assert np.max(np.abs(K - K_ref)) <= 2e-5, f"{kind}: gram"
        row_err = np.max(np.abs(G - G_ref), axis=1) / scale
        bad = int(np.sum(row_err > 1e-4))
        assert bad == 0, f"{kind}: {bad} of {n} rows wrong (worst {row_err.max():.1e})"


# --------------------------------------------------------------------------- finite differences


CHECKED = [
    ("rbf", "grad_sum", "closed"),
    ("rbf", "jacobian", "reverse"),
    ("matern52_ard", "grad_sum", "forward"),
    ("rq", "jacobian", "closed"),
    ("periodic", "gram", "closed"),
    ("nested", "grad_sum", "reverse"),
    ("product_poly_rq", "grad", "closed"),
    ("pair_forum", "grad_sum", "forward"),
]


@pytest.mark.parametrize("case_id, transform, mode", CHECKED)
def test_transforms_match_finite_differences_in_x(case_id, transform, mode):
    """jax.test_util.check_grads (order 1, forward and reverse) of each transform in X.

    This differentiates *through* the transform (as a user's loss would), and checks both
    the transform's own derivative rules and the values against central differences.
    """
    case = BY_ID[case_id]
    rng = np.random.default_rng(5)
    d = case.dim()
    X, Y = rng.uniform(-1, 1, (4, d)), rng.uniform(-1, 1, (3, d))
    w = rng.normal(size=3)
    with jax.enable_x64(True):
        Yj, wj = jnp.asarray(Y), jnp.asarray(w)
        fn = {
            "gram": lambda A: kg.gram(case.kernel, A, Yj, mode=mode),
            "jacobian": lambda A: kg.jacobian(case.kernel, A, Yj, mode=mode),
            "grad": lambda A: kg.grad(case.kernel, A[0], Yj, mode=mode),
            "grad_sum": lambda A: kg.grad_sum(case.kernel, A, Yj, wj, mode=mode),
        }[transform]
        check_grads(jax.jit(fn), (jnp.asarray(X),), order=1, modes=("fwd", "rev"))
