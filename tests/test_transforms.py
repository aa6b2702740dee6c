"""Every transform, in every mode and dtype, on every kernel of the shared table.

References are brute-force float64 JAX AD of the kernel's pair function (``references.py``):
the full ``jax.jacfwd``/``jax.jacrev`` of the Gram matrix at small n. Each test runs on NumPy
inputs (small closed-form work runs eagerly in NumPy) and on JAX inputs (always jitted).
"""

from __future__ import annotations

import contextlib
import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, CASES, sample_points, select
from references import assert_close, dense_gram, dense_jacobian, max_relative_error

import kernelgrad as kg

ALL_MODES = ("closed", "forward", "reverse", "auto")
N, M = 5, 4  # small enough for the dense (n, m, n, d) references


def modes_for(case) -> list[str]:
    return [mode for mode in ALL_MODES if mode != "closed" or case.closed]


def as_kind(kind: str, dtype):
    """(converter, context) for building and consuming inputs of array kind ``kind``.

    JAX float64 arrays need x64 mode; it is turned on locally, around the call, never globally.
    """
    if kind == "numpy":
        return (lambda a: np.asarray(a, dtype)), contextlib.nullcontext()
    ctx = jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()
    return (lambda a: jnp.asarray(a, dtype)), ctx


@functools.cache
def problem(case_id: str, dtype_name: str):
    """Inputs (rounded to the dtype) and float64 dense-AD references for one case."""
    case = BY_ID[case_id]
    dtype = np.dtype(dtype_name)
    # crc32, not hash(): Python salts string hashes per process, so the points would change.
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    d = case.dim()
    X = sample_points(rng, N, d, dtype)
    Y = sample_points(rng, M, d, dtype)
    w = rng.normal(size=M).astype(dtype)
    W = rng.normal(size=(M, 2)).astype(dtype)
    K = dense_gram(case.kernel, X, Y)
    J = dense_jacobian(case.kernel, X, Y, method="fwd")
    J_rev = dense_jacobian(case.kernel, X, Y, method="rev")
    refs = {
        "gram": K,
        "jacobian": J,
        "grad": J[1],
        "grad_sum": J_rev.sum(axis=1),
        "grad_sum_weighted": np.einsum("ijd,j->id", J_rev, w.astype(np.float64)),
        "gram_matvec": K @ w.astype(np.float64),
        "gram_matmat": K @ W.astype(np.float64),
    }
    return (X, Y, w, W), refs, (J, J_rev)


def call_all(kernel, X, Y, w, W, mode):
    """Every transform on one problem, keyed like the references of :func:`problem`."""
    return {
        "gram": kg.gram(kernel, X, Y, mode=mode),
        "jacobian": kg.jacobian(kernel, X, Y, mode=mode),
        "grad": kg.grad(kernel, X[1], Y, mode=mode),
        "grad_sum": kg.grad_sum(kernel, X, Y, mode=mode),
        "grad_sum_weighted": kg.grad_sum(kernel, X, Y, w, mode=mode),
        "gram_matvec": kg.gram_matvec(kernel, X, Y, w, mode=mode),
        "gram_matmat": kg.gram_matvec(kernel, X, Y, W, mode=mode),
    }


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("case", select())
def test_every_transform_and_mode_matches_dense_ad(case, dtype, kind):
    (X, Y, w, W), refs, _ = problem(case.id, dtype.name)
    convert, ctx = as_kind(kind, dtype)
    array_type = np.ndarray if kind == "numpy" else jax.Array
    with ctx:
        for mode in modes_for(case):
            out = call_all(case.kernel, *map(convert, (X, Y, w, W)), mode)
            for name, ref in refs.items():
                got = out[name]
                where = f"{name}, mode={mode}"
                assert isinstance(got, array_type), f"{where}: got {type(got).__name__}"
                assert got.dtype == dtype, f"{where}: dtype {got.dtype}, expected {dtype}"
                assert got.shape == ref.shape, f"{where}: shape {got.shape} != {ref.shape}"
                assert_close(got, ref, dtype, err_msg=where)


