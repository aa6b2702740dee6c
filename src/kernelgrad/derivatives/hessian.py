"""Second derivatives of kernels: the cross-Hessian d^2 k(x, y) / dx dy.

In closed form, from the second-order terms of a kernel's tile (``kernel.tile(..., order=2)``,
the vocabulary of :mod:`kernelgrad.derivatives.terms`): an (n, m, d, d) array only where the caller
asks for the dense cross-Hessian; :mod:`kernelgrad.gp.gradient_kernel` multiplies by the same terms
in O(n m d) without expanding them. By AD: forward-over-reverse or reverse-over-reverse per pair.

Matern 1/2 and 3/2 are refused in every mode. Their profiles are not twice differentiable at
r = 0 (Matern 1/2 is not even once differentiable there, and Matern 3/2's ``f''(s)`` grows
like ``s^-1/2``), so closed forms and AD both break down on coincident points. The refusal
does not depend on the data: it is predictable, and it cannot appear only when a GP's
training set happens to contain a repeated point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import kernels as K
from . import terms

# --------------------------------------------------------------------------- refusal


def check_twice_differentiable(kernel: K.AbstractKernel, what: str) -> None:
    """Raise a ValueError naming the parts of ``kernel`` that have no second derivative."""
    bad = kernel.without_second_derivative()
    if bad:
        names = ", ".join(sorted(set(bad)))
        raise ValueError(
            f"{what} needs second derivatives of the kernel, but {names} is not twice "
            "differentiable at r = 0 (Matern 1/2 has a kink there; Matern 3/2's profile has "
            "f''(s) ~ s^(-1/2), infinite at s = 0), so d2k/dx dy is refused for any inputs. "
            "Use Matern52, RBF or RationalQuadratic for derivative observations."
        )


# --------------------------------------------------------------------------- closed form


def dense_field(xp, f: terms.Field, X, Y, Xc, Yc):
    """``scale_a * u_ija`` broadcastable to (n, m, d): (n, m, d), (n, 1, d) or (1, m, d)."""
    scale = xp.broadcast_to(f.scale, (X.shape[1],))[None, None, :]
    if f.kind == "diff":
        return scale * (Xc[:, None, :] - Yc[None, :, :])
    if f.kind == "x":
        return scale * X[:, None, :]
    return scale * Y[None, :, :]


def dense_vectors(xp, terms, X, Y, Xc, Yc):
    """The (n, m, d) sum of vector terms."""
    out = xp.zeros((X.shape[0], Y.shape[0], X.shape[1]), X.dtype)
    for t in terms:
        out = out + t.coef[:, :, None] * dense_field(xp, t.field, X, Y, Xc, Yc)
    return out


def dense_hessian(xp, t: terms.Tile, X, Y, Xc, Yc):
    """The (n, m, d, d) cross-Hessian of a tile."""
    n, m, d = X.shape[0], Y.shape[0], X.shape[1]
    out = xp.zeros((n, m, d, d), X.dtype)
    for o in t.outer:
        u = dense_field(xp, o.u, X, Y, Xc, Yc)
        v = dense_field(xp, o.v, X, Y, Xc, Yc)
        out = out + o.coef[:, :, None, None] * u[:, :, :, None] * v[:, :, None, :]
    for g in t.diagonal:
        eye = xp.eye(d, dtype=X.dtype) * xp.broadcast_to(g.scale, (d,))[None, :]
        out = out + g.coef[:, :, None, None] * eye[None, None, :, :]
    return out


def closed_cross_hessian(kernel, xp, X, Y):
    """H[i, j, a, b] = d2 k(x_i, y_j) / dx_ia dy_jb in closed form: (n, m, d, d)."""
    Xc, Yc = terms.centre(xp, X, Y)
    return dense_hessian(xp, kernel.tile(xp, X, Y, Xc, Yc, order=2), X, Y, Xc, Yc)


# --------------------------------------------------------------------------- AD


def _pairwise(fn, X, Y):
    """``fn(x_i, y_j)`` for every pair, stacked on leading axes (n, m)."""
    return jax.vmap(lambda x: jax.vmap(lambda y: fn(x, y))(Y))(X)


def ad_cross_hessian(kernel, X, Y, method: str):
    """H by forward-over-reverse (``jacfwd`` of ``grad``) or reverse-over-reverse AD."""
    outer = jax.jacfwd if method == "forward" else jax.jacrev
    return _pairwise(outer(jax.grad(kernel, argnums=0), argnums=1), X, Y)


def ad_input_gradients(kernel, X, Y):
    """(d k / dx, d k / dy) for every pair, each (n, m, d), by batched reverse passes."""
    both = jax.grad(kernel, argnums=(0, 1))
    return _pairwise(both, X, Y)


# --------------------------------------------------------------------------- trace (Laplacian)


def _field_dot(xp, u: terms.Field, v: terms.Field, X, Y, Xc, Yc):
    """(u_ij . v_ij), both fields' scales included, for every pair: broadcastable to (n, m).

    O(d) per pair: a weighted squared distance, a matmul, or row or column sums; never an
    (n, m, d) array.
    """
    d = X.shape[1]
    s = xp.broadcast_to(u.scale, (d,)) * xp.broadcast_to(v.scale, (d,))
    kinds = sorted((u.kind, v.kind))
    if kinds == ["diff", "diff"]:
        # Products of inverse squared lengthscales, of one sign (a field's scale has one:
        # see terms.Field): a squared distance, negated for a negative product.
        sign = xp.sign(xp.sum(s))  # in s.dtype; 0 only where every scale is 0
        return sign * terms.squared_distance(xp, X, Y, Xc, Yc, sign * s)
    row_norms = xp.sum(s * X * X, axis=1)[:, None]  # sum_a s_a x_ia^2: (n, 1)
    col_norms = xp.sum(s * Y * Y, axis=1)[None, :]  # sum_a s_a y_ja^2: (1, m)
    if kinds == ["x", "x"]:
        return row_norms
    if kinds == ["y", "y"]:
        return col_norms
    cross = terms.matmul(xp, X * s, Y.T)  # sum_a s_a x_ia y_ja
    if kinds == ["x", "y"]:
        return cross
    if kinds == ["diff", "x"]:  # sum_a s_a (x_ia - y_ja) x_ia
        return row_norms - cross
    return cross - col_norms  # ["diff", "y"]: sum_a s_a (x_ia - y_ja) y_ja


def trace_hessian(xp, t: terms.Tile, X, Y, Xc, Yc):
    """T[i, j] = sum_a d^2 k(x_i, y_j) / dx_ia dy_ja from an order-2 tile: (n, m), O(d) per
    pair. An outer term c u v^T has trace c (u . v); a diagonal term c diag(s) has c sum(s)."""
    d = X.shape[1]
    out = xp.zeros((X.shape[0], Y.shape[0]), X.dtype)
    for o in t.outer:
        out = out + o.coef * _field_dot(xp, o.u, o.v, X, Y, Xc, Yc)
    for g in t.diagonal:
        out = out + g.coef * xp.sum(xp.broadcast_to(g.scale, (d,)))
    return out


def closed_laplacian_sum(kernel, xp, X, Y, W):
    """L[i] = sum_j W_j trace(d^2 k(x_i, y_j) / dx dy) in closed form: (n, 1)."""
    Xc, Yc = terms.centre(xp, X, Y)
    T = trace_hessian(xp, kernel.tile(xp, X, Y, Xc, Yc, order=2), X, Y, Xc, Yc)
    return terms.matmul(xp, T, W[:, None])


def ad_laplacian_sum(method, kernel, X, Y, W):
    """L by AD: the trace of forward-over-reverse (or reverse-over-reverse) per pair."""
    outer = jax.jacfwd if method == "forward" else jax.jacrev
    H = _pairwise(lambda x, y: jnp.trace(outer(jax.grad(kernel, argnums=0), argnums=1)(x, y)), X, Y)
    return terms.matmul(jnp, H, W[:, None])


__all__ = [
    "ad_cross_hessian",
    "ad_input_gradients",
    "ad_laplacian_sum",
    "check_twice_differentiable",
    "closed_cross_hessian",
    "closed_laplacian_sum",
    "dense_field",
    "dense_hessian",
    "dense_vectors",
    "trace_hessian",
]
