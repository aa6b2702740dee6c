"""Property tests at the edges: duplicate points, n = 1, d = 1 against d = 20, and lengthscales
from 1e-3 to 1e3.

Shapes are kept few (n, m <= 6 all pad to one size bucket; d is 1 or 20) and the kernel classes
few, because each new combination costs a JAX compile. Inputs are NumPy float64, so every
closed-form result is computed eagerly and every AD result under a local x64 context.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from kernel_table import BY_ID, CASES

import kernelgrad as kg


def _rebuilt(case):
    """The table kernel's class (and RQ's alpha) at drawn hyperparameters."""
    k = case.kernel
    extra = {"alpha": float(k.alpha)} if isinstance(k, kg.RationalQuadratic) else {}
    return lambda variance, lengthscale: type(k)(variance, lengthscale, **extra)


#: The table's single stationary kernels with one lengthscale, rebuilt per example.
KERNELS = {
    case.id: _rebuilt(case)
    for case in CASES
    if case.id in ("rbf", "matern12", "matern32", "matern52", "rq")
}
MODES = ("closed", "forward", "reverse")


#: The table's RBF written as a jax.numpy pair function (lengthscale 0.8), and the built-in
#: RBF it equals.
PAIR_RBF = BY_ID["pair_rbf"].kernel
RBF_08 = kg.RBF(variance=1.0, lengthscale=0.8)


@st.composite
def problems(draw):
    """A kernel and points X (n, d), Y (m, d) drawn, with repeats, from a pool of 3 points.

    Half of the time the points are in units of the lengthscale (so a tiny or huge lengthscale
    meets points at its own scale); otherwise they are O(1) whatever the lengthscale.
    """
    name = draw(st.sampled_from(sorted(KERNELS)))
    d = draw(st.sampled_from([1, 20]))
    lengthscale = draw(st.sampled_from([1e-3, 0.7, 1e3]))
    variance = draw(st.sampled_from([0.5, 2.0]))
    pool = draw(arrays(np.float64, (3, d), elements=st.floats(-2.0, 2.0, width=32)))
    if draw(st.booleans()):
        pool = pool * lengthscale
    n = draw(st.integers(1, 6))
    m = draw(st.integers(1, 6))
    rows = st.lists(st.integers(0, 2), min_size=n, max_size=n)
    X = pool[draw(rows)]
    Y = pool[draw(st.lists(st.integers(0, 2), min_size=m, max_size=m))]
    w = draw(arrays(np.float64, (m,), elements=st.floats(-2.0, 2.0, width=32)))
    return name, KERNELS[name](variance=variance, lengthscale=lengthscale), X, Y, w


def results(k, X, Y, w, mode):
    return {
        "gram": kg.gram(k, X, Y, mode=mode),
        "jacobian": kg.jacobian(k, X, Y, mode=mode),
        "grad": kg.grad(k, X[0], Y, mode=mode),
        "grad_sum": kg.grad_sum(k, X, Y, w, mode=mode),
    }


def natural_scales(k, w):
    """The size of each result for a kernel of variance v and lengthscale l: v for values,
    v / l for gradients (the largest slope of these kernels is of that order), and
    sum_j |w_j| v / l for the weighted grad map.

    Round-off is judged against these as well as against the result itself: the closed
    form's matmul grad map, sum_j c_ij w_j (x_i - y_j) = x_i (C w)_i - (C (w y))_i, cancels,
    and leaves an error of a few eps |x_i - centre| / l times that scale even where the
    exact answer is 0 (a point against its own duplicates).
    """
    v, l = float(k.variance), float(k.lengthscale)
    return {"gram": v, "jacobian": v / l, "grad": v / l, "grad_sum": np.sum(np.abs(w)) * v / l}


def assert_agree(actual, expected, what, natural=0.0, rtol=1e-9):
    """max |actual - expected| <= rtol * max(max |expected|, natural scale)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    scale = max(float(np.max(np.abs(expected), initial=0.0)), natural)
    assert err <= rtol * scale, f"{what}: error {err:.3e} against scale {scale:.3e}"


