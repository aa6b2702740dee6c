"""Argument handling of every transform: clear errors, dtypes, array types, empty inputs.

Bad input must be reported in the caller's terms (the shapes got and expected), never as a
traceback from inside JAX. Good input keeps the caller's array type and float dtype, and
NumPy float64 is float64-accurate without turning on JAX's x64 mode.
"""

from __future__ import annotations

import re
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, sample_points
from references import assert_close, dense_gram, max_relative_error, rbf_closed_form

import kernelgrad as kg
from kernelgrad.execution import eager
from kernelgrad.execution.inputs import all_finite

TRANSFORMS = ("gram", "jacobian", "grad", "grad_sum", "gram_matvec")
AD_MODES = ("forward", "reverse")


def call(name, k, X, Y=None, w=None, **kw):
    """Transform ``name``; ``grad`` takes the first point of X as its single point x."""
    fn = getattr(kg, name)
    if name == "grad":
        return fn(k, X[0], Y, **kw)
    if name in ("grad_sum", "gram_matvec"):
        return fn(k, X, Y, w, **kw)
    return fn(k, X, Y, **kw)


def expected_shape(name, n, m, d, squeeze):
    tail = () if squeeze else (d,)
    return {
        "gram": (n, m),
        "jacobian": (n, m, *tail),
        "grad": (m, *tail),
        "grad_sum": (n, *tail),
        "gram_matvec": (n,),
    }[name]


def shapes_in(message):
    """Every parenthesised shape that a message quotes, as written."""
    return set(re.findall(r"\([^()]*\)", message))


# --------------------------------------------------------------------------- shape errors


@pytest.mark.parametrize("name", TRANSFORMS)
def test_dimension_mismatch_names_both_shapes_and_the_expected_one(name):
    X, Y = np.zeros((3, 2)), np.zeros((4, 3))
    with pytest.raises(ValueError) as info:
        call(name, kg.RBF(), X, Y)
    message = str(info.value)
    quoted = shapes_in(message)
    assert "(4, 3)" in quoted, message
    assert ("(2,)" if name == "grad" else "(3, 2)") in quoted, message
    assert "(m, 2)" in quoted, message


@pytest.mark.parametrize("name", ["gram", "jacobian", "grad_sum", "gram_matvec"])
@pytest.mark.parametrize("which, shape", [("X", ()), ("X", (2, 3, 2)), ("Y", ()), ("Y", (2, 3, 2))])
def test_wrong_rank_names_the_shape_got_and_expected(name, which, shape):
    good = np.zeros((3, 2))
    bad = np.zeros(shape)
    args = (bad, good) if which == "X" else (good, bad)
    with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")) as info:
        call(name, kg.RBF(), *args)
    rows = "n" if which == "X" else "m"
    assert f"({rows}, d)" in str(info.value) and str(info.value).startswith(which)


@pytest.mark.parametrize("x_shape", [(3, 2), (1, 1, 2)])
def test_grad_wants_a_single_point(x_shape):
    with pytest.raises(ValueError, match=re.escape(f"got shape {x_shape}")) as info:
        kg.grad(kg.RBF(), np.zeros(x_shape), np.zeros((4, 2)))
    assert "(d,)" in str(info.value)


def test_mixed_one_dimensional_and_d_dimensional_points_are_refused():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4, 1\)"):
        kg.gram(kg.RBF(), np.zeros(3), np.zeros((4, 1)))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_points_with_no_coordinates_are_refused(name):
    shape = "(0,)" if name == "grad" else "(3, 0)"  # grad's x is the first of the points
    with pytest.raises(ValueError, match=re.escape(f"has shape {shape}")):
        call(name, kg.RBF(), np.zeros((3, 0)))


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize(
    "name, w_shape",
    [
        ("grad_sum", (5,)),
        ("grad_sum", (3,)),
        ("grad_sum", (4, 1)),
        ("grad_sum", ()),
        ("gram_matvec", (5,)),
        ("gram_matvec", (5, 2)),
        ("gram_matvec", (4, 2, 1)),
    ],
)
def test_weights_of_the_wrong_length_or_rank_name_shapes(name, w_shape, kind):
    X, Y = np.zeros((3, 2)), np.ones((4, 2))
    w = np.ones(w_shape) if kind == "numpy" else jnp.ones(w_shape)
    with pytest.raises(ValueError, match=re.escape(f"weights has shape {w_shape}")) as info:
        call(name, kg.RBF(), X, Y, w)
    message = str(info.value)
    assert "(m,)" in message and "m = 4" in message, message
    if name == "gram_matvec":
        assert "(m, p)" in message, message


