"""Kernel Stein discrepancies and Stein variational gradient descent, matrix-free at every n.

For a base kernel k and the score s(x) = grad log p(x) of a target p (known up to its
normalising constant), the Stein kernel is

    k_p(x, y) = s(x).s(y) k(x, y) + s(x).grad_y k(x, y) + s(y).grad_x k(x, y)
                + trace(grad_x grad_y k(x, y)),

and the squared kernel Stein discrepancy of a weighted sample (x_i, w_i) is the double sum
sum_ij w_i w_j k_p(x_i, x_j) (the V-statistic), or the same sum without i = j, rescaled to be
unbiased (the U-statistic). It is zero exactly when the sample's distribution is p (for a
suitable k, such as :class:`kernelgrad.InverseMultiquadric`).

**How it is computed.** Each (row block, column block) tile of k_p comes from the kernel's
order-2 tile (:meth:`kernelgrad.AbstractKernel.tile`): the value, the first-order terms
contracted with the scores as matrix products, and the trace of the cross-Hessian from its
terms (:func:`kernelgrad.derivatives.hessian.trace_hessian`), O(d) per pair and never a
d x d block. The tiles are summed by the same tiled reduction as ``grad_sum``
(:func:`kernelgrad.execution.reductions.tiled_row_reduce`), so memory is O((n + tile) d),
whatever n. One pass computes every term: written as separate ``gram_matvec``, ``grad_sum``
and ``laplacian_sum`` calls it would evaluate the kernel's profile three times per pair.
Kernels without rules (pair functions) take the same terms by AD per pair, O(d^2) for the
trace.

The wild bootstrap of :func:`ksd_test` multiplies the same tiles by a block of Rademacher
draws at once: n^2 (d + draws) work, and no n x n matrix.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import transforms
from .derivatives import hessian, terms
from .execution import compile_cache, padding, policy
from .execution.inputs import local_x64, prepare, require_finite
from .execution.reductions import tiled_row_reduce
from .kernels import RBF, AbstractKernel, AbstractStationaryKernel
from .kernels import kernel as as_kernel

STATISTICS = ("u", "v")


# --------------------------------------------------------------------------- Stein tiles


def _against_rows(xp, f: terms.Field, S, X, Y, Xc, Yc):
    """sum_a S_ia f_ija for every pair: a field contracted with a vector per row."""
    scaled = S * xp.broadcast_to(f.scale, (X.shape[1],))
    if f.kind == "diff":
        return xp.sum(scaled * Xc, axis=1)[:, None] - terms.matmul(xp, scaled, Yc.T)
    if f.kind == "x":
        return xp.sum(scaled * X, axis=1)[:, None]
    return terms.matmul(xp, scaled, Y.T)


def _against_columns(xp, f: terms.Field, T, X, Y, Xc, Yc):
    """sum_a T_ja f_ija for every pair: a field contracted with a vector per column."""
    scaled = T * xp.broadcast_to(f.scale, (X.shape[1],))
    if f.kind == "diff":
        return terms.matmul(xp, Xc, scaled.T) - xp.sum(scaled * Yc, axis=1)[None, :]
    if f.kind == "x":
        return terms.matmul(xp, X, scaled.T)
    return xp.sum(scaled * Y, axis=1)[None, :]


def stein_tile(kernel: AbstractKernel, X, S, Y, T):
    """k_p(x_i, y_j) for points X (n, d) with scores S, against Y (m, d) with scores T."""
    if not kernel.has_closed_form:
        return _ad_stein_tile(kernel, X, S, Y, T)
    Xc, Yc = terms.centre(jnp, X, Y)
    tile = kernel.tile(jnp, X, Y, Xc, Yc, order=2)
    out = tile.value * terms.matmul(jnp, S, T.T)
    for vec in tile.dy:  # s(x) . grad_y k
        out = out + vec.coef * _against_rows(jnp, vec.field, S, X, Y, Xc, Yc)
    for vec in tile.dx:  # s(y) . grad_x k
        out = out + vec.coef * _against_columns(jnp, vec.field, T, X, Y, Xc, Yc)
    return out + hessian.trace_hessian(jnp, tile, X, Y, Xc, Yc)


def _stein_pair(kernel, x, s, y, t):
    value = kernel(x, y)
    grad_x, grad_y = jax.grad(kernel, argnums=(0, 1))(x, y)
    trace = jnp.trace(jax.jacfwd(jax.grad(kernel, argnums=0), argnums=1)(x, y))
    return (s @ t) * value + s @ grad_y + t @ grad_x + trace


def _ad_stein_tile(kernel, X, S, Y, T):
    row = jax.vmap(lambda y, t, x, s: _stein_pair(kernel, x, s, y, t), in_axes=(0, 0, None, None))
    return jax.vmap(lambda x, s: row(Y, T, x, s))(X, S)


@compile_cache.jit(static_argnames=("row_block", "col_block"))
def _stein_matvec(kernel, X, S, W, *, row_block=None, col_block=None):
    """sum_j k_p(x_i, x_j) W_j: (n, p), one tiled pass over the pairs."""

    def tile_fn(rows, columns, Wb):
        return terms.matmul(jnp, stein_tile(kernel, *rows, *columns), Wb)

    return tiled_row_reduce(tile_fn, (X, S), (X, S), W, row_block=row_block, col_block=col_block)


@compile_cache.jit
def _stein_diagonal(kernel, X, S):
    """k_p(x_i, x_i) for every i: (n,)."""
    one = lambda x, s: stein_tile(kernel, x[None], s[None], x[None], s[None])[0, 0]  # noqa: E731
    return jax.vmap(one)(X, S)


# --------------------------------------------------------------------------- inputs


class _Sample(NamedTuple):
    kernel: AbstractKernel
    X: Any  # (n, d)
    S: Any  # (n, d) scores
    a: Any  # (n,) weights summing to 1
    is_jax: bool


def _sample(k, X, score, weights, what: str) -> _Sample:
    p = prepare(k, X, None, weights)
    hessian.check_twice_differentiable(p.kernel, what)
    dtype = p.dtype
    if callable(score):
        with local_x64(dtype):
            S = jax.vmap(score)(jnp.asarray(p.X))
        if jnp.shape(S) != p.X.shape:
            raise ValueError(
                f"score(x) must return the gradient of log p at x, of shape ({p.d},) for a "
                f"point of shape ({p.d},); it returned shape {jnp.shape(S)[1:]}."
            )
        S = np.asarray(S, dtype) if not p.is_jax else S
    else:
        S = score
        if isinstance(S, jax.Array) and not isinstance(S, jax.core.Tracer):
            S = np.asarray(S)
        shape = jnp.shape(S)
        if shape == (p.n,) and p.d == 1:  # 1-D points, one scalar score each
            S = S[:, None]
        elif shape != (p.n, p.d):
            raise ValueError(
                f"score has shape {shape}; expected ({p.n}, {p.d}), one score (the gradient of "
                "log p) per point of X, or a callable score(x) for one point."
            )
        if not isinstance(S, jax.core.Tracer):
            S = np.asarray(S, dtype)
    if isinstance(S, np.ndarray):
        require_finite("score", S, skippable=False)
    a = np.ones(p.n, dtype) if p.W is None else p.W
    if isinstance(a, np.ndarray):
        if np.any(a < 0) or not a.sum() > 0:
            raise ValueError("weights must be non-negative with a positive sum.")
    a = a / a.sum()
    return _Sample(p.kernel, p.X, S, a, p.is_jax)


def _padded(sample: _Sample):
    """The sample padded to a size bucket (weight 0 on the copies), so that a growing n
    compiles a handful of programs."""
    if not isinstance(sample.X, np.ndarray):
        return sample.X, sample.S, sample.a
    size = padding.fine_bucket(sample.X.shape[0])
    return (
        padding.pad_rows(sample.X, size, True),
        padding.pad_rows(sample.S, size, True),
        padding.pad_rows(sample.a, size, False),
    )


def _result(value, is_jax: bool):
    return value if is_jax else float(value)


# --------------------------------------------------------------------------- the KSD


def ksd(k, X, score, *, statistic: str = "u", weights=None):
    """The squared kernel Stein discrepancy of the sample X against the target of ``score``.

    Args:
        k: a twice-differentiable kernel (``kernelgrad.InverseMultiquadric()`` is the usual
            choice), or a pair function.
        X: the sample, (n, d) or (n,).
        score: the target's score grad log p, as an (n, d) array at X or a callable
            ``score(x)`` on one point (d,), evaluated once per point.
        statistic: ``"u"`` (unbiased, without the i = j terms; needs n >= 2) or ``"v"``
            (the plain double sum, never negative).
        weights: (n,) non-negative sample weights (normalised here); ``None``: equal.

    Returns:
        The squared KSD: a float for NumPy input, a JAX scalar for JAX input.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> X = np.random.default_rng(0).normal(size=(500, 2))
        >>> kg.stein.ksd(kg.InverseMultiquadric(), X, -X) < 1e-2  # N(0, I): score -x
        True
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be 'u' or 'v', got {statistic!r}.")
    sample = _sample(k, X, score, weights, "ksd")
    if statistic == "u" and (
        sample.X.shape[0] < 2
        or (isinstance(sample.a, np.ndarray) and np.count_nonzero(sample.a) < 2)
    ):
        raise ValueError(
            "The U-statistic needs at least 2 points of positive weight; use statistic='v'."
        )
    Xp, Sp, ap = _padded(sample)
    with local_x64(sample.X.dtype):
        total = jnp.dot(ap, _stein_matvec(sample.kernel, Xp, Sp, ap[:, None])[:, 0])
        if statistic == "u":
            a = sample.a
            square = jnp.sum(a * a)
            total = total - jnp.sum(a * a * _stein_diagonal(sample.kernel, sample.X, sample.S))
            total = total / (1.0 - square)
        return _result(total, sample.is_jax)


