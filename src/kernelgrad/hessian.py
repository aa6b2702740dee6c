"""Second derivatives of kernels: the cross-Hessian d^2 k(x, y) / dx dy.

Every closed-form kernel reduces, on a block of points X (n, d) against Y (m, d), to a
:class:`Tile2`: its values, both first derivatives and its cross-Hessian as short lists of
structured terms, never an (n, m, d, d) array:

* a *vector* term ``coef[i, j] * scale_a * u_ija``, with ``u`` one of the fields
  ``x_i - y_j`` ("diff"), ``x_i`` ("x") or ``y_j`` ("y");
* an *outer* term ``coef[i, j] * (su * u_ij)_a * (sv * v_ij)_b``, rank one in (a, b);
* a *diagonal* term ``coef[i, j] * scale_a * delta_ab``.

A stationary kernel ``v f(s)``, ``s = sum_a w_a (x_a - y_a)^2`` with ``w = 1 / l^2``, gives
DESIGN.md's rule as one outer and one diagonal term::

    d2k / dx_a dy_b = -v [4 f''(s) w_a (x_a - y_a) w_b (x_b - y_b) + 2 f'(s) w_a delta_ab]

A dot-product kernel ``g(x . y)`` gives ``g'' y_a x_b + g' delta_ab``. Sums concatenate
terms, products follow the product rule (which adds outer products of the first
derivatives) and scaling multiplies every coefficient. :mod:`kernelgrad.gradient_kernel`
multiplies by the same terms in O(n m d) without expanding them.

Matern 1/2 and 3/2 are refused in every mode. Their profiles are not twice differentiable at
r = 0 (Matern 1/2 is not even once differentiable there, and Matern 3/2's ``f''(s)`` grows
like ``s^-1/2``), so closed forms and AD both break down on coincident points. The refusal
does not depend on the data: it is predictable, and it cannot appear only when a GP's
training set happens to contain a repeated point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from . import kernels as K
from . import rules


class Field(NamedTuple):
    """The vector field ``scale_a * u_ija``, u being "diff" (x_i - y_j), "x" or "y"."""

    kind: str
    scale: Any  # (d,) or scalar


class Vec(NamedTuple):
    """``coef[i, j] * field_ija``; see the module docstring."""

    coef: Any  # (n, m)
    field: Field


class Outer(NamedTuple):
    """``coef[i, j] * u_ija * v_ijb``, rank one in (a, b)."""

    coef: Any  # (n, m)
    u: Field
    v: Field


class Diagonal(NamedTuple):
    """``coef[i, j] * scale_a * delta_ab``."""

    coef: Any  # (n, m)
    scale: Any  # (d,) or scalar


class Tile2(NamedTuple):
    """Values, first derivatives and cross-Hessian of a kernel on a block of pairs."""

    value: Any  # (n, m)
    dx: tuple[Vec, ...]  # d k / dx_a
    dy: tuple[Vec, ...]  # d k / dy_b
    outer: tuple[Outer, ...]  # d2 k / dx_a dy_b, rank-one part
    diagonal: tuple[Diagonal, ...]  # d2 k / dx_a dy_b, diagonal part


# --------------------------------------------------------------------------- refusal


def not_twice_differentiable(kernel: K.AbstractKernel) -> list[str]:
    """Names of the parts of ``kernel`` whose second derivative does not exist at r = 0."""
    if isinstance(kernel, K.AbstractStationaryKernel):
        return [] if kernel.twice_differentiable_at_zero else [type(kernel).__name__]
    if isinstance(kernel, (K.Sum, K.Product)):
        return not_twice_differentiable(kernel.k1) + not_twice_differentiable(kernel.k2)
    if isinstance(kernel, K.Scaled):
        return not_twice_differentiable(kernel.base)
    return []


def check_twice_differentiable(kernel: K.AbstractKernel, what: str) -> None:
    """Raise a ValueError naming the parts of ``kernel`` that have no second derivative."""
    bad = not_twice_differentiable(kernel)
    if bad:
        names = ", ".join(sorted(set(bad)))
        raise ValueError(
            f"{what} needs second derivatives of the kernel, but {names} is not twice "
            "differentiable at r = 0 (Matern 1/2 has a kink there; Matern 3/2's profile has "
            "f''(s) ~ s^(-1/2), infinite at s = 0), so d2k/dx dy is refused for any inputs. "
            "Use Matern52, RBF or RationalQuadratic for derivative observations."
        )


# --------------------------------------------------------------------------- closed-form rules


def _scale_vec(c, t: Vec) -> Vec:
    return t._replace(coef=c * t.coef)


def _scale_all(c, t: Tile2) -> Tile2:
    """Every term of ``t`` multiplied elementwise by ``c`` (a scalar or an (n, m) array)."""
    return Tile2(
        c * t.value,
        tuple(_scale_vec(c, v) for v in t.dx),
        tuple(_scale_vec(c, v) for v in t.dy),
        tuple(o._replace(coef=c * o.coef) for o in t.outer),
        tuple(g._replace(coef=c * g.coef) for g in t.diagonal),
    )


def _outer_products(dx: tuple[Vec, ...], dy: tuple[Vec, ...]) -> tuple[Outer, ...]:
    """The rank-one terms of (sum of dx terms)_a (sum of dy terms)_b."""
    return tuple(Outer(a.coef * b.coef, a.field, b.field) for a in dx for b in dy)


def tile2(kernel: K.AbstractKernel, xp, X, Y, Xc, Yc) -> Tile2:
    """Closed-form :class:`Tile2` of ``kernel`` on X (n, d) against Y (m, d).

    ``Xc`` and ``Yc`` are X and Y shifted by one common centre, as in :func:`rules.tile`.
    """
    dtype = X.dtype
    if isinstance(kernel, K.AbstractStationaryKernel):
        w = kernel.inverse_sq_scale(xp, dtype)
        params = kernel.profile_params(xp, dtype)
        s = rules.squared_distance(xp, X, Y, Xc, Yc, w)
        v = xp.asarray(kernel.variance, dtype=dtype)
        d1 = v * kernel.df(xp, s, params)
        diff = Field("diff", w)
        return Tile2(
            v * kernel.f(xp, s, params),
            (Vec(2.0 * d1, diff),),
            (Vec(-2.0 * d1, diff),),
            (Outer(-4.0 * v * kernel.d2f(xp, s, params), diff, diff),),
            (Diagonal(-2.0 * d1, w),),
        )
    if isinstance(kernel, K.AbstractDotProductKernel):
        t = rules.matmul(xp, X, Y.T)
        g1 = kernel.dg(xp, t, dtype)
        one = xp.asarray(1.0, dtype=dtype)
        return Tile2(
            kernel.g(xp, t, dtype),
            (Vec(g1, Field("y", one)),),
            (Vec(g1, Field("x", one)),),
            (Outer(kernel.d2g(xp, t, dtype), Field("y", one), Field("x", one)),),
            (Diagonal(g1, one),),
        )
    if isinstance(kernel, K.Sum):
        a, b = tile2(kernel.k1, xp, X, Y, Xc, Yc), tile2(kernel.k2, xp, X, Y, Xc, Yc)
        return Tile2(*(pa + pb for pa, pb in zip(a, b, strict=True)))
    if isinstance(kernel, K.Product):
        a, b = tile2(kernel.k1, xp, X, Y, Xc, Yc), tile2(kernel.k2, xp, X, Y, Xc, Yc)
        ab, ba = _scale_all(b.value, a), _scale_all(a.value, b)
        return Tile2(
            a.value * b.value,
            ab.dx + ba.dx,
            ab.dy + ba.dy,
            ab.outer + ba.outer + _outer_products(a.dx, b.dy) + _outer_products(b.dx, a.dy),
            ab.diagonal + ba.diagonal,
        )
    if isinstance(kernel, K.Scaled):
        base = tile2(kernel.base, xp, X, Y, Xc, Yc)
        return _scale_all(xp.asarray(kernel.scale, dtype=dtype), base)
    raise TypeError(f"{type(kernel).__name__} has no closed-form rules.")


def dense_field(xp, f: Field, X, Y, Xc, Yc):
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


def dense_hessian(xp, t: Tile2, X, Y, Xc, Yc):
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
    Xc, Yc = rules.centre(xp, X, Y)
    return dense_hessian(xp, tile2(kernel, xp, X, Y, Xc, Yc), X, Y, Xc, Yc)


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


__all__ = [
    "Tile2",
    "ad_cross_hessian",
    "check_twice_differentiable",
    "closed_cross_hessian",
    "tile2",
]