def test_weights_length_is_checked_against_x_when_y_is_omitted():
    X = np.zeros((3, 2))
    assert kg.grad_sum(kg.RBF(), X, weights=np.ones(3)).shape == (3, 2)
    with pytest.raises(ValueError, match="m = 3"):
        kg.grad_sum(kg.RBF(), X, weights=np.ones(4))


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["fwd", "rev", "AUTO", None, 0])
def test_unknown_mode_is_a_value_error_listing_every_valid_mode(mode):
    with pytest.raises(ValueError, match="mode") as info:
        kg.grad_sum(kg.Matern32(), np.zeros((3, 2)), mode=mode)
    for valid in ("auto", "closed", "forward", "reverse"):
        assert repr(valid) in str(info.value)


@pytest.mark.parametrize(
    "k",
    [
        BY_ID["pair_rbf"].kernel,
        kg.RBF() + BY_ID["pair_rbf"].kernel,
        2.0 * BY_ID["pair_rbf"].kernel,
        kg.Linear() * BY_ID["pair_rbf"].kernel,
    ],
    ids=["pair", "sum_with_pair", "scaled_pair", "product_with_pair"],
)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_closed_mode_on_anything_holding_a_pair_function_names_the_valid_modes(name, k):
    with pytest.raises(ValueError, match="closed") as info:
        call(name, k, np.zeros((3, 2)), mode="closed")
    for valid in ("forward", "reverse", "auto"):
        assert repr(valid) in str(info.value)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("which", ["X", "Y", "weights"])
def test_complex_input_is_a_type_error(which, kind):
    make = np.zeros if kind == "numpy" else jnp.zeros
    dtype = np.complex128 if kind == "numpy" else np.complex64
    args = {"X": np.zeros((3, 2)), "Y": np.zeros((4, 2)), "weights": np.ones(4)}
    args[which] = make(args[which].shape, dtype)
    with pytest.raises(TypeError, match=f"{which} is complex"):
        kg.grad_sum(kg.RBF(), args["X"], args["Y"], args["weights"])


def test_non_numeric_input_is_a_type_error():
    with pytest.raises(TypeError, match="X"):
        kg.gram(kg.RBF(), np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="X"):
        kg.gram(kg.RBF(), [[1.0, 2.0], [3.0]])


def test_integer_input_is_promoted_to_float():
    k = kg.RBF(lengthscale=1.5)
    Xi = np.arange(6).reshape(3, 2)
    Xf = Xi.astype(np.float64)
    K = kg.gram(k, Xi)
    assert isinstance(K, np.ndarray) and K.dtype == np.float64
    assert_close(K, dense_gram(k, Xf, Xf))
    assert kg.gram(k, [[0, 1], [2, 3]]).dtype == np.float64  # nested lists of ints
    G = kg.grad_sum(k, Xi, weights=np.array([1, 2, 3]), mode="forward")
    assert G.dtype == np.float64
    assert_close(G, kg.grad_sum(k, Xf, weights=np.array([1.0, 2.0, 3.0])))
    # JAX integers become JAX's default float (float32 without x64).
    Kj = kg.gram(k, jnp.asarray(Xi))
    assert isinstance(Kj, jax.Array) and Kj.dtype == jnp.float32
    assert_close(Kj, K, np.float32)