class KSDTest(NamedTuple):
    """The result of :func:`ksd_test`."""

    statistic: float  #: the squared KSD, U-statistic
    p_value: float  #: (1 + #{bootstrap >= statistic}) / (1 + n_boot)
    bootstrap: np.ndarray  #: the n_boot bootstrap statistics


def ksd_test(k, X, score, *, n_boot: int = 1000, seed: int = 0) -> KSDTest:
    """Goodness-of-fit test of "X was drawn from p" by the KSD's wild bootstrap.

    The U-statistic U = sum_{i != j} k_p(x_i, x_j) / (n (n - 1)) is compared with its
    bootstrap replicates sum_{i != j} e_i e_j k_p(x_i, x_j) / (n (n - 1)) for independent
    Rademacher signs e (Liu, Lee and Jordan, 2016; Chwialkowski, Strathmann and Gretton,
    2016). For independent draws; a Markov chain's samples should be thinned first.

    All the draws share one pass over the pairs (blocks of draws at a time): n^2 (d + draws)
    work, O(n draws) memory, never an n x n matrix.

    Args:
        k, X, score: as for :func:`ksd`.
        n_boot: number of bootstrap draws.
        seed: seed of the Rademacher signs.
    """
    if not isinstance(n_boot, int | np.integer) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}.")
    sample = _sample(k, X, score, None, "ksd_test")
    if not isinstance(sample.X, np.ndarray):
        raise TypeError("ksd_test takes concrete points (NumPy, or JAX arrays outside jit).")
    n = sample.X.shape[0]
    if n < 2:
        raise ValueError("ksd_test needs at least 2 points.")
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(n, n_boot))
    # Column 0 (all ones) gives the statistic itself, in the same pass as the first draws.
    columns = np.concatenate([np.ones((n, 1)), signs], axis=1).astype(sample.X.dtype)
    Xp, Sp, _ = _padded(sample)
    size = Xp.shape[0]
    per_pass = max(1, policy.current().stein_bootstrap_entries // size)
    totals = []
    with local_x64(sample.X.dtype):
        diagonal = float(jnp.sum(_stein_diagonal(sample.kernel, sample.X, sample.S)))
        for start in range(0, n_boot + 1, per_pass):
            block = padding.pad_rows(columns[:, start : start + per_pass], size, False)
            out = np.asarray(_stein_matvec(sample.kernel, Xp, Sp, block))
            totals.extend(np.einsum("ib,ib->b", block[:n], out[:n]))
    # e_i^2 = 1, so every replicate drops the same diagonal as the statistic.
    values = (np.asarray(totals) - diagonal) / (n * (n - 1))
    statistic, replicates = float(values[0]), values[1:]
    p_value = (1.0 + np.count_nonzero(replicates >= statistic)) / (1.0 + n_boot)
    return KSDTest(statistic, float(p_value), replicates)


# --------------------------------------------------------------------------- SVGD


def svgd_direction(k, X, score):
    """The SVGD update direction phi(x_i) = 1/n sum_j [k(x_j, x_i) s(x_j) + grad_{x_j} k(x_j,
    x_i)] (Liu and Wang, 2016), for a stationary kernel: (K S - grad_sum(k, X)) / n.

    Both terms are kernelgrad's matrix-free reductions (``gram_matvec``, ``grad_sum``), so it
    runs at any n, and inside ``jax.jit``. ``score`` is an (n, d) array at X or a callable
    on one point.
    """
    if not isinstance(as_kernel(k), AbstractStationaryKernel):
        raise TypeError(
            "svgd_direction needs a stationary kernel (e.g. kernelgrad.RBF), for which "
            "grad_{x_j} k(x_j, x_i) = -grad_{x_i} k(x_i, x_j)."
        )
    S = jax.vmap(score)(X) if callable(score) else score
    n = jnp.shape(X)[0]
    return (transforms.gram_matvec(k, X, W=S) - transforms.grad_sum(k, X)) / n


def svgd_step(k, X, score, step_size):
    """One SVGD step: X + step_size * :func:`svgd_direction`."""
    return X + step_size * svgd_direction(k, X, score)


def median_lengthscale(X, *, max_points: int = 1000):
    """The median heuristic of Liu and Wang (2016) for an RBF lengthscale,
    l^2 = median(|x_i - x_j|^2) / (2 log(n + 1)), the median taken over the first
    ``max_points`` points (an O(max_points^2) estimate at any n)."""
    X2 = jnp.reshape(X, (jnp.shape(X)[0], -1))
    head = X2[:max_points]
    sq = jnp.sum((head[:, None, :] - head[None, :, :]) ** 2, axis=-1)
    return jnp.sqrt(0.5 * jnp.median(sq) / jnp.log(X2.shape[0] + 1.0))


def svgd(X, score, *, steps: int, step_size: float = 0.1, momentum: float = 0.9):
    """Run SVGD as in Liu and Wang's code: an RBF kernel whose lengthscale follows the
    median heuristic at every step, and AdaGrad with momentum on the direction.

    ``score`` is a callable on one point. Returns the moved particles. Works inside
    ``jax.jit`` (the steps are a ``lax.scan``).
    """
    X = jnp.asarray(X)

    def step(carry, _):
        X, history = carry
        phi = svgd_direction(RBF(lengthscale=median_lengthscale(X)), X, score)
        history = momentum * history + (1.0 - momentum) * phi * phi
        return (X + step_size * phi / (1e-6 + jnp.sqrt(history)), history), None

    first = svgd_direction(RBF(lengthscale=median_lengthscale(X)), X, score)
    (X, _), _ = jax.lax.scan(step, (X, first * first), None, length=steps)
    return X


__all__ = [
    "STATISTICS",
    "KSDTest",
    "ksd",
    "ksd_test",
    "median_lengthscale",
    "stein_tile",
    "svgd",
    "svgd_direction",
    "svgd_step",
]
