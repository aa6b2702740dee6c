"""The one vocabulary of derivative terms, in which every kernel states its closed form.

On a block of points X (n, d) against Y (m, d), a kernel with rules gives a :class:`Tile`:
its values and, to the order asked, its derivatives as short lists of structured terms,
never an (n, m, d) or (n, m, d, d) array:

* a *vector* term (:class:`Vec`) ``coef[i, j] * scale_a * u_ija``, with ``u`` one of the
  fields ``x_i - y_j`` ("diff"), ``x_i`` ("x") or ``y_j`` ("y");
* an *outer* term (:class:`Outer`) ``coef[i, j] * (su * u_ij)_a * (sv * v_ij)_b``, rank one
  in (a, b);
* a *diagonal* term (:class:`Diagonal`) ``coef[i, j] * scale_a * delta_ab``.

``dx`` holds d k / dx_a, ``dy`` d k / dy_b, and ``outer`` plus ``diagonal`` the
cross-Hessian d^2 k / dx_a dy_b. A stationary kernel ``v f(s)``, with ``s = sum_a w_a (x_a -
y_a)^2`` and ``w = 1 / l^2``, gives::

    dk / dx_a        =  2 v f'(s) w_a (x_a - y_a)
    d2k / dx_a dy_b  = -4 v f''(s) w_a (x_a - y_a) w_b (x_b - y_b) - 2 v f'(s) w_a delta_ab

and a dot-product kernel ``g(x . y)`` gives ``g'(t) y_a`` and ``g''(t) y_a x_b + g'(t)
delta_ab``. Each kernel family writes its own tile (``AbstractKernel.tile`` in
:mod:`kernelgrad.kernels`); the combinators use :func:`add`, :func:`multiply` and
:func:`scale` below. The consumers, :mod:`kernelgrad.derivatives.rules` (first order),
:mod:`kernelgrad.derivatives.hessian` and :mod:`kernelgrad.gp.gradient_kernel` (second order),
contract the terms with weights or fields without expanding them.

The geometry every rule shares lives here too: :func:`centre`, :func:`squared_distance` and
:func:`matmul` at full precision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..execution import policy


class Field(NamedTuple):
    """The vector field ``scale_a * u_ija``, u being "diff" (x_i - y_j), "x" or "y"."""

    kind: str
    scale: Any  # (d,) or scalar, of one sign across the dimensions


class Vec(NamedTuple):
    """``coef[i, j] * field_ija``."""

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


class Tile(NamedTuple):
    """A kernel's values and derivative terms on a block of pairs, to some order.

    Order 0 has only ``value``; order 1 adds ``dx``; order 2 adds ``dy``, ``outer`` and
    ``diagonal``. ``value`` may be None at order 1 when the caller asked for none (a single
    kernel then skips a transcendental per pair; a product always has its values).
    """

    value: Any  # (n, m) or None
    dx: tuple[Vec, ...] = ()
    dy: tuple[Vec, ...] = ()
    outer: tuple[Outer, ...] = ()
    diagonal: tuple[Diagonal, ...] = ()


def add(a: Tile, b: Tile) -> Tile:
    """The tile of k1 + k2: values added, terms concatenated."""
    value = None if a.value is None or b.value is None else a.value + b.value
    return Tile(value, a.dx + b.dx, a.dy + b.dy, a.outer + b.outer, a.diagonal + b.diagonal)


def scale(c, t: Tile) -> Tile:
    """Every part of ``t`` multiplied elementwise by ``c`` (a scalar or an (n, m) array)."""
    return Tile(
        None if t.value is None else c * t.value,
        tuple(v._replace(coef=c * v.coef) for v in t.dx),
        tuple(v._replace(coef=c * v.coef) for v in t.dy),
        tuple(o._replace(coef=c * o.coef) for o in t.outer),
        tuple(g._replace(coef=c * g.coef) for g in t.diagonal),
    )


def multiply(a: Tile, b: Tile) -> Tile:
    """The tile of k1 * k2 by the product rule (both tiles need their values).

    d(ab) = a db + b da, and d2(ab)/dx dy = a d2b + b d2a + da (x) db + db (x) da, whose last
    two parts are outer products of the first-order terms.
    """
    ab, ba = scale(b.value, a), scale(a.value, b)
    crossed = _outer_products(a.dx, b.dy) + _outer_products(b.dx, a.dy)
    return Tile(
        a.value * b.value,
        ab.dx + ba.dx,
        ab.dy + ba.dy,
        ab.outer + ba.outer + crossed,
        ab.diagonal + ba.diagonal,
    )


def _outer_products(dx: tuple[Vec, ...], dy: tuple[Vec, ...]) -> tuple[Outer, ...]:
    """The rank-one terms of (sum of dx terms)_a (sum of dy terms)_b."""
    return tuple(Outer(a.coef * b.coef, a.field, b.field) for a in dx for b in dy)


# ------------------------------------------------------------------------------ geometry


def matmul(xp, a, b):
    """a @ b at full precision (TF32 on Hopper GPUs silently drops float32 to 10 bits)."""
    if xp is np:
        return a @ b
    return xp.matmul(a, b, precision="highest")


def centre(xp, X, Y):
    """X and Y shifted by the mean of Y: translation-invariant terms are computed on these."""
    c = xp.mean(Y, axis=0) if Y.shape[0] else xp.zeros(Y.shape[1], Y.dtype)
    return X - c, Y - c


def expands(xp, d: int) -> bool:
    """Whether squared distances in ``d`` dimensions use the expansion |x|^2 + |y|^2 - 2 x.y
    (one matmul) in namespace ``xp``, rather than per-dimension differences (exact): from the
    policy's ``xla_expansion_min_dims`` in XLA, above its ``difference_form_max_dims`` in
    NumPy."""
    chosen = policy.current()
    if xp is np:
        return d > chosen.difference_form_max_dims
    return d >= chosen.xla_expansion_min_dims


def squared_distance(xp, X, Y, Xc, Yc, weights, *, expand: bool | None = None):
    """s[i, j] = sum_a weights_a (x_ia - y_ja)^2, never negative.

    ``Xc`` and ``Yc`` are X and Y shifted by one common centre, for the expansion. ``expand``
    defaults to what :func:`expands` says for NumPy.
    """
    d = X.shape[1]
    if expand is None:
        expand = expands(np, d)
    root = xp.sqrt(weights)  # a scalar or (d,): either broadcasts against the points
    if not expand:
        # One 2-D expression per dimension: XLA:CPU fuses these, whereas broadcasting to an
        # (n, m, d) tensor with a short trailing axis runs an order of magnitude slower.
        # Raw points, differenced before scaling: exact for near-duplicates, and exactly 0
        # for duplicates whatever XLA contracts (x r - y r as an FMA is not 0). Matern 1/2
        # needs that 0, and Matern profiles' safe square roots must agree in every fusion.
        root = xp.broadcast_to(root, (d,))
        s = 0.0
        for a in range(d):
            diff = (X[:, a, None] - Y[None, :, a]) * root[a]
            s = s + diff * diff
        return s
    # Scaling the points first saves a pass over the (n, m) result.
    Xs, Ys = Xc * root, Yc * root
    norms = xp.sum(Xs * Xs, axis=1)[:, None] + xp.sum(Ys * Ys, axis=1)[None, :]
    s = norms - 2.0 * matmul(xp, Xs, Ys.T)
    # The expansion cancels: its rounding error is about eps * (|x|^2 + |y|^2), and it can
    # even dip below zero. Anything under that noise floor is indistinguishable from a
    # duplicate point, so it becomes exactly 0. A NaN coordinate makes s NaN, which fails
    # the comparison too: 0 * norms (0, or NaN from that point's norm) keeps it NaN rather
    # than turning the point into everyone's duplicate.
    floor = (8 * xp.finfo(s.dtype).eps) * norms
    return xp.where(s > floor, s, 0.0 * norms)


__all__ = [
    "Diagonal",
    "Field",
    "Outer",
    "Tile",
    "Vec",
    "add",
    "centre",
    "expands",
    "matmul",
    "multiply",
    "scale",
    "squared_distance",
]
