"""Kernels: construction errors, the documented formulas, composition and pair functions.

Every expected value here is the kernel's formula written out in NumPy float64 from the
docstrings and README (scikit-learn / GPyTorch conventions), never a number copied from a run.
Each kernel is checked three ways: its own pair call ``k(x, y)``, the closed-form Gram matrix
(eager NumPy rules) and the AD Gram matrix (``mode="forward"``, batched pair calls in JAX).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from kernel_table import BY_ID, CASES, sample_points, select
from references import assert_close, brute_cross_hessian, dense_gram, pairwise_jacobian

import kernelgrad as kg

# --------------------------------------------------------------------------- construction


BAD_BUILDS = {
    "rbf_lengthscale_zero": (lambda: kg.RBF(lengthscale=0.0), "lengthscale"),
    "rbf_lengthscale_negative": (lambda: kg.RBF(lengthscale=-1.0), "lengthscale"),
    "rbf_lengthscale_nan": (lambda: kg.RBF(lengthscale=np.nan), "lengthscale"),
    "rbf_lengthscale_inf": (lambda: kg.RBF(lengthscale=np.inf), "lengthscale"),
    "ard_one_negative": (lambda: kg.Matern52(lengthscale=[1.0, -0.5, 2.0]), "lengthscale"),
    "ard_matrix": (lambda: kg.RBF(lengthscale=np.ones((2, 2))), "lengthscale"),
    "ard_empty": (lambda: kg.RBF(lengthscale=[]), "lengthscale"),
    "variance_zero": (lambda: kg.Matern32(variance=0.0), "variance"),
    "variance_negative": (lambda: kg.Matern12(variance=-2.0), "variance"),
    "variance_jax_negative": (lambda: kg.RBF(variance=jnp.array(-1.0)), "variance"),
    "linear_variance_zero": (lambda: kg.Linear(variance=0.0), "variance"),
    "rq_alpha_zero": (lambda: kg.RationalQuadratic(alpha=0.0), "alpha"),
    "imq_c_zero": (lambda: kg.InverseMultiquadric(c=0.0), "c"),
    "imq_beta_minus_one": (lambda: kg.InverseMultiquadric(beta=-1.0), r"beta .* \(-1, 0\)"),
    "imq_beta_positive": (lambda: kg.InverseMultiquadric(beta=0.5), r"beta .* \(-1, 0\)"),
    "imq_beta_vector": (lambda: kg.InverseMultiquadric(beta=[-0.5, -0.5]), "beta"),
    "period_zero": (lambda: kg.Periodic(period=0.0), "period"),
    "period_negative": (lambda: kg.Periodic(period=-1.0), "period"),
    "periodic_ard": (lambda: kg.Periodic(lengthscale=[1.0, 2.0]), "lengthscale"),
    "degree_fractional": (lambda: kg.Polynomial(degree=1.5), "degree"),
    "degree_negative": (lambda: kg.Polynomial(degree=-1), "degree"),
    "degree_bool": (lambda: kg.Polynomial(degree=True), "degree"),
    "degree_nan": (lambda: kg.Polynomial(degree=float("nan")), "degree"),
    "degree_string": (lambda: kg.Polynomial(degree="2"), "degree"),
    "degree_vector": (lambda: kg.Polynomial(degree=np.array([2, 3])), "degree"),
    "offset_negative": (lambda: kg.Polynomial(degree=2, offset=-1.0), "offset"),
    "scale_zero": (lambda: 0.0 * kg.RBF(), "scale"),
    "scale_negative": (lambda: kg.RBF() * -2.0, "scale"),
    "sum_of_mismatched_ard": (
        lambda: kg.RBF(lengthscale=[1.0, 2.0]) + kg.Matern32(lengthscale=[1.0, 2.0, 3.0]),
        "ARD",
    ),
    "product_of_mismatched_ard": (
        lambda: kg.RBF(lengthscale=[1.0, 2.0]) * kg.RBF(lengthscale=[1.0, 2.0, 3.0]),
        "ARD",
    ),
}


@pytest.mark.parametrize("build, name", BAD_BUILDS.values(), ids=list(BAD_BUILDS))
def test_invalid_hyperparameters_raise_value_error_at_build(build, name):
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize("degree", [0, 1, 3, 2.0, np.int64(4)])
def test_integral_degrees_are_accepted_and_stored_as_int(degree):
    k = kg.Polynomial(degree=degree, offset=0.0)
    assert k.degree == int(degree) and type(k.degree) is int


def test_ard_lengthscale_of_the_wrong_length_is_refused_at_call():
    k = kg.RBF(lengthscale=[1.0, 2.0])
    x3 = np.zeros(3)
    with pytest.raises(ValueError, match=r"2 per-dimension lengthscales.*\(3,\)"):
        k(x3, x3)
    with pytest.raises(ValueError, match=r"2 per-dimension lengthscales"):
        kg.gram(k, np.zeros((4, 3)))
    # The same kernel inside a composite is checked the same way.
    with pytest.raises(ValueError, match=r"2 per-dimension lengthscales"):
        (kg.Linear() + k)(x3, x3)
    with pytest.raises(ValueError, match=r"2 per-dimension lengthscales"):
        kg.grad_sum(2.0 * k, np.zeros((4, 3)), mode="forward")


def test_a_pair_call_on_mismatched_points_is_a_value_error():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        kg.Matern52()(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"one pair of points"):
        kg.Linear()(np.zeros((4, 2)), np.zeros((4, 2)))


def test_kernel_of_a_non_callable_is_a_type_error():
    with pytest.raises(TypeError, match="callable"):
        kg.kernel(3.0)


# --------------------------------------------------------------------------- pytrees


def test_kernels_are_immutable_pytrees_with_array_leaves():
    k = 0.5 * (kg.RBF(variance=2.0, lengthscale=[1.0, 3.0]) * kg.Periodic(period=2.0))
    leaves = jax.tree.leaves(k)
    # scale; RBF variance, lengthscale; Periodic variance, lengthscale, period.
    assert len(leaves) == 6
    assert all(isinstance(leaf, np.ndarray | jax.Array) for leaf in leaves)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError)):
        k.scale = 2.0
    # Polynomial's degree is structure, not a differentiable leaf.
    assert len(jax.tree.leaves(kg.Polynomial(degree=3, offset=0.5))) == 1


# --------------------------------------------------------------------------- formulas


def _r(x, y, lengthscale=1.0):
    return math.sqrt(float(np.sum(((x - y) / lengthscale) ** 2)))


# (kernel, formula(x, y) in float64): the documented conventions, written out for the
# table's hyperparameters.
FORMULAS = {
    "rbf": (
        BY_ID["rbf"].kernel,
        lambda x, y: 1.7 * math.exp(-(_r(x, y) ** 2) / (2 * 0.9**2)),
    ),
    "rbf_ard": (
        BY_ID["rbf_ard"].kernel,
        lambda x, y: 1.1 * math.exp(-0.5 * _r(x, y, np.array([0.7, 1.3, 2.1])) ** 2),
    ),
    "matern12": (
        BY_ID["matern12"].kernel,
        lambda x, y: 1.2 * math.exp(-_r(x, y) / 1.1),
    ),
    "matern32": (
        BY_ID["matern32"].kernel,
        lambda x, y: (
            0.8 * (1 + math.sqrt(3) * _r(x, y) / 1.4) * math.exp(-math.sqrt(3) * _r(x, y) / 1.4)
        ),
    ),
    "matern52": (
        BY_ID["matern52"].kernel,
        lambda x, y: (
            1.5
            * (1 + math.sqrt(5) * _r(x, y) / 0.6 + 5 * _r(x, y) ** 2 / (3 * 0.6**2))
            * math.exp(-math.sqrt(5) * _r(x, y) / 0.6)
        ),
    ),
    "matern52_ard": (
        BY_ID["matern52_ard"].kernel,
        lambda x, y: (
            0.7
            * (
                1
                + math.sqrt(5) * _r(x, y, np.array([0.7, 1.3, 2.1]))
                + 5 * _r(x, y, np.array([0.7, 1.3, 2.1])) ** 2 / 3
            )
            * math.exp(-math.sqrt(5) * _r(x, y, np.array([0.7, 1.3, 2.1])))
        ),
    ),
    "rq": (
        BY_ID["rq"].kernel,
        lambda x, y: 0.9 * (1 + _r(x, y) ** 2 / (2 * 0.7 * 1.2**2)) ** -0.7,
    ),
    "periodic": (
        BY_ID["periodic"].kernel,
        lambda x, y: 1.3 * math.exp(-2 * math.sin(math.pi * _r(x, y) / 2.5) ** 2 / 0.8**2),
    ),
    "linear": (BY_ID["linear"].kernel, lambda x, y: 0.6 * float(np.dot(x, y))),
    "poly3": (
        BY_ID["poly3"].kernel,
        lambda x, y: (float(np.dot(x, y)) + 0.5) ** 3,
    ),
    # Degree 0 (a constant kernel) is an edge case outside the table.
    "poly0": (kg.Polynomial(degree=0, offset=2.0), lambda x, y: 1.0),
}


def _pairs(rng, d=3, count=4):
    """A few (x, y) pairs in d dimensions, one of them a duplicate (r = 0)."""
    pts = sample_points(rng, count + 1, d)
    return [(pts[i], pts[i + 1]) for i in range(count)] + [(pts[0], pts[0].copy())]


@pytest.mark.parametrize("k, formula", FORMULAS.values(), ids=list(FORMULAS))
def test_kernel_values_match_the_documented_formula(k, formula, rng):
    pairs = _pairs(rng)
    expected = np.array([formula(x, y) for x, y in pairs])
    with jax.enable_x64(True):
        by_pair_call = np.array([float(k(jnp.asarray(x), jnp.asarray(y))) for x, y in pairs])
    assert_close(by_pair_call, expected, np.float64, err_msg="pair call")
    X = np.stack([x for x, _ in pairs])
    Y = np.stack([y for _, y in pairs])
    for mode in ("closed", "forward"):
        K = kg.gram(k, X, Y, mode=mode)
        assert_close(np.diag(K), expected, np.float64, err_msg=f"gram, mode={mode}")


def test_periodic_distance_is_euclidean_and_period_is_exact(rng):
    """k(x, x + p e) = v: shifting one coordinate by a whole period returns to the peak."""
    k = kg.Periodic(variance=1.3, lengthscale=0.8, period=2.5)
    x = sample_points(rng, 1, 2)[0]
    shifted = x + np.array([2.5, 0.0])
    assert_close(kg.gram(k, x[None], shifted[None])[0, 0], 1.3)
    # Half a period away is the trough: v exp(-2 / l^2).
    half = x + np.array([0.0, 1.25])
    assert_close(kg.gram(k, x[None], half[None])[0, 0], 1.3 * math.exp(-2 / 0.8**2))


@pytest.mark.parametrize("case", select())
def test_every_table_kernel_evaluates_on_one_pair(case, rng):
    x, y = sample_points(rng, 2, case.dim())
    value = case.kernel(x, y)
    assert jnp.shape(value) == ()
    assert np.isfinite(value)
    # The Gram matrix of one pair is that value (to float32, the pair call's dtype here).
    assert_close(value, kg.gram(case.kernel, x[None], y[None])[0, 0], np.float32)


def test_scalar_points_are_one_dimensional_pairs():
    k = kg.RBF(lengthscale=0.5)
    assert_close(k(0.25, 1.0), math.exp(-(0.75**2) / (2 * 0.25)), np.float32)


# --------------------------------------------------------------------------- composition


def test_sum_product_and_scaling_of_kernels_on_one_pair(rng):
    k1 = kg.RBF(variance=1.4, lengthscale=0.8)
    k2 = kg.Polynomial(degree=2, offset=1.0)
    x, y = sample_points(rng, 2, 3)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x), jnp.asarray(y)
        a, b = float(k1(x, y)), float(k2(x, y))
        cases = {
            "sum": (k1 + k2, a + b),
            "product": (k1 * k2, a * b),
            "left_scale": (2.5 * k1, 2.5 * a),
            "right_scale": (k1 * 3, 3 * a),
            "numpy_scale": (np.float64(0.5) * k2, 0.5 * b),
            "nested": (0.5 * (k1 + k2) * k1, 0.5 * (a + b) * a),
        }
        for name, (k, expected) in cases.items():
            assert_close(float(k(x, y)), expected, np.float64, err_msg=name)


def test_composite_gram_is_the_sum_and_product_of_component_grams(rng):
    k1 = kg.Matern52(variance=0.9, lengthscale=1.3)
    k2 = kg.Linear(variance=0.4)
    X, Y = sample_points(rng, 5, 2), sample_points(rng, 4, 2)
    K1, K2 = kg.gram(k1, X, Y), kg.gram(k2, X, Y)
    for mode in ("closed", "forward"):
        assert_close(kg.gram(k1 + k2, X, Y, mode=mode), K1 + K2, err_msg=mode)
        assert_close(kg.gram(k1 * k2, X, Y, mode=mode), K1 * K2, err_msg=mode)
        assert_close(kg.gram(2.0 * k1, X, Y, mode=mode), 2.0 * K1, err_msg=mode)


def test_adding_a_non_kernel_is_a_type_error():
    with pytest.raises(TypeError):
        kg.RBF() + 1.0
    with pytest.raises(TypeError):
        kg.RBF() * "2"


# --------------------------------------------------------------------------- pair functions


def test_a_user_pair_function_is_a_kernel(rng):
    def fn(x, y):
        return jnp.exp(-0.5 * jnp.sum((x - y) ** 2)) + 0.1 * jnp.dot(x, y)

    k = kg.kernel(fn)
    assert isinstance(k, kg.AbstractKernel)
    assert kg.kernel(k) is k
    X, Y = sample_points(rng, 4, 2), sample_points(rng, 3, 2)
    diff = X[:, None, :] - Y[None, :, :]
    expected = np.exp(-0.5 * np.sum(diff**2, axis=-1)) + 0.1 * X @ Y.T
    assert_close(kg.gram(k, X, Y), expected)
    # Pair functions compose with built-ins.
    assert_close(kg.gram(k + kg.Linear(), X, Y), expected + X @ Y.T)


def _elementwise_rbf(x, y):
    return jnp.exp(-0.5 * (x - y) ** 2)  # no reduction: shape (d,), a scalar only in 1-D


ELEMENTWISE = kg.kernel(_elementwise_rbf)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_pair_function_must_return_a_scalar(mode):
    """A non-scalar pair function is a clear ValueError in every transform, not a wrong shape.

    In one dimension a shape (1,) result is accepted: the forum's 1-D kernel written
    elementwise is exp(-(x - y)^2 / 2), which is RBF.
    """
    X = np.zeros((3, 2))
    for name in ("gram", "jacobian", "grad_sum"):
        with pytest.raises(ValueError, match=r"returned shape \(2,\).*scalar"):
            getattr(kg, name)(ELEMENTWISE, X, mode=mode)
    x = np.linspace(-1.0, 1.0, 5)
    assert_close(kg.gram(ELEMENTWISE, x, mode=mode), kg.gram(kg.RBF(), x))
    assert_close(kg.grad_sum(ELEMENTWISE, x, mode=mode), kg.grad_sum(kg.RBF(), x))


def test_the_forums_buggy_kernel_is_expressible(rng):
    """The post's r2 = -2 x y + (x + y), written as a pair function and evaluated in 1-D."""
    k = BY_ID["pair_forum"].kernel
    x = np.linspace(-1.0, 1.0, 6)
    expected = np.exp(-0.5 * (-2.0 * np.outer(x, x) + (x[:, None] + x[None, :])))
    assert_close(kg.gram(k, x), expected)
    # Its derivative in x_i: d/dx (-0.5 (-2 x y + x + y)) = y - 0.5.
    assert_close(kg.jacobian(k, x), expected * (x[None, :] - 0.5))


