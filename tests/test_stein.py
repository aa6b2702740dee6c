"""kernelgrad.stein: the KSD against a brute-force Stein kernel, its bootstrap test, SVGD.

The reference Stein kernel (``references.brute_stein_kernel``) is written out term by term
from AD of each kernel's pair call and its full Hessian in z = (x, y); the library computes
it from the kernels' order-2 tiles (or AD per pair for pair functions), tile by tile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import select
from references import brute_stein_kernel

import kernelgrad as kg

TWICE = select(lambda c: c.twice_smooth_at_zero)


def _sample(case, rng, n=12):
    """n points with a duplicate pair (r = 0) and scores of a shifted standard normal."""
    d = case.dim()
    X = rng.uniform(-1.5, 1.5, (n, d))
    X[4] = X[9]
    return X, -(X - 0.3)


def _statistics(M, w=None):
    """(V, U) from the dense Stein matrix, weights normalised to sum 1."""
    n = M.shape[0]
    a = np.full(n, 1.0 / n) if w is None else w / w.sum()
    v = a @ M @ a
    u = (v - np.sum(a * a * np.diag(M))) / (1.0 - np.sum(a * a))
    return v, u


@pytest.mark.parametrize("case", TWICE)
def test_ksd_matches_the_brute_force_stein_kernel(case, rng):
    X, S = _sample(case, rng)
    v, u = _statistics(brute_stein_kernel(case.kernel, X, S))
    scale = max(1.0, abs(v))
    assert abs(kg.stein.ksd(case.kernel, X, S, statistic="v") - v) <= 1e-12 * scale
    assert abs(kg.stein.ksd(case.kernel, X, S) - u) <= 1e-12 * scale


@pytest.mark.parametrize("case", select(lambda c: c.id in ("imq", "rbf_ard", "nested")))
def test_weighted_ksd_and_the_tiled_pass_over_many_blocks(case, rng, policy_with):
    X, S = _sample(case, rng, n=37)
    w = rng.uniform(0.1, 2.0, 37)
    v, u = _statistics(brute_stein_kernel(case.kernel, X, S), w)
    policy_with(tile_blocks=(8, 16))  # 5 x 3 tiles, ragged at both edges
    assert abs(kg.stein.ksd(case.kernel, X, S, statistic="v", weights=w) - v) <= 1e-12
    assert abs(kg.stein.ksd(case.kernel, X, S, weights=w) - u) <= 1e-12


def test_a_callable_score_one_dimensional_points_and_jax_in(rng):
    k = kg.InverseMultiquadric(lengthscale=0.7)
    X = rng.normal(size=40)
    expected = kg.stein.ksd(k, X[:, None], -X[:, None])
    assert isinstance(expected, float)
    assert kg.stein.ksd(k, X, -X) == pytest.approx(expected, rel=1e-13, abs=1e-15)
    score = lambda x: -x  # noqa: E731
    assert kg.stein.ksd(k, X[:, None], score) == pytest.approx(expected, rel=1e-13, abs=1e-15)
    with jax.enable_x64(True):
        Xj = jnp.asarray(X[:, None])
        inside = jax.jit(lambda X: kg.stein.ksd(k, X, -X))(Xj)
        assert isinstance(inside, jax.Array)
        assert float(inside) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_the_ksd_tells_the_target_from_a_shifted_sample(rng):
    # N(0, I) in d = 2: its own sample scores near 0; a sample shifted by 0.5 does not.
    # The V-statistic of a point set is never negative (k_p is positive definite).
    X = rng.normal(size=(400, 2))
    k = kg.InverseMultiquadric()
    own, shifted = kg.stein.ksd(k, X, -X), kg.stein.ksd(k, X + 0.5, -(X + 0.5))
    assert abs(own) < 5e-3 < 0.05 < shifted
    assert kg.stein.ksd(k, X, -X, statistic="v") > 0


def test_ksd_test_bootstrap_replicates_are_the_signed_u_statistics(rng):
    X = rng.normal(size=(30, 2))
    S = -X
    k = kg.InverseMultiquadric()
    result = kg.stein.ksd_test(k, X, S, n_boot=50, seed=3)
    M = brute_stein_kernel(k, X, S)
    np.fill_diagonal(M, 0.0)
    signs = np.random.default_rng(3).choice(np.array([-1.0, 1.0]), size=(30, 50))
    expected = np.einsum("ib,ij,jb->b", signs, M, signs) / (30 * 29)
    np.testing.assert_allclose(result.bootstrap, expected, rtol=1e-11, atol=1e-14)
    assert result.statistic == pytest.approx(M.sum() / (30 * 29), rel=1e-11)
    assert result.p_value == (1 + np.count_nonzero(expected >= result.statistic)) / 51


def test_ksd_test_accepts_the_target_and_rejects_a_wrong_one(rng, policy_with):
    X = rng.normal(size=(300, 2))
    k = kg.InverseMultiquadric()
    policy_with(stein_bootstrap_entries=300 * 64)  # draws in passes of 64
    fits = kg.stein.ksd_test(k, X, lambda x: -x, n_boot=200)
    wrong = kg.stein.ksd_test(k, X, lambda x: -x / 2.0, n_boot=200)  # N(0, 2 I)'s score
    assert fits.bootstrap.shape == (200,)
    assert fits.p_value > 0.05
    assert wrong.p_value < 0.01


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda X, S: kg.stein.ksd(kg.RBF(), X, S, statistic="w"), "statistic"),
        (lambda X, S: kg.stein.ksd(kg.RBF(), X, S[:, :1]), r"score has shape \(10, 1\)"),
        (lambda X, S: kg.stein.ksd(kg.RBF(), X, lambda x: x[:1]), r"returned shape \(1,\)"),
        (lambda X, S: kg.stein.ksd(kg.Matern32(), X, S), "Matern32 is not twice"),
        (lambda X, S: kg.stein.ksd(kg.RBF(), X[:1], S[:1]), "at least 2 points"),
        (lambda X, S: kg.stein.ksd(kg.RBF(), X, S, weights=np.eye(10)[0]), "positive weight"),
        (lambda X, S: kg.stein.ksd(kg.RBF(), X, S, weights=-np.ones(10)), "non-negative"),
        (lambda X, S: kg.stein.ksd(kg.RBF(), X, np.where(S > 0, np.nan, S)), "score contains"),
        (lambda X, S: kg.stein.ksd_test(kg.RBF(), X, S, n_boot=0), "n_boot"),
        (lambda X, S: kg.stein.svgd_direction(kg.Linear(), X, S), "stationary"),
    ],
    ids=[
        "statistic",
        "score_shape",
        "score_callable_shape",
        "matern32",
        "u_one_point",
        "u_one_weight",
        "negative_weights",
        "nan_score",
        "n_boot",
        "svgd_linear",
    ],
)
def test_bad_input_is_refused_with_a_clear_error(call, match, rng):
    X = rng.normal(size=(10, 2))
    with pytest.raises((ValueError, TypeError), match=match):
        call(X, -X)


def test_svgd_direction_matches_its_definition_and_svgd_lowers_the_ksd(rng):
    # phi(x_i) = 1/n sum_j [k(x_j, x_i) s(x_j) + grad_{x_j} k(x_j, x_i)], written out by AD.
    X = rng.normal(size=(25, 2)) + 1.0
    S = -X
    k = kg.RBF(lengthscale=0.8)
    with jax.enable_x64(True):
        Xj = jnp.asarray(X)
        pull = jax.vmap(lambda xi: jax.vmap(lambda xj, sj: k(xj, xi) * sj)(Xj, jnp.asarray(S)))
        push = jax.vmap(lambda xi: jax.vmap(lambda xj: jax.grad(k)(xj, xi))(Xj))
        expected = np.asarray((pull(Xj).sum(1) + push(Xj).sum(1)) / 25)
    np.testing.assert_allclose(kg.stein.svgd_direction(k, X, S), expected, atol=1e-13)
    with jax.enable_x64(True):
        step = jax.jit(lambda X: kg.stein.svgd_step(k, X, lambda x: -x, 0.1))(jnp.asarray(X))
    np.testing.assert_allclose(step, X + 0.1 * expected, atol=1e-13)
    with jax.enable_x64(True):
        moved = jax.jit(lambda X: kg.stein.svgd(X, lambda x: -x, steps=100))(jnp.asarray(X))
    imq = kg.InverseMultiquadric()
    before = kg.stein.ksd(imq, X, -X)
    after = kg.stein.ksd(imq, np.asarray(moved), -np.asarray(moved))
    assert after < before / 20


def test_the_benchmark_script_runs_small(tmp_path):
    # benchmarks/stein_perf.py at toy sizes: every part runs, and kernelgrad's KSD agrees
    # with the dense baseline's.
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "stein_perf.py"
    out = tmp_path / "stein.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["against_dense"]["relative_difference"] < 1e-12
    assert (
        result["against_dense"]["kernelgrad_temp_bytes"]
        < result["against_dense"]["dense_temp_bytes"]
    )
    assert result["large_n"]["n"] == 5000 and result["bootstrap"]["draws"] == 50