def test_dense_references_agree():
    """The two brute-force references, jacfwd and jacrev, agree: neither is a typo."""
    for case in CASES:
        _, _, (J_fwd, J_rev) = problem(case.id, "float64")
        assert_close(J_fwd, J_rev, np.float64, err_msg=case.id)
        assert np.all(np.isfinite(J_fwd)), case.id


@pytest.mark.parametrize("case", select())
def test_all_modes_agree_to_round_off(case):
    """Every mode gives the same float64 numbers as every other, to near round-off."""
    (X, Y, w, W), _, _ = problem(case.id, "float64")
    results = {mode: call_all(case.kernel, X, Y, w, W, mode) for mode in modes_for(case)}
    first, *others = results
    for mode in others:
        for name, value in results[mode].items():
            err = max_relative_error(value, results[first][name])
            assert err <= 1e-12, f"{name}: {mode} vs {first} differ by {err:.2e} (relative)"


@pytest.mark.parametrize("case", select())
def test_y_none_means_y_is_x_and_only_x_i_moves(case):
    """With Y omitted, J[i, j] = d/dx_i k(x_i, x_j) with x_j held fixed (not the total derivative).

    The reference treats a copy of X as a constant second argument.
    """
    rng = np.random.default_rng(7)
    X = sample_points(rng, N, case.dim())
    J = dense_jacobian(case.kernel, X, X.copy())
    for mode in modes_for(case):
        assert_close(kg.gram(case.kernel, X, mode=mode), dense_gram(case.kernel, X, X))
        assert_close(kg.jacobian(case.kernel, X, mode=mode), J, err_msg=mode)
        assert_close(kg.grad_sum(case.kernel, X, mode=mode), J.sum(axis=1), err_msg=mode)
        assert_close(kg.grad(case.kernel, X[2], mode=mode), J[2, 2:3], err_msg=mode)


@pytest.mark.parametrize("case", select(lambda c: c.accepts(1)))
def test_one_dimensional_points_drop_the_d_axis(case):
    """Points of shape (n,) are n points in 1-D, and outputs lose their trailing d axis."""
    rng = np.random.default_rng(3)
    x = np.linspace(-1.0, 1.0, 7)
    y = rng.uniform(-1.0, 1.0, 6)
    w = rng.normal(size=6)
    k = case.kernel
    assert_close(kg.gram(k, x, y), kg.gram(k, x[:, None], y[:, None]))
    assert_close(kg.jacobian(k, x, y), kg.jacobian(k, x[:, None], y[:, None])[..., 0])
    assert_close(kg.grad_sum(k, x, y, w), kg.grad_sum(k, x[:, None], y[:, None], w)[:, 0])
    # The forum's grad_kernel(X) is grad(k, X[0], X): a scalar point against all of X.
    assert_close(kg.grad(k, x[0], x), kg.jacobian(k, x[:1], x)[0])
    assert kg.grad(k, x[0], x).shape == (7,)
    assert kg.grad_sum(k, x).shape == (7,)
    assert kg.jacobian(k, x, y).shape == (7, 6)


@pytest.mark.parametrize("transform", ["gram", "jacobian", "grad", "grad_sum", "gram_matvec"])
def test_closed_mode_on_a_pair_function_names_the_modes_that_apply(transform):
    k = BY_ID["pair_rbf"].kernel
    X = np.zeros((3, 2))
    fn = getattr(kg, transform)
    with pytest.raises(ValueError, match="closed") as info:
        fn(k, X[0] if transform == "grad" else X, mode="closed")
    for mode in ("forward", "reverse", "auto"):
        assert repr(mode) in str(info.value)


@pytest.mark.parametrize("transform", ["gram", "jacobian", "grad", "grad_sum", "gram_matvec"])
@pytest.mark.parametrize("mode", ["fwd", "Closed", "", "jvp"])
def test_unknown_mode_lists_the_valid_ones(transform, mode):
    X = np.zeros((3, 2))
    fn = getattr(kg, transform)
    with pytest.raises(ValueError, match="mode") as info:
        fn(kg.RBF(), X[0] if transform == "grad" else X, mode=mode)
    for valid in kg.MODES:
        assert repr(valid) in str(info.value)
    assert set(kg.MODES) == set(ALL_MODES)