def test_table_ids_cover_every_builtin_class():
    """The shared table exercises each built-in kernel class at least once."""
    names = {type(leaf).__name__ for case in CASES for leaf in _components(case.kernel)}
    builtin = ("RBF", "Matern12", "Matern32", "Matern52", "RationalQuadratic", "Periodic")
    for cls in (*builtin, "InverseMultiquadric"):
        assert cls in names
    assert {"Linear", "Polynomial", "Sum", "Product", "Scaled", "PairFunction"} <= names


def _components(k):
    yield k
    for child in ("k1", "k2", "base"):
        if hasattr(k, child):
            yield from _components(getattr(k, child))


# ---------------------------------------------------------------------- profiles f, f', f''
#
# The closed forms and the kernels' own AD (a custom JVP through f' and f'') both rest on each
# profile's f' and f''. They are checked here against references that share nothing with
# them: finite differences of f in float64, and limits at s = 0 derived by hand below.


def _profile_cases():
    """One table case per built-in stationary class (its first one in the table)."""
    seen, cases = set(), []
    for case in CASES:
        cls = type(case.kernel)
        if issubclass(cls, kg.AbstractStationaryKernel) and cls not in seen:
            seen.add(cls)
            cases.append(pytest.param(case, id=case.id))
    return cases


def _profile(case):
    """(f, f', f'') of the case's class as float64 NumPy functions of s."""
    cls = type(case.kernel)
    params = case.kernel.profile_params(np, np.float64)

    def at(fn):
        return lambda s: np.asarray(fn(np, np.asarray(s, np.float64), params))

    return at(cls.f), at(cls.df), at(cls.d2f)