def test_integer_arrays_and_weights_take_the_float_dtype_of_the_points():
    """Integer inputs, and float64 weights (np.ones(m)), never widen float32 points."""
    X32 = sample_points(np.random.default_rng(0), 4, 2, np.float32)
    k = kg.Matern52()
    assert kg.grad_sum(k, X32, weights=np.arange(4)).dtype == np.float32
    for mode in ("closed", "reverse"):
        G = kg.grad_sum(k, X32, weights=np.ones(4), mode=mode)
        assert G.dtype == np.float32, mode
        assert_close(G, kg.grad_sum(k, X32, mode=mode), np.float32)
    assert kg.gram_matvec(k, X32, None, np.ones((4, 2))).dtype == np.float32
    assert kg.grad_sum(k, np.arange(4), weights=np.ones(4, np.float32)).dtype == np.float32
    # Python scalars and lists have no dtype of their own: the float32 array decides.
    assert kg.grad(k, 0.5, X32[:, 0]).dtype == np.float32
    assert kg.grad(k, [0.5, -0.5], X32).dtype == np.float32
    assert kg.grad_sum(k, X32, weights=[1.0, 2.0, 3.0, 4.0]).dtype == np.float32
    assert kg.gram(k, X32.tolist()).dtype == np.float64  # nothing else to follow
    assert kg.gram(k, X32, np.arange(6).reshape(3, 2)).dtype == np.float32
    assert kg.gram_matvec(k, X32, None, np.ones(4, dtype=bool)).dtype == np.float32


@pytest.mark.parametrize("name", TRANSFORMS)
def test_array_type_and_float_dtype_are_preserved(name):
    """NumPy in gives NumPy out, JAX in gives JAX out, and float32 stays float32.

    Includes the mixtures: one JAX argument makes the result JAX, and a list is NumPy.
    """
    rng = np.random.default_rng(1)
    X, Y, w = sample_points(rng, 4, 2), sample_points(rng, 3, 2), rng.normal(size=3)
    k = kg.RBF()
    combos = {
        "numpy_f64": ((X, Y, w), np.ndarray, np.float64),
        "numpy_f32": ((X.astype(np.float32), Y.astype(np.float32), w), np.ndarray, np.float32),
        "lists": ((X.tolist(), Y.tolist(), w.tolist()), np.ndarray, np.float64),
        "jax_f32": (tuple(map(jnp.asarray, (X, Y, w))), jax.Array, np.float32),
        "mixed": ((X.astype(np.float32), jnp.asarray(Y), w), jax.Array, np.float32),
        "jax_x_numpy_y": ((jnp.asarray(X), Y.astype(np.float32), w), jax.Array, np.float32),
    }
    for label, (args, array_type, dtype) in combos.items():
        for mode in ("closed", "forward"):
            out = call(name, k, *args, mode=mode)
            assert isinstance(out, array_type), f"{label}, {mode}: {type(out).__name__}"
            assert out.dtype == dtype, f"{label}, {mode}: {out.dtype}"
            ref = call(name, k, X, Y, w, mode="closed")
            assert_close(out, ref, dtype, err_msg=f"{label}, {mode}")


def test_jax_float64_stays_float64_under_local_x64():
    X = sample_points(np.random.default_rng(2), 4, 2)
    with jax.enable_x64(True):
        G = kg.grad_sum(kg.RBF(), jnp.asarray(X), mode="reverse")
        assert isinstance(G, jax.Array) and G.dtype == jnp.float64
    assert_close(G, kg.grad_sum(kg.RBF(), X), np.float64)


# --------------------------------------------------------------------------- float64 accuracy


@pytest.mark.parametrize(
    "n, mode",
    [
        (7, "closed"),  # eager NumPy
        (7, "forward"),  # jitted AD under a local x64 context
        (7, "reverse"),
        (230, "closed"),  # beyond the eager crossover: jitted closed form
        (230, "reverse"),
    ],
)
def test_numpy_float64_is_float64_accurate_without_global_x64(n, mode, rng):
    if jax.config.jax_enable_x64:
        pytest.skip("JAX's x64 mode is on globally; this test is about running without it")
    variance, lengthscale = 1.3, 0.8
    k = kg.RBF(variance=variance, lengthscale=lengthscale)
    X, Y, w = sample_points(rng, n, 3), sample_points(rng, n - 1, 3), rng.normal(size=n - 1)
    K, J, G = rbf_closed_form(X, Y, w, variance, lengthscale)
    results = {
        "gram": (kg.gram(k, X, Y, mode=mode), K),
        "jacobian": (kg.jacobian(k, X, Y, mode=mode), J),
        "grad": (kg.grad(k, X[3], Y, mode=mode), J[3]),
        "grad_sum": (kg.grad_sum(k, X, Y, w, mode=mode), G),
        "gram_matvec": (kg.gram_matvec(k, X, Y, w, mode=mode), K @ w),
    }
    for name, (got, ref) in results.items():
        assert isinstance(got, np.ndarray) and got.dtype == np.float64, name
        err = max_relative_error(got, ref)
        assert err <= 1e-12, f"{name}: relative error {err:.2e}"
    assert not jax.config.jax_enable_x64, "the global x64 setting was changed"


