"""cross_hessian in every mode against brute-force ``jax.hessian`` of the pair function.

The reference differentiates the kernel's own ``k(x, y)`` as one function of z = (x, y):
``jax.hessian`` gives the (2d, 2d) matrix of second derivatives, whose off-diagonal block
``[:d, d:]`` is d^2 k / dx dy. It shares no code with kernelgrad's closed forms
(``kernel.tile(..., order=2)``) or its AD paths (``jacfwd`` of ``grad``).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, modes_for, points_with_a_duplicate, sample_points, select
from references import assert_close, brute_cross_hessian, max_relative_error

import kernelgrad as kg

MODES = ("closed", "forward", "reverse", "auto")
N, M = 5, 4


twice = select(lambda c: c.twice_smooth_at_zero)
not_twice = select(lambda c: not c.twice_smooth_at_zero)


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("case", twice)
def test_every_mode_matches_brute_force_hessian_including_r_zero(case, kind, rng):
    X, Y = points_with_a_duplicate(case, rng)
    ref = brute_cross_hessian(case.kernel, X, Y)
    assert np.all(np.isfinite(ref))
    with jax.enable_x64(True) if kind == "jax" else contextlib.nullcontext():
        convert = jnp.asarray if kind == "jax" else np.asarray
        for mode in modes_for(case):
            H = kg.cross_hessian(case.kernel, convert(X), convert(Y), mode=mode)
            assert isinstance(H, np.ndarray if kind == "numpy" else jax.Array)
            assert H.shape == ref.shape and H.dtype == np.float64
            assert_close(H, ref, np.float64, err_msg=f"mode={mode}")


@pytest.mark.parametrize("case", twice)
def test_all_modes_agree_to_round_off(case, rng):
    X, Y = points_with_a_duplicate(case, rng)
    results = {mode: kg.cross_hessian(case.kernel, X, Y, mode=mode) for mode in modes_for(case)}
    first = results[modes_for(case)[0]]
    for mode, H in results.items():
        assert max_relative_error(H, first) <= 1e-12, mode


@pytest.mark.parametrize("case", twice)
def test_y_none_differentiates_x_and_y_separately(case, rng):
    """With Y omitted the diagonal i = j is d2k/dx dy at r = 0, not the Hessian of k(x, x)."""
    X = sample_points(rng, N, case.dim())
    H = kg.cross_hessian(case.kernel, X)
    assert np.all(np.isfinite(H))
    assert_close(H, brute_cross_hessian(case.kernel, X, X.copy()))


@pytest.mark.parametrize(
    ("case_id", "factor"),
    [
        # k = v f(r^2 / l^2): d2k/dx_a dy_b at r = 0 is -2 v f'(0) delta_ab / l^2.
        ("rbf", 0.5),  # f = exp(-s/2): f'(0) = -1/2
        ("matern52", 5.0 / 6.0),  # f'(s) = -(5/6)(1 + sqrt(5 s)) exp(-sqrt(5 s))
        ("rq", 0.5),  # f = (1 + s / (2 alpha))^-alpha: f'(0) = -1/2
    ],
)
def test_closed_form_value_at_r_zero(case_id, factor):
    k = BY_ID[case_id].kernel
    x = np.array([[0.3, -1.2, 0.7]])
    expected = 2.0 * factor * float(k.variance) / float(k.lengthscale) ** 2 * np.eye(3)
    for mode in ("closed", "forward", "reverse"):
        assert_close(kg.cross_hessian(k, x, x, mode=mode)[0, 0], expected, err_msg=mode)


@pytest.mark.parametrize("case", not_twice)
@pytest.mark.parametrize("mode", MODES)
def test_matern12_and_32_are_refused_with_the_reason(case, mode):
    X = sample_points(np.random.default_rng(0), 3, case.dim())  # no coincident pairs
    with pytest.raises(ValueError, match="not twice differentiable at r = 0") as info:
        kg.cross_hessian(case.kernel, X, X + 1.0, mode=mode)
    assert "Matern" in str(info.value)
    assert "RBF" in str(info.value)  # the message names what to use instead


def test_a_composite_containing_matern32_is_refused():
    k = kg.RBF() + 0.5 * kg.Matern32()
    with pytest.raises(ValueError, match="Matern32"):
        kg.cross_hessian(k, np.zeros((2, 2)))


def test_closed_mode_on_a_pair_function_is_refused_with_alternatives():
    with pytest.raises(ValueError, match="forward"):
        kg.cross_hessian(BY_ID["pair_rbf"].kernel, np.zeros((2, 2)), mode="closed")


def test_one_dimensional_points_give_n_by_m():
    k = kg.Matern52(lengthscale=0.7)
    x, y = np.linspace(-1.0, 1.0, 6), np.linspace(-0.5, 2.0, 4)
    H = kg.cross_hessian(k, x, y)
    assert H.shape == (6, 4)
    assert_close(H, kg.cross_hessian(k, x[:, None], y[:, None])[..., 0, 0])


@pytest.mark.parametrize("case_id", ["rbf", "matern52", "sum_rbf_matern52", "rq"])
def test_high_dimension_with_duplicates_uses_the_expansion_and_stays_exact(case_id, rng):
    """d = 50 takes the |x|^2 + |y|^2 - 2 x.y path; duplicates must still give s = 0."""
    k = BY_ID[case_id].kernel
    X = rng.normal(size=(6, 50)) * 0.2
    Y = np.concatenate([X[:2], rng.normal(size=(3, 50)) * 0.2])
    ref = brute_cross_hessian(k, X, Y)
    for mode in ("closed", "forward"):
        assert_close(kg.cross_hessian(k, X, Y, mode=mode), ref, err_msg=mode)


def test_float32_against_brute_force_float64_at_a_realistic_size(rng):
    k = kg.RBF(variance=1.3, lengthscale=0.8) * kg.RationalQuadratic(alpha=2.0)
    X = sample_points(rng, 300, 3)
    Y = sample_points(rng, 200, 3)
    # The float32 points, rounded once, are the reference's points too.
    X, Y = X.astype(np.float32).astype(np.float64), Y.astype(np.float32).astype(np.float64)
    ref = brute_cross_hessian(k, X, Y)
    got = kg.cross_hessian(k, X.astype(np.float32), Y.astype(np.float32))
    assert got.dtype == np.float32
    assert_close(got, ref, np.float32)


def test_a_cross_hessian_that_cannot_fit_is_refused_before_allocating():
    X = np.zeros((100_000, 10))  # H would be 10^12 float64 entries: 8 TB
    with pytest.raises(MemoryError, match="cross_hessian"):
        kg.cross_hessian(kg.RBF(), X)


# --------------------------------------------------------------------- the Laplacian sum


def brute_laplacian_sum(kernel, X, Y, w) -> np.ndarray:
    """sum_j w_j trace(d^2 k / dx dy), from the brute-force cross-Hessian: (n,)."""
    H = brute_cross_hessian(kernel, X, Y)
    return np.einsum("ijaa,j->i", H, np.asarray(w, np.float64))


@pytest.mark.parametrize("kind", ["numpy", "jax"])
@pytest.mark.parametrize("case", twice)
def test_laplacian_sum_in_every_mode_matches_the_brute_force_trace_including_r_zero(
    case, kind, rng
):
    X, Y = points_with_a_duplicate(case, rng)
    w = rng.normal(size=len(Y))
    ref = brute_laplacian_sum(case.kernel, X, Y, w)
    with jax.enable_x64(True) if kind == "jax" else contextlib.nullcontext():
        convert = jnp.asarray if kind == "jax" else np.asarray
        for mode in modes_for(case):
            L = kg.laplacian_sum(case.kernel, convert(X), convert(Y), convert(w), mode=mode)
            assert isinstance(L, np.ndarray if kind == "numpy" else jax.Array)
            assert L.shape == (len(X),) and L.dtype == np.float64
            assert_close(L, ref, np.float64, err_msg=f"mode={mode}")


@pytest.mark.parametrize("case_id", ["rbf_ard", "product_poly_rq", "nested"])
def test_laplacian_sum_compiled_and_tiled_match_eager(case_id, rng, policy_with):
    """The same op through every engine: eager NumPy, one compiled program, and the tiled
    matrix-free reduction (ragged tiles, Y = X and unit weights)."""
    case = BY_ID[case_id]
    X = sample_points(rng, 70, case.dim())
    ref = brute_laplacian_sum(case.kernel, X, X, np.ones(70))
    assert kg.explain("laplacian_sum", case.kernel, X).engine == "eager"
    assert_close(kg.laplacian_sum(case.kernel, X), ref, np.float64, err_msg="eager")
    policy_with(eager_max_pairs=0)
    assert kg.explain("laplacian_sum", case.kernel, X).engine == "dense"
    assert_close(kg.laplacian_sum(case.kernel, X), ref, np.float64, err_msg="compiled")
    policy_with(tiled_min_pairs=100, tile_blocks=(16, 24))
    assert kg.explain("laplacian_sum", case.kernel, X).engine == "tiled"
    assert_close(kg.laplacian_sum(case.kernel, X), ref, np.float64, err_msg="tiled")
    for mode in ("forward", "reverse"):
        tiled_ad = kg.laplacian_sum(case.kernel, X, mode=mode)
        assert_close(tiled_ad, ref, np.float64, err_msg=f"tiled {mode}")


def test_laplacian_sum_refuses_what_is_not_twice_differentiable_and_takes_1d_points():
    with pytest.raises(ValueError, match="laplacian_sum needs second derivatives"):
        kg.laplacian_sum(BY_ID["matern32"].kernel, np.zeros((3, 2)))
    X = np.linspace(-1.0, 1.0, 5)
    L = kg.laplacian_sum(BY_ID["rbf_unit"].kernel, X)
    assert L.shape == (5,)
    assert_close(
        L, brute_laplacian_sum(BY_ID["rbf_unit"].kernel, X[:, None], X[:, None], np.ones(5))
    )