def _five_point(fn, s, h):
    """Central five-point first derivative: error O(h^4) plus roundoff eps / h."""
    return (fn(s - 2 * h) - 8 * fn(s - h) + 8 * fn(s + h) - fn(s + 2 * h)) / (12 * h)


def _sample_s(case):
    """s values across the profile's range; Periodic's on both sides of its Taylor switch
    (x = 2 pi r / period = 0.3)."""
    s = [2e-3, 0.02, 0.1, 0.45, 1.0, 2.7, 6.0]
    if isinstance(case.kernel, kg.Periodic):
        r_switch = 0.3 * float(case.kernel.period) / (2 * math.pi)
        s += [(r_switch * 0.97) ** 2, (r_switch * 1.03) ** 2, (r_switch * 0.5) ** 2]
    return np.array(sorted(s))


@pytest.mark.parametrize("case", _profile_cases())
def test_profile_derivatives_match_finite_differences_of_f(case):
    f, df, d2f = _profile(case)
    for s in _sample_s(case):
        h = 1e-3 * s
        np.testing.assert_allclose(df(s), _five_point(f, s, h), rtol=1e-8, err_msg=f"f' at {s}")
        np.testing.assert_allclose(d2f(s), _five_point(df, s, h), rtol=1e-8, err_msg=f"f'' at {s}")
        # And f'' straight from f (five-point second differences: error O(h^4) plus roundoff
        # 5 eps / h^2, hence the wider step), independent of f' as well.
        h = 1e-2 * s
        taps = -f(s - 2 * h) + 16 * f(s - h) - 30 * f(s) + 16 * f(s + h) - f(s + 2 * h)
        second = taps / (12 * h**2)
        np.testing.assert_allclose(d2f(s), second, rtol=2e-5, err_msg=f"f'' from f at {s}")