# --------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("one_d", [False, True], ids=["2d", "1d"])
@pytest.mark.parametrize("mode", ["closed", "forward", "reverse"])
@pytest.mark.parametrize("name", TRANSFORMS)
def test_empty_inputs_give_empty_or_zero_results_of_the_right_shape(name, mode, one_d, kind):
    convert = np.asarray if kind == "numpy" else jnp.asarray
    array_type = np.ndarray if kind == "numpy" else jax.Array
    d = 2

    def points(count):
        return convert(np.zeros((count,) if one_d else (count, d)) + 0.5)

    k = kg.Matern52()
    sizes = [(0, 4), (3, 0), (0, 0)]
    if name == "grad":
        sizes = [(1, 0)]  # grad's x is a single point; only m can be 0
    for n, m in sizes:
        w = convert(np.ones(m))
        out = call(name, k, points(n), points(m), w, mode=mode)
        where = f"n={n}, m={m}"
        assert isinstance(out, array_type), where
        assert out.shape == expected_shape(name, n, m, d, one_d), f"{where}: {out.shape}"
        # A sum over no columns is zero; anything else is empty.
        assert out.size == 0 or not np.any(np.asarray(out)), where


# --------------------------------------------------------------------------- 1-D points


@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_one_dimensional_points_drop_the_trailing_axis(kind):
    convert = np.asarray if kind == "numpy" else jnp.asarray
    rng = np.random.default_rng(4)
    x, y, w = rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 5), rng.normal(size=5)
    k = kg.RationalQuadratic(alpha=1.5)
    for name in TRANSFORMS:
        flat = call(name, k, convert(x), convert(y), convert(w))
        column = call(name, k, convert(x[:, None]), convert(y[:, None]), convert(w))
        assert flat.shape == expected_shape(name, 6, 5, 1, True), name
        squeezed = column if name in ("gram", "gram_matvec") else column[..., 0]
        assert_close(flat, squeezed, err_msg=name)
    # The forum's grad_kernel: a scalar point against all points.
    assert kg.grad(k, convert(x)[0], convert(x)).shape == (6,)
    assert kg.grad(k, float(x[0]), x).shape == (6,)


# --------------------------------------------------------------------------- JAX transformations


def test_jax_grad_over_kernel_hyperparameters(rng):
    """d/dv and d/dl of sum_ij c_ij K_ij, against the derivatives of v exp(-r^2 / (2 l^2)):

    dK/dv = K / v and dK/dl = K r^2 / l^3.
    """
    X, Y = sample_points(rng, 5, 2), sample_points(rng, 4, 2)
    c = rng.normal(size=(5, 4))
    v, l = 1.3, 0.7
    K, _, _ = rbf_closed_form(X, Y, np.zeros(4), v, l)
    r2 = np.sum((X[:, None] - Y[None]) ** 2, axis=-1)
    with jax.enable_x64(True):
        for mode in ("closed", "forward", "reverse"):
            g = jax.grad(lambda k, mode=mode: jnp.sum(c * kg.gram(k, X, Y, mode=mode)))(
                kg.RBF(variance=v, lengthscale=l)
            )
            assert_close(g.variance, np.sum(c * K / v), np.float64, err_msg=mode)
            assert_close(g.lengthscale, np.sum(c * K * r2 / l**3), np.float64, err_msg=mode)


@pytest.mark.parametrize("case_id", ["nested", "rbf_ard", "periodic"])
def test_jax_grad_of_a_grad_sum_loss_over_any_kernel_matches_dense_ad(case_id, rng):
    """The loss |G|^2 of the grad map, differentiated over every hyperparameter leaf.

    The reference differentiates the same loss built from the kernel's own pair call.
    """
    k = BY_ID[case_id].kernel
    X = sample_points(rng, 4, BY_ID[case_id].dim())

    def reference_loss(kern, X):
        pair_grad = jax.grad(kern, argnums=0)
        J = jax.vmap(lambda x: jax.vmap(lambda y: pair_grad(x, y))(X))(X)
        return jnp.sum(jnp.sum(J, axis=1) ** 2)

    with jax.enable_x64(True):
        Xj = jnp.asarray(X)
        expected = jax.jit(jax.grad(reference_loss))(k, Xj)
        got = jax.jit(jax.grad(lambda kern: jnp.sum(kg.grad_sum(kern, X) ** 2)))(k)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert_close(a, b, np.float64, err_msg=case_id)