@given(problems())
def test_every_mode_is_finite_and_agrees_with_every_other(problem):
    name, k, X, Y, w = problem
    by_mode = {mode: results(k, X, Y, w, mode) for mode in MODES}
    for mode, outs in by_mode.items():
        for what, value in outs.items():
            assert np.all(np.isfinite(value)), f"{name} {what} mode={mode}"
    natural = natural_scales(k, w)
    # Matern 1/2's slope is v / l whatever r is, so near duplicates turn round-off in r
    # (eps |x - centre| / r) into relative error of the slope's sign-carrying factor.
    rtol = 1e-7 if name == "matern12" else 1e-9
    for what in by_mode["closed"]:
        reference = by_mode["closed"][what]
        for mode in ("forward", "reverse"):
            where = f"{name} {what}: {mode} vs reference"
            assert_agree(by_mode[mode][what], reference, where, natural[what], rtol)
    # Stationary kernels never exceed their variance, and reach it exactly at duplicates.
    K = by_mode["closed"]["gram"]
    v = float(k.variance)
    assert np.all(K <= v)
    same = np.all(X[:, None, :] == Y[None, :, :], axis=-1)
    assert np.all(K[same] == v)
    # At duplicates the gradient is zero (Matern 1/2: its zero subgradient).
    assert np.all(by_mode["closed"]["jacobian"][same] == 0)


@given(problems())
def test_lengthscale_scaling_law(problem):
    """k_l(x, y) = k_1(x / l, y / l), so d/dx k_l(x, y) = (1 / l) (d/dx k_1)(x / l, y / l).

    Relates results at lengthscales 1e-3 and 1e3 to the unit-lengthscale kernel, in every mode.
    """
    name, k, X, Y, w = problem
    l = float(k.lengthscale)
    unit = KERNELS[name](variance=float(k.variance), lengthscale=1.0)
    Xu, Yu = X / l, Y / l
    natural = natural_scales(k, w)
    for mode in MODES:
        K = kg.gram(k, X, Y, mode=mode)
        assert_agree(K, kg.gram(unit, Xu, Yu, mode="closed"), "gram", natural["gram"])
        expected = kg.grad_sum(unit, Xu, Yu, w, mode="closed") / l
        G = kg.grad_sum(k, X, Y, w, mode=mode)
        assert_agree(G, expected, f"{name} grad_sum, {mode}", natural["grad_sum"])


@given(
    name=st.sampled_from(sorted(KERNELS)),
    d=st.sampled_from([1, 20]),
    lengthscale=st.sampled_from([1e-3, 0.7, 1e3]),
    point=st.floats(-1e3, 1e3, width=32),
    copies=st.integers(1, 5),
)
def test_a_point_against_only_its_own_copies_has_zero_gradient(name, d, lengthscale, point, copies):
    """n = 1 (and its duplicates): the grad map of a single point against itself is 0."""
    k = KERNELS[name](variance=1.0, lengthscale=lengthscale)
    x = np.full((1, d), point)
    for mode in MODES:
        G = kg.grad_sum(k, x, mode=mode)
        assert G.shape == (1, d) and np.all(G == 0), f"{name}, {mode}"
        Gc = kg.grad_sum(k, np.repeat(x, copies, axis=0), mode=mode)
        assert np.all(Gc == 0), f"{name}, {mode}: {Gc}"
        assert np.all(kg.gram(k, x, mode=mode) == 1.0)


@given(
    d=st.sampled_from([1, 20]),
    X=arrays(np.float64, (4, 20), elements=st.floats(-3.0, 3.0, width=32)),
)
def test_a_jax_numpy_pair_function_agrees_with_the_builtin(d, X):
    """The forum's own kernel in d dimensions, written with jax.numpy, in forward and reverse."""
    X = X[:, :d]
    pair, rbf = PAIR_RBF, RBF_08
    n = X.shape[0]  # natural scales: slopes of order 1 / 0.8, unit weights
    for mode in ("forward", "reverse"):
        G, J = kg.grad_sum(pair, X, mode=mode), kg.jacobian(pair, X, mode=mode)
        assert_agree(G, kg.grad_sum(rbf, X), f"{mode} vs RBF", natural=n)
        assert_agree(J, kg.jacobian(rbf, X), f"{mode} jacobian", natural=1.0)