def _limits_at_zero(kernel):
    """(f'(0), f''(0)) derived by hand from each documented profile (None: infinite).

    RBF: f = exp(-s/2). Matern 3/2: f = (1 + u) e^-u with u = sqrt(3 s), so f' = -(3/2) e^-u.
    Matern 5/2: f = (1 + u + u^2/3) e^-u with u = sqrt(5 s): f' = -(5/6)(1 + u) e^-u and
    f'' = (25/12) e^-u. RQ: f = (1 + s/(2a))^-a: f' = -(1/2)(1 + s/(2a))^(-a-1), f'' =
    (a+1)/(4a) (1 + s/(2a))^(-a-2). IMQ: f = (c^2 + s)^b: f'(0) = b c^(2b - 2), f''(0) =
    b (b - 1) c^(2b - 4). Periodic: sin^2(pi r/p) = (pi r/p)^2 - (pi r/p)^4/3 + ..,
    so f = exp(c s + (2 pi^4 / (3 p^4 l^2)) s^2 + ..) with c = -2 pi^2 / (p^2 l^2).
    """
    if isinstance(kernel, kg.RBF):
        return -0.5, 0.25
    if isinstance(kernel, kg.Matern32):
        return -1.5, None
    if isinstance(kernel, kg.Matern52):
        return -5.0 / 6.0, 25.0 / 12.0
    if isinstance(kernel, kg.RationalQuadratic):
        a = float(kernel.alpha)
        return -0.5, (a + 1) / (4 * a)
    if isinstance(kernel, kg.InverseMultiquadric):
        c, b = float(kernel.c), float(kernel.beta)
        return b * c ** (2 * b - 2), b * (b - 1) * c ** (2 * b - 4)
    if isinstance(kernel, kg.Periodic):
        p, l = float(kernel.period), float(kernel.lengthscale)
        c = -2 * math.pi**2 / (p**2 * l**2)
        return c, c**2 + 4 * math.pi**4 / (3 * p**4 * l**2)
    return None, None  # Matern 1/2: f' ~ -1 / (2 sqrt(s))