@pytest.mark.parametrize("mode", ["closed", "forward", "reverse"])
def test_transforms_inside_the_users_jit_and_vmap(mode, rng):
    k = kg.Matern52(variance=1.2, lengthscale=0.9)
    batch = sample_points(rng, 3 * 5, 2).reshape(3, 5, 2)
    Y, w = sample_points(rng, 4, 2), rng.normal(size=4)
    eager = np.stack([kg.grad_sum(k, B, Y, w, mode=mode) for B in batch])
    with jax.enable_x64(True):
        Bj, Yj, wj = map(jnp.asarray, (batch, Y, w))
        jitted = jax.jit(lambda A: kg.grad_sum(k, A, Yj, wj, mode=mode))
        assert_close(jitted(Bj[1]), eager[1], np.float64)
        mapped = jax.vmap(lambda A: kg.grad_sum(k, A, Yj, wj, mode=mode))(Bj)
        assert_close(mapped, eager, np.float64)
        # Both at once, with the kernel and weights as traced arguments.
        both = jax.jit(
            jax.vmap(
                lambda kern, A, v: kg.grad_sum(kern, A, Yj, v, mode=mode), in_axes=(None, 0, None)
            )
        )(k, Bj, wj)
        assert_close(both, eager, np.float64)
        # grad over points: vmap of the single-point gradient is the Jacobian.
        J = jax.jit(jax.vmap(lambda x: kg.grad(k, x, Yj, mode=mode)))(Bj[0])
        assert_close(J, kg.jacobian(k, batch[0], Y), np.float64)
        # A kernel built from traced hyperparameters, vmapped over lengthscales.
        grams = jax.vmap(lambda ls: kg.gram(kg.Matern52(1.2, ls), Bj[0], Yj, mode=mode))(
            jnp.array([0.9, 2.0])
        )
        assert_close(grams[0], kg.gram(k, batch[0], Y), np.float64)
        assert_close(grams[1], kg.gram(kg.Matern52(1.2, 2.0), batch[0], Y), np.float64)


def test_inputs_inside_jit_keep_their_validation():
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        jax.jit(lambda A: kg.gram(kg.RBF(), A, jnp.zeros((3, 3))))(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="weights"):
        jax.jit(lambda A: kg.grad_sum(kg.RBF(), A, None, jnp.ones(2)))(jnp.zeros((4, 2)))


@pytest.mark.parametrize("mode", ["forward", "reverse", "closed"])
def test_transforms_run_under_the_users_strict_rank_promotion(mode):
    """A user's own JAX strictness setting must not break the library's internals (the
    whole suite runs under it: see conftest.py)."""
    assert jax.config.jax_numpy_rank_promotion == "raise"
    rng = np.random.default_rng(6)
    k = kg.Matern52(lengthscale=[0.7, 1.3, 2.1])
    X, w = sample_points(rng, 5, 3), rng.normal(size=5)
    expected = kg.grad_sum(k, X, None, w)  # NumPy: computed before, outside JAX
    G = kg.grad_sum(k, jnp.asarray(X, jnp.float32), None, jnp.asarray(w, jnp.float32), mode=mode)
    assert_close(G, expected, np.float32)
    assert kg.gram(k, jnp.asarray(X, jnp.float32), mode=mode).shape == (5, 5)


# ------------------------------------------------------------------ non-finite input


def _with_bad_entry(A, index, value):
    A = np.array(A, copy=True)
    A[index] = value
    return A


# n = 20 takes the eager NumPy path of gram, grad and grad_sum; n = 400 the compiled one.
@pytest.mark.parametrize("n", [20, 400])
@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_points_are_refused_naming_the_array_count_and_first_index(name, n, bad):
    X = np.linspace(-1.0, 1.0, 2 * n).reshape(n, 2)
    X = _with_bad_entry(_with_bad_entry(X, (5, 1), bad), (9, 0), bad)
    Y = np.linspace(0.0, 1.0, 2 * n).reshape(n, 2)
    # grad's single point is X[0]: put the bad entries in Y for it.
    args = (Y, X) if name == "grad" else (X, Y)
    expected = (
        r"Y contains 2 non-finite value\(s\).*at index \(5, 1\)"
        if name == "grad"
        else (r"X contains 2 non-finite value\(s\).*at index \(5, 1\)")
    )
    w = np.ones(n)
    with pytest.raises(ValueError, match=expected):
        call(name, kg.RBF(), *args, w=w if name != "gram_matvec" else None)


