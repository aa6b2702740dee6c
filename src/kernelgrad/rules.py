"""Closed-form derivative rules, written once against an array namespace ``xp``.

Every closed-form kernel reduces, on a block of points X (n, d) against Y (m, d), to a
:class:`Tile`: its values K (n, m) and its input derivative as a short list of terms,

    dK[i, j] / dx_ia = sum over terms of  coef[i, j] * scale_a * (x_ia - y_ja)   ("diff")
                                      or  coef[i, j] * scale_a * y_ja            ("y")

Stationary kernels give one "diff" term, ``coef = variance * f'(s)`` and
``scale = 2 / lengthscale^2``, which is DESIGN.md's ``dk/dx_a = 2 v f'(s)(x_a - y_a)/l_a^2``.
Dot-product kernels give one "y" term with ``coef = g'(x . y)``. Sums concatenate terms,
products apply the product rule to the coefficients, scaling multiplies them.

The consumers (:func:`jacobian`, :func:`grad_sum`) never build more than the (n, m)
coefficient matrices, except :func:`jacobian` whose output is (n, m, d) by definition. The
weighted sum uses the matmul form ``sum_j c_ij w_j (x_i - y_j) = x_i (C w)_i - (C (w y))_i``:
one matrix product per term, much faster than reducing (n, m, d) differences.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from . import kernels as K
from . import policy


def expands(xp, d: int) -> bool:
    """Whether squared distances in ``d`` dimensions use the expansion |x|^2 + |y|^2 - 2 x.y
    (one matmul) in namespace ``xp``, rather than per-dimension differences (exact): from the
    policy's ``xla_expansion_min_dims`` in XLA, above its ``difference_form_max_dims`` in
    NumPy."""
    chosen = policy.current()
    if xp is np:
        return d > chosen.difference_form_max_dims
    return d >= chosen.xla_expansion_min_dims


class Term(NamedTuple):
    """One term of the input derivative; see the module docstring."""

    coef: Any  # (n, m)
    kind: str  # "diff" or "y"
    scale: Any  # (d,) or scalar


class Tile(NamedTuple):
    """Kernel values on a block of pairs and their input-derivative terms."""

    value: Any  # (n, m)
    terms: tuple[Term, ...]


def matmul(xp, a, b):
    """a @ b at full precision (TF32 on Hopper GPUs silently drops float32 to 10 bits)."""
    if xp is np:
        return a @ b
    return xp.matmul(a, b, precision="highest")


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
    # duplicate point, so it becomes exactly 0.
    floor = (8 * xp.finfo(s.dtype).eps) * norms
    return xp.where(s > floor, s, 0.0)


_FAMILIES = (
    K.AbstractStationaryKernel,
    K.AbstractDotProductKernel,
    K.Sum,
    K.Product,
    K.Scaled,
)


@functools.cache
def _family(cls: type) -> type | None:
    """Which rule applies to a kernel class; cached, since isinstance on these ABCs is slow."""
    return next((family for family in _FAMILIES if issubclass(cls, family)), None)


def tile(
    kernel: K.AbstractKernel,
    xp,
    X,
    Y,
    Xc,
    Yc,
    *,
    need_value: bool = True,
    need_terms: bool = True,
) -> Tile:
    """Closed-form values and derivative terms of ``kernel`` on X (n, d) against Y (m, d).

    ``Xc`` and ``Yc`` are X and Y shifted by one common centre. Stationary kernels use them:
    differences are unchanged, and the squared-norm expansion loses far less precision.
    With ``need_value=False`` the values may be None, and with ``need_terms=False`` the terms
    are empty: in eager NumPy each saves a transcendental per pair (XLA drops unused work by
    itself).
    """
    dtype = X.dtype
    cls = type(kernel)
    family = _family(cls)
    flags = {"need_value": need_value, "need_terms": need_terms}
    if family is K.AbstractStationaryKernel:
        inv_sq = cls.inverse_sq_scale(kernel, xp, dtype)
        params = cls.profile_params(kernel, xp, dtype)
        # A kernel with a kink at r = 0 (Matern 1/2) must tell near-duplicates from
        # duplicates at any d: the expansion's noise floor would blur them.
        expand = expands(xp, X.shape[1]) and cls.differentiable_at_zero
        s = squared_distance(xp, X, Y, Xc, Yc, inv_sq, expand=expand)
        variance = xp.asarray(kernel.variance, dtype=dtype)
        value = variance * cls.f(xp, s, params) if need_value else None
        if not need_terms:
            return Tile(value, ())
        coef = variance * cls.df(xp, s, params)
        return Tile(value, (Term(coef, "diff", 2.0 * inv_sq),))
    if family is K.AbstractDotProductKernel:
        t = matmul(xp, X, Y.T)
        one = xp.asarray(1.0, dtype=dtype)
        value = cls.g(kernel, xp, t, dtype) if need_value else None
        terms = (Term(cls.dg(kernel, xp, t, dtype), "y", one),) if need_terms else ()
        return Tile(value, terms)
    if family is K.Sum:
        a = tile(kernel.k1, xp, X, Y, Xc, Yc, **flags)
        b = tile(kernel.k2, xp, X, Y, Xc, Yc, **flags)
        return Tile(a.value + b.value if need_value else None, a.terms + b.terms)
    if family is K.Product:
        # The product rule needs both factors' values whatever the caller asked for.
        a = tile(kernel.k1, xp, X, Y, Xc, Yc, need_terms=need_terms)
        b = tile(kernel.k2, xp, X, Y, Xc, Yc, need_terms=need_terms)
        terms = tuple(t._replace(coef=t.coef * b.value) for t in a.terms)
        terms += tuple(t._replace(coef=t.coef * a.value) for t in b.terms)
        return Tile(a.value * b.value, terms)
    if family is K.Scaled:
        base = tile(kernel.base, xp, X, Y, Xc, Yc, **flags)
        c = xp.asarray(kernel.scale, dtype=dtype)
        value = c * base.value if need_value else None
        return Tile(value, tuple(t._replace(coef=c * t.coef) for t in base.terms))
    raise TypeError(f"{type(kernel).__name__} has no closed-form rules.")


def centre(xp, X, Y):
    """X and Y shifted by the mean of Y: translation-invariant terms are computed on these."""
    c = xp.mean(Y, axis=0) if Y.shape[0] else xp.zeros(Y.shape[1], Y.dtype)
    return X - c, Y - c


def centre_for_expansion(xp, X, Y):
    """Centred X and Y where the squared-distance expansion needs them, else X and Y as is
    (differences need no centre, and computing it costs a pass over the points)."""
    return centre(xp, X, Y) if expands(xp, X.shape[1]) else (X, Y)


def gram(kernel, xp, X, Y):
    """K[i, j] = k(x_i, y_j): (n, m)."""
    return tile(kernel, xp, X, Y, *centre_for_expansion(xp, X, Y), need_terms=False).value


def jacobian(kernel, xp, X, Y):
    """J[i, j, a] = d k(x_i, y_j) / d x_ia: (n, m, d)."""
    # Centred for the expansion (see :func:`expands`), which cancels less on
    # points near the origin; differences always come from the raw points.
    parts = []
    for term in tile(kernel, xp, X, Y, *centre_for_expansion(xp, X, Y), need_value=False).terms:
        factor = X[:, None, :] - Y[None, :, :] if term.kind == "diff" else Y[None, :, :]
        parts.append(term.coef[:, :, None] * (factor * term.scale))
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    shape = (X.shape[0], Y.shape[0], X.shape[1])
    # A Linear kernel's derivative y_j does not depend on i: give it its full shape.
    return out if out.shape == shape else xp.broadcast_to(out, shape)


def grad_sum(kernel, xp, X, Y, w):
    """G[i, a] = sum_j w_j d k(x_i, y_j) / d x_ia: (n, d). ``w=None`` means unit weights."""
    Xc, Yc = centre(xp, X, Y)
    stationary = _family(type(kernel)) is K.AbstractStationaryKernel
    if xp is not np and stationary and X.shape[1] > 1 and type(kernel).differentiable_at_zero:
        return _stationary_grad_sum_fused(kernel, xp, Xc, Yc, w)
    if xp is not np and X.shape[1] == 1 and stationary:
        return _stationary_grad_sum_1d(kernel, xp, X, Y, w)
    if w is None:
        w = xp.ones(Y.shape[0], X.dtype)
    if xp is not np and X.shape[1] == 1:
        terms = tile(kernel, xp, X, Y, Xc, Yc, need_value=False).terms
        # In one dimension XLA fuses sum_j c_ij w_j (x_i - y_j) into one loop with no (n, m)
        # buffer, which beats the matmul form once that buffer leaves the cache.
        integrand = 0.0
        for term in terms:
            factor = Xc - Yc[:, 0] if term.kind == "diff" else Y[:, 0]
            integrand = integrand + term.coef * (factor * term.scale)
        return xp.sum(integrand * w, axis=1, keepdims=True)
    terms = tile(kernel, xp, X, Y, Xc, Yc, need_value=False).terms
    out = 0.0
    for term in terms:
        if term.kind == "diff":
            # sum_j c_ij w_j (x_i - y_j) = x_i (C w)_i - (C (w y))_i, as one (m, d + 1) product.
            rhs = xp.concatenate([w[:, None], w[:, None] * Yc], axis=1)
            cw = matmul(xp, term.coef, rhs)
            out = out + term.scale * (Xc * cw[:, :1] - cw[:, 1:])
        else:
            out = out + term.scale * matmul(xp, term.coef, w[:, None] * Y)
    return out


def _stationary_grad_sum_1d(kernel, xp, X, Y, w):
    """grad_sum of a stationary kernel in one dimension, fused by XLA into one loop.

    With u = (x - y) / l the derivative is 2 v f'(u^2) u / l, so every constant folds into
    the weights and each pair costs f' and two products: fewer operations per pair than
    the general term form, and no (n, m) buffer.
    """
    cls = type(kernel)
    root = xp.sqrt(cls.inverse_sq_scale(kernel, xp, X.dtype))  # 1 / l, scalar or (1,)
    # Raw differences (no centring, no pre-scaled points) are exactly 0 for duplicate points
    # whatever XLA fuses or contracts; Matern 1/2's zero subgradient relies on that 0.
    u = (X[:, :1] - Y[None, :, 0]) * root
    slope = cls.df(xp, u * u, cls.profile_params(kernel, xp, X.dtype))
    factor = 2.0 * xp.asarray(kernel.variance, X.dtype) * root
    if w is None:  # unit weights: one multiply per pair fewer
        return xp.sum(slope * u, axis=1, keepdims=True) * factor
    return xp.sum(slope * u * (w * factor), axis=1, keepdims=True)


def _stationary_grad_sum_fused(kernel, xp, Xc, Yc, w):
    """grad_sum of a stationary kernel in d > 1 dimensions, written for XLA's fusion.

    G_ia = w_a^2 sum_j [2 v u_j f'(s_ij)] (x_ia - y_ja), with s from the expansion of the
    centred points. Reducing the (n, d, m) product over j, rather than taking the matmul
    form, lets XLA:CPU fuse the matrix product of the expansion, f' and the sum into one
    tiled kernel with no n x m buffer.
    """
    cls = type(kernel)
    dtype = Xc.dtype
    inv_sq = cls.inverse_sq_scale(kernel, xp, dtype)
    s = squared_distance(xp, Xc, Yc, Xc, Yc, inv_sq, expand=True)
    factor = 2.0 * xp.asarray(kernel.variance, dtype)
    slope = cls.df(xp, s, cls.profile_params(kernel, xp, dtype))
    slope = slope * factor if w is None else slope * (w * factor)[None, :]
    sums = xp.sum(slope[:, None, :] * (Xc[:, :, None] - Yc.T[None, :, :]), axis=2)
    return sums * inv_sq


def gram_matvec(kernel, xp, X, Y, W):
    """K @ W for W of shape (m, p): (n, p)."""
    return matmul(xp, gram(kernel, xp, X, Y), W)
