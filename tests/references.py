"""Brute-force float64 references, computed independently of kernelgrad's transforms.

Every reference here differentiates the kernel's own pair function ``k(x, y)`` with plain JAX
AD under a *local* ``jax.enable_x64`` context, so the suite never turns x64 on globally. The
library's transforms share none of this code: their closed forms live in ``rules.py`` and
their AD paths in ``autodiff.py``.

One thing is shared: AD of a built-in stationary kernel's pair call runs through its
profile's f' and f'' (a custom JVP, which keeps Matern derivatives finite at r = 0), as the
closed forms do. Those are checked against references that share nothing with them, finite
differences of f and limits written out by hand, in ``test_kernels.py`` ("profiles").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _f64(*arrays):
    return [jnp.asarray(np.asarray(a, dtype=np.float64)) for a in arrays]


def _pair_gram(kernel, X, Y):
    return jax.vmap(lambda x: jax.vmap(lambda y: kernel(x, y))(Y))(X)


def dense_gram(kernel, X, Y) -> np.ndarray:
    """K[i, j] = k(x_i, y_j) in float64: (n, m)."""
    with jax.enable_x64(True):
        X, Y = _f64(X, Y)
        return np.asarray(_pair_gram(kernel, X, Y))


def dense_jacobian(kernel, X, Y, *, method: str = "fwd") -> np.ndarray:
    """J[i, j, a] = dk(x_i, y_j)/dx_ia from the *full* Jacobian of the Gram matrix: (n, m, d).

    ``jax.jacfwd`` or ``jax.jacrev`` of X -> K(X, Y) gives dK[i, j]/dX[p, a], an (n, m, n, d)
    tensor whose entries with p != i are zero; the entries with p = i are the answer. This is
    the forum's brute-force approach, kept to small n.
    """
    jac = {"fwd": jax.jacfwd, "rev": jax.jacrev}[method]
    with jax.enable_x64(True):
        X, Y = _f64(X, Y)
        full = jac(lambda X_: _pair_gram(kernel, X_, Y))(X)  # (n, m, n, d)
        rows = jnp.arange(X.shape[0])
        # Two advanced indices split by a slice: the indexed axis comes first, giving (n, m, d).
        return np.asarray(full[rows, :, rows, :])


def pairwise_jacobian(kernel, X, Y) -> np.ndarray:
    """J[i, j, a] by one scalar gradient per pair, in float64: (n, m, d), for larger n."""
    with jax.enable_x64(True):
        X, Y = _f64(X, Y)
        pair_grad = jax.grad(kernel, argnums=0)
        return np.asarray(jax.vmap(lambda x: jax.vmap(lambda y: pair_grad(x, y))(Y))(X))


def rbf_closed_form(X, Y, weights, variance: float, lengthscale):
    """RBF values, input Jacobian and weighted grad map written out in NumPy float64.

    k(x, y) = v exp(-|x - y|^2 / (2 l^2)), with ``lengthscale`` a scalar or one per
    dimension (ARD: each term of |x - y|^2 over its own l^2). By the chain rule,
        dk/dx = v exp(-|x - y|^2 / (2 l^2)) * d/dx(-|x - y|^2 / (2 l^2))
              = -v (x - y) / l^2 * exp(-|x - y|^2 / (2 l^2)),
    so J[i, j] = -(x_i - y_j) K[i, j] / l^2 and G[i] = sum_j w_j J[i, j].

    Returns:
        (K (n, m), J (n, m, d), G (n, d)).
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    w = np.asarray(weights, np.float64)
    diff = X[:, None, :] - Y[None, :, :]  # (n, m, d)
    inverse_sq = 1.0 / np.asarray(lengthscale, np.float64) ** 2  # () or (d,)
    K = variance * np.exp(-0.5 * np.sum(diff**2 * inverse_sq, axis=-1))  # (n, m)
    J = -diff * inverse_sq * K[:, :, None]  # (n, m, d)
    G = np.einsum("ijd,j->id", J, w)  # (n, d)
    return K, J, G


def max_relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected| (normwise; 0/0 counts as 0)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return 0.0
    scale = np.max(np.abs(expected))
    err = np.max(np.abs(actual - expected))
    return float(err / scale) if scale > 0 else float(err)


#: Tolerances for comparing a result with a float64 reference, per dtype of the result. float32
#: has a unit round-off of 6e-8; the quantities here chain a few dozen operations on values of
#: order one, and exp turns an absolute error in its argument into a relative error of the
#: result. float64 results must match to near round-off.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def assert_close(actual, expected, dtype=None, *, err_msg: str = "") -> None:
    """Elementwise |actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|.

    Tolerances come from :data:`TOLERANCES` for ``dtype`` (default: the dtype of ``actual``).
    The absolute part scales with the largest reference entry, so that entries which cancel
    to near zero are judged against the size of the terms that produced them.
    """
    dtype = np.dtype(dtype if dtype is not None else np.asarray(actual).dtype)
    tol = TOLERANCES[dtype]
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        expected,
        rtol=tol["rtol"],
        atol=tol["atol"] * scale,
        err_msg=err_msg,
    )