@pytest.mark.parametrize("name", ["grad_sum", "gram_matvec"])
@pytest.mark.parametrize("n", [20, 400])
def test_non_finite_weights_are_refused(name, n):
    X = np.linspace(-1.0, 1.0, n)
    w = _with_bad_entry(np.ones(n), 7, np.nan)
    with pytest.raises(ValueError, match=r"weights contains 1 non-finite value\(s\).*index 7"):
        call(name, kg.RBF(), X, None, w)


def test_one_dimensional_points_report_their_own_index_and_a_single_point_its_value():
    X = _with_bad_entry(np.linspace(-1.0, 1.0, 30), 3, np.inf)
    with pytest.raises(ValueError, match=r"X contains 1 .* the first is inf at index 3\."):
        kg.grad_sum(kg.Matern52(), X)
    with pytest.raises(ValueError, match=r"^x contains 1 .* the first is nan\. "):
        kg.grad(kg.RBF(), np.float64(np.nan), np.zeros(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_bad_single_point_in_several_dimensions_is_refused_on_the_lean_path(bad):
    # The lean grad in d > 1 checks its squared distances, not the points: a bad x makes
    # every one of them non-finite, and the general path then names x. explain's answer
    # (eager.applies) checks the points themselves, so it says no as the call does.
    Y = np.linspace(-1.0, 1.0, 40).reshape(20, 2)
    x = np.array([0.5, bad])
    assert not eager.applies("grad", kg.RBF(), x, Y)
    assert eager.applies("grad", kg.RBF(), x, Y, check_finite=False)
    with pytest.raises(ValueError, match=r"^x contains 1 non-finite .* at index 1\. "):
        kg.grad(kg.RBF(), x, Y)
    with np.errstate(invalid="ignore"):  # inf * 0 in the unchecked result: NumPy's warning
        assert np.isnan(kg.grad(kg.RBF(), x, Y, check_finite=False)).any()


@pytest.mark.parametrize(
    "call_with",
    [
        lambda X: kg.cross_hessian(kg.RBF(), X),
        lambda X: kg.gradient_gram(kg.RBF(), X),
        lambda X: kg.hyper_grad(kg.RBF(), X),
        lambda X: kg.grad_sum(kg.kernel(lambda x, y: jnp.exp(-jnp.sum((x - y) ** 2))), X),
        lambda X: kg.grad_sum(kg.RBF(), jnp.asarray(X)),  # a JAX array on the CPU
        lambda X: kg.explain("grad_sum", kg.RBF(), X),
    ],
    ids=["cross_hessian", "gradient_gram", "hyper_grad", "pair_function", "jax_cpu", "explain"],
)
def test_every_entry_point_refuses_non_finite_points(call_with):
    X = _with_bad_entry(np.zeros((6, 2)), (4, 0), np.nan)
    with pytest.raises(ValueError, match=r"X contains 1 non-finite value\(s\).*\(4, 0\)"):
        call_with(X)


@pytest.mark.parametrize("n", [20, 400])
def test_check_finite_false_skips_the_check(n):
    X = _with_bad_entry(np.linspace(-1.0, 1.0, n), 2, np.nan)
    out = kg.grad_sum(kg.RBF(), X, check_finite=False)
    # Row 2 and (through x_2 in every sum) every row are NaN: nothing was refused.
    assert np.isnan(out).all()
    assert np.isnan(kg.gram(kg.RBF(), X, check_finite=False)[2]).all()


def test_huge_finite_values_are_not_mistaken_for_non_finite():
    # Their sum of squares overflows to inf: the exact check must then let them through.
    X = np.array([[1e200, 0.0], [-1e200, 1.0], [0.0, 2.0]])
    with pytest.warns(RuntimeWarning, match="overflow"):  # NumPy's, from the dot
        assert all_finite(X)
        assert not all_finite(_with_bad_entry(X, (1, 1), np.inf))
    assert all_finite(X[:, ::-1])  # non-contiguous: the exact check at once
    assert np.all(np.isfinite(kg.gram(kg.RBF(), X[:, 1:])))  # accepted and computed


@pytest.mark.parametrize("which", ["X", "y", "G", "test points"])
def test_gp_refuses_non_finite_observations(which):
    X, y, G = np.linspace(0.0, 1.0, 5)[:, None], np.zeros(5), np.zeros((5, 1))
    data = {"X": X, "y": y, "G": G}
    gp = kg.GradientGP(kg.RBF(lengthscale=0.4))
    if which == "test points":
        post = gp.condition(X, y, G)
        with pytest.raises(ValueError, match=r"test points contains 1 .*index \(1, 0\)\. "):
            post.mean(_with_bad_entry(X, (1, 0), np.inf))
        return
    index = 2 if which == "y" else (2, 0)
    data[which] = _with_bad_entry(data[which], index, np.nan)
    expected = rf"^{which} contains 1 non-finite value\(s\) .*at index {re.escape(str(index))}\."
    with pytest.raises(ValueError, match=expected):
        gp.condition(data["X"], data["y"], data["G"])
    with pytest.raises(ValueError, match=expected):
        kg.fit(gp, data["X"], data["y"], data["G"], steps=1)


# ------------------------------------------------------------- pair functions in NumPy


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: np.exp(-0.5 * np.sum((x - y) ** 2)),
        lambda x, y: float(np.sum((x - y) ** 2)),
    ],
    ids=["numpy", "float"],
)
@pytest.mark.parametrize(
    "use",
    [
        lambda k, X: kg.grad_sum(k, X),
        lambda k, X: kg.gram(k, X),
        lambda k, X: kg.grad(k, X[0], X),
        lambda k, X: kg.cross_hessian(k, X),
        lambda k, X: kg.grad_sum(kg.RBF() + kg.kernel(k), X),
        lambda k, X: kg.grad_sum(k, jnp.asarray(X)),
    ],
    ids=["grad_sum", "gram", "grad", "cross_hessian", "inside_a_sum", "jax_points"],
)
def test_a_pair_function_written_with_numpy_gets_a_type_error_at_its_first_call(fn, use):
    X = np.linspace(-1.0, 1.0, 12).reshape(6, 2)
    with pytest.raises(TypeError, match=r"write it with jax\.numpy") as info:
        use(fn, X)
    # Raised where the arguments are checked, not from inside a JAX trace.
    frames = [str(entry.path) for entry in info.traceback]
    assert not any("/jax/" in f for f in frames), frames