@pytest.mark.parametrize("case", _profile_cases())
def test_profile_derivatives_at_zero_are_the_limits_written_out(case):
    _, df, d2f = _profile(case)
    first, second = _limits_at_zero(case.kernel)
    if first is None:
        pytest.skip("f' is infinite at s = 0")
    np.testing.assert_allclose(df(0.0), first, rtol=1e-14)
    if second is not None:
        np.testing.assert_allclose(d2f(0.0), second, rtol=1e-14)


@pytest.mark.parametrize("case", _profile_cases())
def test_pair_call_gradients_to_second_order_match_numerical_differences(case):
    """jax.test_util.check_grads(order=2) on k(x, y): the custom JVP through f' and f''
    against JAX's own finite differences, forward and reverse, in float64."""
    rng = np.random.default_rng(3)
    d = case.dim()
    with jax.enable_x64(True):
        x, y = (jnp.asarray(p) for p in rng.uniform(-1.0, 1.0, (2, d)))
        jax.test_util.check_grads(
            lambda x, y: case.kernel(x, y), (x, y), order=2, modes=("fwd", "rev")
        )
        if isinstance(case.kernel, kg.Periodic):
            # Inside the Taylor switch too: a pair closer than r_switch / 2.
            r = 0.3 * float(case.kernel.period) / (2 * math.pi) / 2
            close = x + r * jnp.ones(d) / math.sqrt(d)
            jax.test_util.check_grads(
                lambda x, y: case.kernel(x, y), (x, close), order=2, modes=("fwd", "rev")
            )


