"""First-order closed forms from the kernels' tiles: Gram matrix, Jacobian, grad map, K @ W.

Every closed-form kernel states its values and derivative terms on a block of points as a
:class:`kernelgrad.derivatives.terms.Tile` (``kernel.tile``). To first order its ``dx`` terms are

    dK[i, j] / dx_ia = sum over terms of  coef[i, j] * scale_a * (x_ia - y_ja)   ("diff")
                                      or  coef[i, j] * scale_a * y_ja            ("y")

The consumers here never build more than the (n, m) coefficient matrices, except
:func:`jacobian`, whose output is (n, m, d) by definition. The weighted sum uses the matmul
form ``sum_j c_ij w_j (x_i - y_j) = x_i (C w)_i - (C (w y))_i``: one matrix product per term,
much faster than reducing (n, m, d) differences. Where XLA fuses better, a stationary
kernel's grad map takes a form written for that fusion instead (:func:`grad_sum`).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import kernels as K
from .terms import centre, expands, matmul, squared_distance


@functools.cache
def _is_stationary(cls: type) -> bool:
    # Cached: isinstance against equinox's abstract classes costs a microsecond per call.
    return issubclass(cls, K.AbstractStationaryKernel)


def fused_1d_grad_sum(kernel, d: int) -> bool:
    """Whether XLA computes this kernel's closed-form grad_sum in ``d`` dimensions as one
    fused loop with no (n, m) buffer (:func:`_stationary_grad_sum_1d`)."""
    return d == 1 and _is_stationary(type(kernel))


def centre_for_expansion(xp, X, Y):
    """X and Y shifted by the mean of Y where the squared-distance expansion needs them, else
    X and Y as is (differences need no centre, and computing it costs a pass over the
    points)."""
    return centre(xp, X, Y) if expands(xp, X.shape[1]) else (X, Y)


def gram(kernel, xp, X, Y):
    """K[i, j] = k(x_i, y_j): (n, m)."""
    return kernel.tile(xp, X, Y, *centre_for_expansion(xp, X, Y), order=0).value


def jacobian(kernel, xp, X, Y):
    """J[i, j, a] = d k(x_i, y_j) / d x_ia: (n, m, d)."""
    # Centred for the expansion (see :func:`expands`), which cancels less on
    # points near the origin; differences always come from the raw points.
    parts = []
    for vec in kernel.tile(xp, X, Y, *centre_for_expansion(xp, X, Y), need_value=False).dx:
        factor = X[:, None, :] - Y[None, :, :] if vec.field.kind == "diff" else Y[None, :, :]
        parts.append(vec.coef[:, :, None] * (factor * vec.field.scale))
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    shape = (X.shape[0], Y.shape[0], X.shape[1])
    # A Linear kernel's derivative y_j does not depend on i: give it its full shape.
    return out if out.shape == shape else xp.broadcast_to(out, shape)


def grad_sum(kernel, xp, X, Y, w):
    """G[i, a] = sum_j w_j d k(x_i, y_j) / d x_ia: (n, d). ``w=None`` means unit weights."""
    Xc, Yc = centre(xp, X, Y)
    stationary = _is_stationary(type(kernel))
    if xp is not np and stationary and X.shape[1] > 1 and type(kernel).differentiable_at_zero:
        return _stationary_grad_sum_fused(kernel, xp, Xc, Yc, w)
    if xp is not np and fused_1d_grad_sum(kernel, X.shape[1]):
        return _stationary_grad_sum_1d(kernel, xp, X, Y, w)
    if w is None:
        w = xp.ones(Y.shape[0], X.dtype)
    if xp is not np and X.shape[1] == 1:
        dx = kernel.tile(xp, X, Y, Xc, Yc, need_value=False).dx
        # In one dimension XLA fuses sum_j c_ij w_j (x_i - y_j) into one loop with no (n, m)
        # buffer, which beats the matmul form once that buffer leaves the cache.
        integrand = 0.0
        for vec in dx:
            factor = Xc - Yc[:, 0] if vec.field.kind == "diff" else Y[:, 0]
            integrand = integrand + vec.coef * (factor * vec.field.scale)
        return xp.sum(integrand * w, axis=1, keepdims=True)
    out = 0.0
    for vec in kernel.tile(xp, X, Y, Xc, Yc, need_value=False).dx:
        if vec.field.kind == "diff":
            # sum_j c_ij w_j (x_i - y_j) = x_i (C w)_i - (C (w y))_i, as one (m, d + 1) product.
            rhs = xp.concatenate([w[:, None], w[:, None] * Yc], axis=1)
            cw = matmul(xp, vec.coef, rhs)
            out = out + vec.field.scale * (Xc * cw[:, :1] - cw[:, 1:])
        else:
            out = out + vec.field.scale * matmul(xp, vec.coef, w[:, None] * Y)
    return out


def _stationary_grad_sum_1d(kernel, xp, X, Y, w):
    """grad_sum of a stationary kernel in one dimension, fused by XLA into one loop.

    With u = (x - y) / l the derivative is 2 v f'(u^2) u / l, so every constant folds into
    the weights and each pair costs f' and two products: fewer operations per pair than
    the general term form, and no (n, m) buffer.
    """
    cls = type(kernel)
    root = xp.sqrt(kernel.inverse_sq_scale(xp, X.dtype))  # 1 / l, scalar or (1,)
    # Raw differences (no centring, no pre-scaled points) are exactly 0 for duplicate points
    # whatever XLA fuses or contracts; Matern 1/2's zero subgradient relies on that 0.
    u = (X[:, :1] - Y[None, :, 0]) * root
    slope = cls.df(xp, u * u, kernel.profile_params(xp, X.dtype))
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
    inv_sq = kernel.inverse_sq_scale(xp, dtype)
    s = squared_distance(xp, Xc, Yc, Xc, Yc, inv_sq, expand=True)
    factor = 2.0 * xp.asarray(kernel.variance, dtype)
    slope = cls.df(xp, s, kernel.profile_params(xp, dtype))
    slope = slope * factor if w is None else slope * (w * factor)[None, :]
    sums = xp.sum(slope[:, None, :] * (Xc[:, :, None] - Yc.T[None, :, :]), axis=2)
    return sums * inv_sq


def gram_matvec(kernel, xp, X, Y, W):
    """K @ W for W of shape (m, p): (n, p)."""
    return matmul(xp, gram(kernel, xp, X, Y), W)


__all__ = [
    "centre_for_expansion",
    "fused_1d_grad_sum",
    "grad_sum",
    "gram",
    "gram_matvec",
    "jacobian",
]