# ------------------------------------------------------------ annotations tell the truth


def _matches(value, hint) -> bool:
    """isinstance against a jaxtyping hint, which may be a Union of array types and shapes."""
    options = typing.get_args(hint) or (hint,)
    return any(isinstance(value, option) for option in options)


_ANNOTATED = (*TRANSFORMS, "cross_hessian", "laplacian_sum")


@pytest.mark.parametrize("one_d", [True, False], ids=["1d", "nd"])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("name", _ANNOTATED)
def test_return_annotations_say_what_comes_back(name, kind, one_d):
    """The jaxtyping return hint of every public transform accepts its actual result, in
    NumPy and JAX and for 1-D and d-dimensional points, and refuses the wrong rank."""
    hint = typing.get_type_hints(getattr(kg, name))["return"]
    X = np.linspace(-1.0, 1.0, 12)
    X = X if one_d else X.reshape(6, 2)
    convert = np.asarray if kind == "numpy" else jnp.asarray
    fn = getattr(kg, name)
    if name == "grad":
        out = fn(BY_ID["rbf"].kernel, convert(X[0]), convert(X))
    elif name in ("grad_sum", "gram_matvec", "laplacian_sum"):
        out = fn(BY_ID["rbf"].kernel, convert(X), None, convert(np.ones(len(X))))
    else:
        out = fn(BY_ID["rbf"].kernel, convert(X))
    assert type(out) is np.ndarray if kind == "numpy" else isinstance(out, jax.Array)
    assert _matches(out, hint), (hint, type(out), out.shape)
    assert not _matches(out[..., None, None, None], hint)  # a hint that fits anything fails
