"""Small closed-form problems on NumPy points, with almost no per-call overhead.

At n = 100 a whole kernel matrix or grad map is 10-20 us of arithmetic. The general path
(validation into a :class:`~kernelgrad.execution.inputs.Problem`, the term machinery of
:mod:`kernelgrad.derivatives.rules`) costs a fair share of that again, and a jitted JAX call costs 5
us of dispatch before any work. So for the commonest calls, a stationary kernel with one
lengthscale on NumPy points of one float dtype, this module checks the few facts it relies
on and evaluates the profile rule directly (w = 1 / l^2 is the squared-distance weight,
s_ij = w |x_i - y_j|^2):

    k(x_i, y_j)                      = v f(s_ij)
    d/dx_i k(x_i, y_j)               = 2 v w f'(s_ij) (x_i - y_j)
    sum_j u_j d/dx_i k(x_i, y_j)     = 2 v w [sum_j f'(s_ij) u_j (x_i - y_j)]

Every (n, m) array is written in place: one buffer for the Gram matrix, two for the grad
map. Beyond NumPy's small-array cache each fresh buffer costs page faults, which on some
machines cost more than the exps. For RBF, f(s) = exp(-s / 2) and f' = -f / 2, so the
constants fold into the exponent. An RBF's grad map in d > 1 takes one matrix product and
one exp per pair instead (:func:`_gaussian_grad_sum`), which stays ahead of the compiled
program up to larger sizes (the policy's ``lean_gaussian_grad_sum_max_pairs``). The Gram
matrix keeps the difference form: its entries at duplicate points must be exactly v, which
the factorised exponent misses by an ulp. Anything else returns ``None`` and the caller
takes the general path, which also produces every error message.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import kernels as K
from . import gaussian, policy
from .identity import IdentityCache
from .inputs import all_finite

_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class _Constants(NamedTuple):
    profile: type  # the kernel class, whose static f and df are the profile and its slope
    params: tuple  # profile hyperparameters (RQ's alpha, ...) as NumPy scalars
    rbf: bool  # f(s) = exp(-s / 2), so f'(s) = -f(s) / 2
    inv_sq: float  # w = 1 / l^2
    variance: float
    # Per dtype, 0-d arrays: NumPy multiplies by a 0-d array of the same dtype about 250 ns
    # faster than by a Python float, which it must convert on every call.
    scale: dict  # multiplies |x - y|^2: w, or -w / 2 for RBF (exp's argument)
    factor: dict  # multiplies f'-or-f: 2 v w, or -v w for RBF
    # The scale once per dimension, per (d, dtype): (x - y)^2 @ it is a BLAS product.
    scale_per_dim: dict
    root: dict  # 1 / l, per dtype (the factorised RBF grad map's scale of the points)


def _per_dtype(value: float) -> dict:
    return {dtype: np.asarray(value, dtype) for dtype in _DTYPES}


def _constants(k) -> _Constants | None:
    """The folded constants of ``k``, worked out once per kernel; None if it doesn't qualify.

    Only kernels whose leaves are NumPy arrays qualify, so a kernel rebuilt by a JAX
    transformation (with traced leaves) never does, and is not kept.
    """
    return _CONSTANTS.get(k, _fold, keep=lambda known: known is not None)


_CONSTANTS = IdentityCache()


def _fold(k) -> _Constants | None:
    cls = type(k)
    leaves = (k.variance, k.lengthscale) if issubclass(cls, K.AbstractStationaryKernel) else ()
    qualifies = bool(leaves) and all(type(a) is np.ndarray and a.ndim == 0 for a in leaves)
    if not qualifies:
        return None
    inv_sq = float(k.inverse_sq_scale(np, np.float64))
    params = k.profile_params(np, np.float64)
    if not all(type(p) is np.ndarray or isinstance(p, float) for p in params):
        return None
    variance = float(k.variance)
    coef = 2.0 * variance * inv_sq  # (2 v w) f'(s) (x - y)
    rbf = issubclass(cls, K.RBF)
    # RBF: (2 v w) f'(s) = -(v w) exp(-s / 2), w folded into exp's argument.
    scale, factor = (-0.5 * inv_sq, -0.5 * coef) if rbf else (inv_sq, coef)
    return _Constants(
        cls,
        params,
        rbf,
        inv_sq,
        variance,
        _per_dtype(scale),
        _per_dtype(factor),
        {},
        _per_dtype(math.sqrt(inv_sq)),
    )


def _as_2d(X, dtype):
    """(X as (n, d), one_dim), or None unless X is a non-empty NumPy array of ``dtype``."""
    if type(X) is not np.ndarray or X.dtype != dtype or X.ndim == 0 or X.shape[0] == 0:
        return None
    if X.ndim == 1:
        return X[:, None], True
    if X.ndim == 2 and X.shape[1] > 0:
        return X, False
    return None


def _pairs(k, X, Y, w, op: str, check_finite: bool):
    """(constants, X2, Y2, one_dim) for an eager pairwise ``op``, or None if it does not
    apply: another kernel or input type, a size beyond :func:`_fits`, or a NaN or inf found
    by ``check_finite`` (the general path names it)."""
    # Only stationary kernels qualify (:func:`_fold`): pair functions leave here at once.
    if not isinstance(k, K.AbstractStationaryKernel):
        return None
    if type(X) is not np.ndarray or X.dtype not in _DTYPES or X.ndim not in (1, 2):
        return None
    # The size next, from the raw shapes: calls of compiled sizes leave here, and before a
    # compiled call every microsecond counts twice (see :mod:`.repeat`).
    m = X.shape[0] if Y is None else (Y.shape[0] if type(Y) is np.ndarray and Y.ndim else 0)
    if not _fits(op, k, X.shape[0] * m, X.shape[1] if X.ndim == 2 else 1):
        return None
    found = _as_2d(X, X.dtype)
    if found is None:
        return None
    X2, one_dim = found
    if Y is None:
        Y2 = X2
    else:
        found = _as_2d(Y, X.dtype)
        if found is None or found[1] != one_dim or found[0].shape[1] != X2.shape[1]:
            return None
        Y2 = found[0]
    if w is not None and (
        type(w) is not np.ndarray or w.dtype != X.dtype or w.shape != Y2.shape[:1]
    ):
        return None
    c = _constants(k)
    if c is None or (check_finite and not all_finite(X, Y, w)):
        return None
    return c, X2, Y2, one_dim


def _one_point(k, x, Y, check_finite: bool):
    """(constants, one_dim) for an eager ``grad``, or None if it does not apply.

    Points in d > 1 are checked for NaN and inf by :func:`grad` itself, on the squared
    distances (which are not finite whenever a point is not), at a third of the cost.
    """
    # Cheapest checks first: this function's whole budget is about a microsecond.
    if not isinstance(k, K.AbstractStationaryKernel):
        return None
    if type(Y) is not np.ndarray or not 0 < Y.shape[0] <= policy.current().lean_grad_max_points:
        return None
    dtype = Y.dtype
    if not isinstance(x, np.ndarray | np.generic) or x.dtype != dtype or dtype not in _DTYPES:
        return None
    # 1-D points need a scalar x; (m, d) points need x of shape (d,).
    one_dim = Y.ndim == 1
    if x.shape != Y.shape[1:] or not (one_dim or Y.ndim == 2):
        return None
    c = _constants(k)
    if c is None or (check_finite and one_dim and not all_finite(x, Y)):
        return None
    return c, one_dim


def applies(op: str, k, X, Y=None, weights=None, check_finite: bool = True) -> bool:
    """Whether ``op`` (``"grad"``, ``"gram"`` or ``"grad_sum"``) runs on this lean path."""
    if op == "grad":
        found = _one_point(k, X, Y, check_finite)
        # In d > 1 :func:`grad` checks finiteness on its squared distances; so does this.
        return found is not None and (found[1] or not check_finite or all_finite(X, Y))
    if op == "gram":
        return _pairs(k, X, Y, weights, op, check_finite) is not None
    if op == "grad_sum":
        return _grad_sum_inputs(k, X, Y, weights, check_finite) is not None
    return False


def _squared_distance(X, Y):
    """|x_i - y_j|^2 as a new (n, m) array, summed from raw differences (exact at r = 0)."""
    out = np.subtract.outer(X[:, 0], Y[:, 0])
    np.multiply(out, out, out=out)
    if X.shape[1] > 1:
        scratch = np.empty_like(out)
        for a in range(1, X.shape[1]):
            np.subtract.outer(X[:, a], Y[:, a], out=scratch)
            np.multiply(scratch, scratch, out=scratch)
            out += scratch
    return out


def _profile(c: _Constants, sq, derivative: bool):
    """v f(w sq), or f'(w sq) for ``derivative`` (RBF: exp(-w sq / 2)), in sq's dtype.

    Overwrites ``sq``. The factor in front of f' is left to the caller.
    """
    sq *= c.scale[sq.dtype]
    return _profile_of_scaled(c, sq, derivative)


def _profile_of_scaled(c: _Constants, scaled, derivative: bool):
    """:func:`_profile` of an ``sq`` already multiplied by the scale (overwritten)."""
    dtype = scaled.dtype
    if c.rbf:
        out = np.exp(scaled, out=scaled)
    else:
        fn = c.profile.df if derivative else c.profile.f
        # Profile hyperparameters are float64 arrays: cast back to the points' dtype.
        out = fn(np, scaled, c.params).astype(dtype, copy=False)
    if not derivative and c.variance != 1.0:
        out *= c.variance
    return out


def gram(k, X, Y, check_finite: bool = True):
    """K[i, j] = k(x_i, y_j) as (n, m), or None when this path does not apply."""
    found = _pairs(k, X, Y, None, "gram", check_finite)
    if found is None:
        return None
    c, X2, Y2, _ = found
    return _profile(c, _squared_distance(X2, Y2), derivative=False)


def grad_sum(k, X, Y, w, check_finite: bool = True):
    """G[i] = sum_j w_j d/dx_i k(x_i, y_j) as (n, d), (n,) for 1-D points; or None."""
    found = _grad_sum_inputs(k, X, Y, w, check_finite)
    if found is None:
        return None
    c, X2, Y2, one_dim, points = found
    dtype = X2.dtype
    if points is not None:
        return _gaussian_grad_sum(c, points, w)
    if one_dim:
        # Raw differences: exact for near-duplicates, and exactly 0 at r = 0 (Matern 1/2's
        # zero subgradient, whose f' is 0 there by convention).
        diff = np.subtract.outer(X2[:, 0], Y2[:, 0])
        slope = _profile(c, diff * diff, derivative=True)
        slope *= diff
        G = slope.sum(axis=1) if w is None else slope @ w
        G *= c.factor[dtype]
        return G
    # sum_j f'_ij u_j (x_i - y_j) = x_i (F u)_i - (F (u y))_i: one (m, d + 1) matrix product,
    # on points centred on Y's mean so that the two parts cancel as little as possible.
    centre = Y2.mean(axis=0)
    rhs = np.empty((Y2.shape[0], Y2.shape[1] + 1), dtype)
    rhs[:, 0] = 1.0 if w is None else w
    np.subtract(Y2, centre, out=rhs[:, 1:])
    if w is not None:
        rhs[:, 1:] *= w[:, None]
    slope = _profile(c, _squared_distance(X2, Y2), derivative=True)
    sums = slope @ rhs
    G = (X2 - centre) * sums[:, :1]
    G -= sums[:, 1:]
    G *= c.factor[dtype]
    return G


def _grad_sum_inputs(k, X, Y, w, check_finite: bool):
    """(constants, X2, Y2, one_dim, points) for an eager grad map, or None where this path
    does not apply. ``points`` are :func:`_gaussian_points` for an RBF in d > 1 within the
    factorisation's range, else None; out of range, a size beyond the difference form's own
    limit declines."""
    found = _pairs(k, X, Y, w, "grad_sum", check_finite)
    if found is None:
        return None
    c, X2, Y2, one_dim = found
    points = None
    if c.rbf and X2.shape[1] > 1:
        points = _gaussian_points(c, X2, Y2)
        work = X2.shape[0] * Y2.shape[0] * (X2.shape[1] + 1)
        if points is None and work > policy.current().lean_grad_sum_max_work:
            return None  # out of the factorisation's range, and too big for the rest here
    return c, X2, Y2, one_dim, points


def _gaussian_points(c: _Constants, X2, Y2):
    """(c_X, c_Y, Z_X, Z_Y, |Z_X|^2 / 2, |Z_Y|^2 / 2) for :func:`_gaussian_grad_sum`: the
    points centred on Y's mean and scaled by 1 / l, or None when one lies too far from the
    centre for exp(z_i . z_j) to stay finite (:func:`kernelgrad.execution.gaussian.in_range`)."""
    same = Y2 is X2
    centre = np.add.reduce(Y2, axis=0) / Y2.shape[0]  # np.mean's wrapper costs 3 us here
    root = c.root[X2.dtype]
    cX = X2 - centre
    cY = cX if same else Y2 - centre
    ZX = cX * root
    ZY = ZX if same else cY * root
    half_X = 0.5 * np.einsum("ij,ij->i", ZX, ZX)
    half_Y = half_X if same else 0.5 * np.einsum("ij,ij->i", ZY, ZY)
    if not gaussian.in_range(max(half_X.max(), half_Y.max()), X2.dtype):
        return None
    return cX, cY, ZX, ZY, half_X, half_Y


def _gaussian_grad_sum(c: _Constants, points, w):
    """An RBF's grad map in d > 1 by :mod:`kernelgrad.execution.gaussian`'s factorisation,
    on :func:`_gaussian_points`.

    With z = (x - centre) / l and a = exp(-|z|^2 / 2), exp(-|z_i - z_j|^2 / 2) = a_i a_j
    exp(z_i . z_j), so G_i = -v w a_i [c_i (F u)_i - (F (u c))_i] with F = exp(Z_X Z_Y^T),
    u = a_Y (times the weights) and c the centred points. The (n, m) work is one matrix
    product, one exp in place and one product with (m, d + 1): against the difference
    form's ten passes over (n, m) arrays (subtractions, squares and sums per dimension,
    the scale and the exp), 2-3x less time at n = 100, d = 3.
    """
    cX, cY, ZX, ZY, half_X, half_Y = points
    dtype = cX.dtype
    F = ZX @ ZY.T
    np.exp(F, out=F)
    u = np.exp(-half_Y)
    if w is not None:
        u *= w
    R = np.empty((cY.shape[0], cY.shape[1] + 1), dtype)
    R[:, 0] = u
    np.multiply(cY, u[:, None], out=R[:, 1:])
    S = F @ R
    G = cX * S[:, :1]
    G -= S[:, 1:]
    G *= (c.factor[dtype] * np.exp(-half_X))[:, None]
    return G


def grad(k, x, Y, check_finite: bool = True):
    """d/dx k(x, y_j) for every row of Y, or None when this fast path does not apply."""
    found = _one_point(k, x, Y, check_finite)
    if found is None:
        return None
    c, one_dim = found
    dtype = Y.dtype
    diff = x - Y
    if one_dim:
        slope = _profile(c, diff * diff, derivative=True)
        slope *= c.factor[dtype]
        slope *= diff  # in place: one allocation fewer, on a call that costs a few of them
        return slope
    # The scaled squared distances as one BLAS product: a third of einsum's cost at m = 300.
    d = Y.shape[1]
    per_dim = c.scale_per_dim.get((d, dtype))
    if per_dim is None:
        per_dim = c.scale_per_dim.setdefault((d, dtype), np.full(d, c.scale[dtype], dtype))
    scaled = np.square(diff) @ per_dim
    if check_finite and not math.isfinite(scaled.dot(scaled)):
        return None  # a NaN or inf point (or an overflow): the general path says which
    slope = _profile_of_scaled(c, scaled, derivative=True)
    slope *= c.factor[dtype]
    diff *= slope[:, None]
    return diff


def _fits(op: str, k, pairs: int, d: int) -> bool:
    """Whether ``op`` on that many pairs in d dimensions runs on this path. Beyond the
    policy's lean limits (pairs times (d + 1)) one jitted XLA program, fused and on every
    core, is faster. An RBF's grad map in d > 1 is factorised here
    (:func:`_gaussian_grad_sum`) and stays ahead for longer (its own limit, in pairs)."""
    chosen = policy.current()
    lean = chosen.lean_gram_max_work if op == "gram" else chosen.lean_grad_sum_max_work
    if op == "gram" or d == 1 or type(k) is not K.RBF:
        return pairs * (d + 1) <= lean
    in_3d, in_2d = chosen.lean_gaussian_grad_sum_max_pairs
    return pairs <= (in_3d if d >= 3 else in_2d)
