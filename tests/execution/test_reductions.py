"""The tiled, matrix-free reductions against dense references: every kernel, ragged sizes.

Small row and column blocks force many tiles (and padding in both directions), so these run
the whole tiling machinery at sizes where a dense float64 reference is cheap. The float32
tests sum over 10^6 columns, the size the accuracy promise is made for.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import BY_ID, sample_points, select
from references import max_relative_error, pairwise_jacobian, rbf_closed_form

import kernelgrad as kg
from kernelgrad.execution import ops, padding, reductions, sharding

#: n and m are not multiples of any block below, so rows and columns are both padded.
N, M = 37, 101
#: 5 row blocks of 8 and 7 column blocks of 16 (``reductions._split`` balances them).
BLOCKS = {"row_block": 8, "col_block": 16}
#: float64 round-off of sums of ~100 terms, with room for the matmul form's cancellation.
F64_RTOL = 1e-11


def _tiled(op, method, kernel, X, Y, W, **blocks):
    """The tiled reduction in float64 (local x64 context), as NumPy."""
    with jax.enable_x64(True):
        X, Y, W = (jnp.asarray(a) for a in (X, Y, W))
        fn = jax.jit(lambda X, Y, W: ops.tiled(op, method, kernel, X, Y, W, **blocks))
        return np.asarray(fn(X, Y, W))


def _problem(case, rng, n=N, m=M):
    d = case.dim()
    return sample_points(rng, n, d), sample_points(rng, m, d), rng.normal(size=m)


def _methods(case):
    return (["closed"] if case.closed else []) + ["forward", "reverse"]


@pytest.mark.parametrize("case", select())
def test_tiled_grad_sum_matches_dense_for_every_kernel(case, rng):
    X, Y, w = _problem(case, rng)
    # Independent reference: one float64 AD gradient per pair, summed with the weights.
    expected = np.einsum("ija,j->ia", pairwise_jacobian(case.kernel, X, Y), w)
    dense = np.asarray(kg.grad_sum(case.kernel, X, Y, w))  # the untiled path, same library
    assert max_relative_error(dense, expected) <= F64_RTOL
    # Every method for a built-in and the pair functions (AD tiles); the closed form else.
    every = case.id in ("rbf", "pair_rbf", "pair_forum")
    for method in _methods(case) if every else _methods(case)[:1]:
        got = _tiled("grad_sum", method, case.kernel, X, Y, w, **BLOCKS)
        assert got.shape == (N, case.dim())
        assert max_relative_error(got, expected) <= F64_RTOL, method


@pytest.mark.parametrize("case", select(lambda c: c.id in ("rbf_ard", "nested", "pair_rbf")))
@pytest.mark.parametrize("p", [None, 3], ids=["W(m,)", "W(m,p)"])
def test_tiled_gram_matvec_matches_dense(case, p, rng):
    X, Y, _ = _problem(case, rng)
    W = rng.normal(size=(M,) if p is None else (M, p))
    with jax.enable_x64(True):
        K = np.asarray(jax.jit(lambda X, Y: kg.gram(case.kernel, X, Y))(X, Y))
    expected = K @ W
    method = "closed" if case.closed else "forward"
    W2 = W[:, None] if p is None else W  # the reduction's own contract is (m, p)
    got = _tiled("gram_matvec", method, case.kernel, X, Y, W2, **BLOCKS)
    assert max_relative_error(got.reshape(expected.shape), expected) <= F64_RTOL
    public = kg.gram_matvec(case.kernel, X, Y, W)  # dense path at this size
    assert public.shape == expected.shape
    assert max_relative_error(public, expected) <= F64_RTOL


@pytest.mark.parametrize("same", [True, False], ids=["Y=X", "Y"])
def test_public_calls_route_to_the_tiled_path_above_the_threshold(
    monkeypatch, rng, same, policy_with
):
    case = BY_ID["matern32_ard"]
    X, Y, w = _problem(case, rng, n=263, m=187)  # above the eager limit: jitted
    if same:
        Y, w = X, rng.normal(size=263)
    assert len(X) * len(Y) > kg.policy.current().eager_max_pairs
    dense_g = kg.grad_sum(case.kernel, X, Y, w)
    dense_k = kg.gram_matvec(case.kernel, X, Y, w)
    W = np.stack([w, np.cos(w)], axis=1)  # (m, 2)
    dense_kp = kg.gram_matvec(case.kernel, X, Y, W)
    calls = []
    original = sharding.tiled

    def spy(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    # Lower the threshold so that these sizes count as large; the engine reads it per call.
    policy_with(tiled_min_pairs=1000)
    monkeypatch.setattr(sharding, "tiled", spy)
    tiled_g = kg.grad_sum(case.kernel, X, Y, w)
    tiled_k = kg.gram_matvec(case.kernel, X, Y, w)
    tiled_kp = kg.gram_matvec(case.kernel, X, Y, W)
    assert calls == ["grad_sum", "gram_matvec", "gram_matvec"]
    assert tiled_kp.shape == (len(X), 2)
    assert max_relative_error(tiled_kp, dense_kp) <= F64_RTOL
    assert isinstance(tiled_g, np.ndarray) and tiled_g.dtype == np.float64
    assert tiled_g.shape == dense_g.shape and tiled_k.shape == dense_k.shape
    assert max_relative_error(tiled_g, dense_g) <= F64_RTOL
    assert max_relative_error(tiled_k, dense_k) <= F64_RTOL


def test_kahan_keeps_float32_sums_over_many_blocks_exact(rng):
    # 2^20 float32 copies of 0.1 in 2^14 blocks of 64: a plain running sum would round at
    # each of the 2^14 additions (about 2^14 * eps / 2 ~ 1e-3 relative in the worst case).
    m, block = 1 << 20, 64
    w = jnp.full((m,), 0.1, jnp.float32)
    x = jnp.zeros((3, 1), jnp.float32)

    def block_sum(_, __, wb):  # (rows, 1): every row gets the block's sum of weights
        return jnp.broadcast_to(jnp.sum(wb), (3, 1))

    run = jax.jit(lambda x, w: reductions.tiled_row_reduce(block_sum, x, w, w, col_block=block))
    got = np.asarray(run(x, w))
    exact = m * float(np.float32(0.1))  # the float32 values summed exactly, in float64
    assert got.shape == (3, 1)
    assert np.max(np.abs(got - exact)) / exact <= 1e-6
    # The same blocks added without compensation lose far more: the test can tell them apart.
    naive = np.float32(0)
    for s in np.asarray(w).reshape(-1, block).sum(axis=1, dtype=np.float32):
        naive = np.float32(naive + s)
    assert abs(float(naive) - exact) / exact > 1e-5


def _rbf_grad_sum_f64(X, Y, w, lengthscale):
    """sum_j w_j d/dx_i exp(-|x_i - y_j|^2 / (2 l^2)) = -sum_j w_j (x_i - y_j) k_ij / l^2,
    in NumPy float64, a row at a time (so never an n x m x d buffer)."""
    out = np.empty_like(X)
    for i, x in enumerate(X):
        diff = x - Y  # (m, d)
        k = np.exp(-np.sum(diff * diff, axis=1) / (2 * lengthscale**2))
        out[i] = -(w * k) @ diff / lengthscale**2
    return out


def test_float32_sums_over_a_million_terms_keep_1e_5(rng):
    n, m, ls = 24, 1_000_000, 0.8
    # float32 values, held in float64: the reference computes on exactly the same inputs.
    X, Y = (
        rng.uniform(-1.5, 1.5, s).astype(np.float32).astype(np.float64) for s in ((n, 3), (m, 3))
    )
    w = rng.uniform(0.5, 1.5, m).astype(np.float32).astype(np.float64)
    expected = _rbf_grad_sum_f64(X, Y, w, ls)
    k = kg.RBF(lengthscale=ls)
    assert n * m > kg.policy.current().tiled_min_pairs  # the public call takes the tiled path
    X32, Y32, w32 = (jnp.asarray(a.astype(np.float32)) for a in (X, Y, w))
    got = kg.grad_sum(k, X32, Y32, w32)
    assert got.dtype == jnp.float32
    assert max_relative_error(got, expected) <= 1e-5
    # K @ W over the same million columns: row sums of positive terms, no cancellation.
    kw = kg.gram_matvec(k, X32, Y32, w32)
    kw_expected = np.array([w @ np.exp(-np.sum((x - Y) ** 2, 1) / (2 * ls**2)) for x in X])
    assert np.max(np.abs(np.asarray(kw, np.float64) - kw_expected) / kw_expected) <= 1e-5


def _sqrt_pair(x, y):
    """exp(-|x - y|): a naive distance whose AD gradient is NaN where x == y."""
    return jnp.exp(-jnp.sqrt(jnp.sum((x - y) ** 2)))


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_padded_points_never_make_a_nan(method, rng):
    # The origin is in X and nowhere in Y. Padding columns with zeros would put a y at the
    # origin, where this kernel's gradient is NaN (and NaN * weight 0 is NaN); copies of a
    # real column keep every pair a real, distinct pair.
    X = np.concatenate([np.zeros((1, 2)), rng.uniform(1.0, 2.0, (N - 1, 2))])
    Y = rng.uniform(1.0, 2.0, (M, 2))
    w = rng.normal(size=M)
    got = _tiled("grad_sum", method, kg.kernel(_sqrt_pair), X, Y, w, **BLOCKS)
    assert np.all(np.isfinite(got))
    expected = np.einsum("ija,j->ia", pairwise_jacobian(_sqrt_pair, X, Y), w)
    assert max_relative_error(got, expected) <= F64_RTOL


def test_engine_bucket_padding_never_makes_a_nan(rng):
    # Same trap through the public call on JAX input, padded to the engine's size buckets.
    X = np.concatenate([np.zeros((1, 2)), rng.uniform(1.0, 2.0, (20, 2))]).astype(np.float32)
    Y = rng.uniform(1.0, 2.0, (21, 2)).astype(np.float32)
    assert padding.dense_bucket(21) > 21  # padded
    got = kg.grad_sum(kg.kernel(_sqrt_pair), jnp.asarray(X), jnp.asarray(Y), mode="forward")
    assert np.all(np.isfinite(np.asarray(got)))


def test_blocks_split_evenly_and_buckets_bound_padding():
    # _split: the fewest blocks of at most `block`, equal sizes rounded up to 8.
    assert reductions._split(101, 16) == (7, 16)  # ceil(101/16) = 7, ceil(101/7) = 15 -> 16
    assert reductions._split(4096, 512) == (8, 512)
    assert reductions._split(5, 512) == (1, 5)  # tiny: no alignment, no padding
    for n in [1, 31, 32, 33, 100, 1000, 12345, 10**6 + 1]:
        b = padding.fine_bucket(n)
        assert n <= b <= n + n / 32


# ------------------------------------------------------------------ the prepared GPU script

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_gpu_scale_script_runs_small_on_cpu(tmp_path):
    # benchmarks/gpu_scale.py is meant for one short run on a GPU: run it here at toy sizes
    # so that every peer, the accuracy check and the JSON it writes are known to work.
    out = tmp_path / "gpu_scale.json"
    proc = subprocess.run(
        [sys.executable, str(_BENCHMARKS / "gpu_scale.py"), "--small", "--repeats", "1", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    names = {"kernelgrad", "naive_row_tiled", "dense_xla", "tiled_64x128", "pallas_32x64"}
    assert names <= set(result["results"])
    for name, entry in result["results"].items():
        assert "error" not in entry, (name, entry.get("error"))
        assert entry["pairs_per_s"] > 0
    accuracy = result["accuracy"]
    assert accuracy["rows"] == 100
    for name in ("kernelgrad", "naive_row_tiled", "pallas_32x64"):
        assert accuracy[name] <= 1e-5, name  # float32 against the float64 reference
    summary = result["summary"]
    assert {"kernelgrad_over_naive_row_tiled", "kernelgrad_over_dense_xla"} <= set(summary)


def test_gpu_scale_pallas_kernel_pads_columns_to_a_power_of_two(rng):
    # The script's fallback shape for Triton, checked in Pallas's interpreter.
    spec = importlib.util.spec_from_file_location("gpu_scale", _BENCHMARKS / "gpu_scale.py")
    gpu_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_scale)
    X = rng.uniform(-1.5, 1.5, (45, 3)).astype(np.float32)
    Y = rng.uniform(-1.5, 1.5, (150, 3)).astype(np.float32)  # padded to 256 columns
    w = rng.uniform(0.5, 1.5, 150).astype(np.float32)
    got = gpu_scale.pallas_rbf_grad_sum(X, Y, w, br=16, bc=32, interpret=True, pow2=True)
    expected = _rbf_grad_sum_f64(X.astype(np.float64), Y.astype(np.float64), w, 1.0)
    assert max_relative_error(got, expected) <= 1e-6


def _textbook(kernel, X, Y, w):
    """(K, the weighted grad map) of an RBF from the textbook formula."""
    K, _, G = rbf_closed_form(X, Y, w, float(kernel.variance), kernel.lengthscale)
    return K, G


@pytest.mark.parametrize("devices", [1, None], ids=["one-device", "four-devices"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_an_rbf_runs_factorised_tiles_and_matches_the_textbook_formula(
    dtype, devices, monkeypatch, rng, policy_with
):
    """Above the tiled threshold an RBF (ARD, a variance, points centred far from the origin)
    takes the factorised tiles for grad_sum and gram_matvec, on one device and over four;
    every result equals the textbook formula."""
    kernel = kg.RBF(variance=1.7, lengthscale=np.array([0.6, 1.0, 2.5]))
    X = (rng.normal(size=(300, 3)) + 40.0).astype(dtype)  # the centring keeps exp in range
    Y = (rng.normal(size=(211, 3)) + 40.0).astype(dtype)
    w, W = rng.normal(size=211).astype(dtype), rng.normal(size=(211, 2)).astype(dtype)
    methods = []
    original = sharding.tiled
    monkeypatch.setattr(
        sharding, "tiled", lambda *a, **kw: methods.append(a[1]) or original(*a, **kw)
    )
    policy_with(tiled_min_pairs=1000, max_local_devices=devices)
    g, kw = kg.grad_sum(kernel, X, Y, w), kg.gram_matvec(kernel, X, Y, W)
    plane = kg.RBF(variance=1.7, lengthscale=np.array([0.6, 1.0]))
    same = kg.grad_sum(plane, X[:, :2], weights=w[:1].repeat(300))  # Y = X, d = 2: tiled
    assert methods == ["gaussian"] * 3
    k, grad_map = _textbook(kernel, X, Y, w)
    _, plane_map = _textbook(plane, X[:, :2], X[:, :2], np.full(300, w[0], np.float64))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for out, brute in [
        (g, grad_map),
        (kw, k @ W),
        (same, plane_map),
    ]:
        assert out.dtype == dtype
        np.testing.assert_allclose(out, brute, rtol=0, atol=tol * np.max(np.abs(brute)))


def test_points_out_of_the_factorisations_range_take_the_closed_tiles(
    monkeypatch, rng, policy_with
):
    """One point 40 lengthscales from the others: exp(z_i . z_j) could overflow, so the
    closed-form tiles run, and the answer is still the textbook one."""
    X, Y, w = rng.normal(size=(300, 3)), rng.normal(size=(211, 3)), rng.normal(size=211)
    X[0] = [80.0, 0.0, 0.0]
    methods = []
    original = sharding.tiled
    monkeypatch.setattr(
        sharding, "tiled", lambda *a, **kw: methods.append(a[1]) or original(*a, **kw)
    )
    policy_with(tiled_min_pairs=1000)
    g = kg.grad_sum(kg.RBF(), X, Y, w)
    assert methods == ["closed"] and np.all(np.isfinite(g))
    _, brute = _textbook(kg.RBF(), X, Y, w)
    np.testing.assert_allclose(g, brute, rtol=0, atol=1e-12 * np.max(np.abs(brute)))