def brute_cross_hessian(kernel, X, Y) -> np.ndarray:
    """H[i, j] = d^2 k(x_i, y_j) / dx dy from the full Hessian in z = (x, y): (n, m, d, d)."""
    with jax.enable_x64(True):
        X = jnp.asarray(np.asarray(X, np.float64))
        Y = jnp.asarray(np.asarray(Y, np.float64))
        d = X.shape[1]

        def block(x, y):
            full = jax.hessian(lambda z: kernel(z[:d], z[d:]))(jnp.concatenate([x, y]))
            return full[:d, d:]

        return np.asarray(jax.vmap(lambda x: jax.vmap(lambda y: block(x, y))(Y))(X))


def brute_joint_covariance(kernel, X, Y) -> np.ndarray:
    """The block-major (n (d + 1), m (d + 1)) matrix, written out entry block by block."""
    with jax.enable_x64(True):
        Xj = jnp.asarray(np.asarray(X, np.float64))
        Yj = jnp.asarray(np.asarray(Y, np.float64))

        def pairs(fn):
            return np.asarray(jax.vmap(lambda x: jax.vmap(lambda y: fn(x, y))(Yj))(Xj))

        K = pairs(kernel)  # (n, m)
        dx = pairs(jax.jacfwd(kernel, argnums=0))  # (n, m, d): cov(grad f(x_i), f(y_j))
        dy = pairs(jax.jacfwd(kernel, argnums=1))  # (n, m, d): cov(f(x_i), grad f(y_j))
    H = brute_cross_hessian(kernel, X, Y)  # (n, m, d, d)
    n, m, d = dx.shape
    out = np.zeros((n * (d + 1), m * (d + 1)))
    out[:n, :m] = K
    for i in range(n):
        for j in range(m):
            out[i, m + j * d : m + (j + 1) * d] = dy[i, j]
            out[n + i * d : n + (i + 1) * d, j] = dx[i, j]
            out[n + i * d : n + (i + 1) * d, m + j * d : m + (j + 1) * d] = H[i, j]
    return out


def brute_joint_blocks(kernel, X, Xs):
    """The joint covariance's blocks (X with X, Xs with X, Xs with Xs), from one
    :func:`brute_joint_covariance` call on the stacked points (each call compiles anew)."""
    n, ns, d = len(X), len(Xs), X.shape[1]
    full = brute_joint_covariance(kernel, np.concatenate([X, Xs]), np.concatenate([X, Xs]))
    N = n + ns

    def rows(points):
        grads = N + points[:, None] * d + np.arange(d)[None, :]
        return np.concatenate([points, grads.ravel()])

    x, s = rows(np.arange(n)), rows(np.arange(n, N))
    return full[np.ix_(x, x)], full[np.ix_(s, x)], full[np.ix_(s, s)]


def brute_stein_kernel(kernel, X, S) -> np.ndarray:
    """M[i, j] = k_p(x_i, x_j), the Stein kernel with scores S, written out term by term from
    AD of the pair call and the full Hessian in z = (x, y): (n, n)."""
    H = brute_cross_hessian(kernel, X, X)  # (n, n, d, d)
    with jax.enable_x64(True):
        (Xj,) = _f64(X)

        def pairs(fn):
            return np.asarray(jax.vmap(lambda x: jax.vmap(lambda y: fn(x, y))(Xj))(Xj))

        K = pairs(kernel)
        dx = pairs(jax.grad(kernel, argnums=0))  # (n, n, d)
        dy = pairs(jax.grad(kernel, argnums=1))
    S = np.asarray(S, np.float64)
    return (
        (S @ S.T) * K
        + np.einsum("ia,ija->ij", S, dy)
        + np.einsum("ja,ija->ij", S, dx)
        + np.trace(H, axis1=2, axis2=3)
    )


def dense_P(n, d, values, observed, directions):
    """The observation matrix P written out from the documented layout: the values, then
    the observed partials row-major, then the directional derivatives row-major."""
    rows = []
    if values:
        rows += [np.eye(n * (d + 1))[i] for i in range(n)]
    if observed is not None:
        for i, a in zip(*np.nonzero(observed), strict=True):
            rows.append(np.eye(n * (d + 1))[n + i * d + a])
    if directions is not None:
        for i in range(n):
            for v in directions[i]:
                row = np.zeros(n * (d + 1))
                row[n + i * d : n + (i + 1) * d] = v
                rows.append(row)
    return np.array(rows)


_BLOCKS: dict = {}


def cached_joint_blocks(kernel, X, Xs):
    """``brute_joint_blocks``, once per kernel and points: each call compiles anew, and the
    GP tests share their points (the ``rng`` fixture's seed is fixed)."""
    key = (id(kernel), X.tobytes(), Xs.tobytes())
    if key not in _BLOCKS:
        _BLOCKS[key] = brute_joint_blocks(kernel, X, Xs)
    return _BLOCKS[key]