# --------------------------------------------------------------- the abstract/final pattern


def _kernel_classes() -> list[type]:
    return [
        obj
        for name in kg.__all__
        if isinstance(obj := getattr(kg, name), type) and issubclass(obj, kg.AbstractKernel)
    ]


def test_every_kernel_class_is_abstract_or_final():
    """Abstract classes (named Abstract...) cannot be built; no class derives from a final."""
    classes = _kernel_classes()
    for cls in classes:
        assert inspect.isabstract(cls) == cls.__name__.startswith("Abstract"), cls.__name__
        if not inspect.isabstract(cls):
            heirs = [c.__name__ for c in classes if c is not cls and issubclass(c, cls)]
            assert not heirs, f"{cls.__name__} is final but {heirs} derive from it"
    with pytest.raises(TypeError):
        kg.AbstractStationaryKernel()


def test_no_final_kernel_overrides_a_method_its_abstract_bases_implement():
    for cls in _kernel_classes():
        if inspect.isabstract(cls):
            continue
        for base in cls.__mro__[1:]:
            if not (isinstance(base, type) and issubclass(base, kg.AbstractKernel)):
                continue
            for name, attr in vars(base).items():
                implemented = callable(attr) or isinstance(attr, property | staticmethod)
                abstract = getattr(attr, "__isabstractmethod__", False)
                if not implemented or abstract or (name.startswith("__") and name != "__call__"):
                    continue
                owners = [c.__name__ for c in cls.__mro__[: cls.__mro__.index(base)]]
                overriding = [
                    o for o, c in zip(owners, cls.__mro__, strict=False) if name in vars(c)
                ]
                assert not overriding, f"{overriding} override {base.__name__}.{name}"


class _Cauchy(kg.AbstractStationaryKernel):
    """A kernel family the library does not have, k = v / (1 + s), written as one class."""

    variance: Any
    lengthscale: Any

    def __init__(self, variance=1.0, lengthscale=1.0):
        self.variance = np.asarray(variance, np.float64)
        self.lengthscale = np.asarray(lengthscale, np.float64)

    @staticmethod
    def f(xp, s, params):
        return 1.0 / (1.0 + s)

    @staticmethod
    def df(xp, s, params):
        return -1.0 / (1.0 + s) ** 2

    @staticmethod
    def d2f(xp, s, params):
        return 2.0 / (1.0 + s) ** 3


def test_a_new_kernel_family_is_one_class_and_gets_every_closed_form(rng):
    """Closed forms, eager and compiled, to second order, against brute-force AD of its
    pair call, and composed with a built-in."""
    k = _Cauchy(variance=1.3, lengthscale=0.7)
    X, Y = sample_points(rng, 9, 3), sample_points(rng, 7, 3)
    X[2] = Y[4]  # r = 0 is among the pairs
    w = rng.normal(size=7)
    expected = np.einsum("ija,j->ia", pairwise_jacobian(k, X, Y), w)
    assert_close(kg.grad_sum(k, X, Y, w, mode="closed"), expected, np.float64)  # eager
    with kg.policy.use(dataclasses.replace(kg.policy.current(), eager_max_pairs=0)):
        assert_close(kg.grad_sum(k, X, Y, w, mode="closed"), expected, np.float64)  # XLA
    assert_close(kg.cross_hessian(k, X, Y, mode="closed"), brute_cross_hessian(k, X, Y))
    both = k * BY_ID["linear"].kernel
    assert_close(kg.gram(both, X, Y, mode="closed"), dense_gram(both, X, Y), np.float64)
