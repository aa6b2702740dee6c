"""The single-point gradient on small NumPy inputs, with almost no per-call overhead.

``grad(k, x, Y)`` at m = 100 is about 2 us of arithmetic. The general path (validation into a
:class:`~kernelgrad.inputs.Problem`, the tile machinery of :mod:`kernelgrad.rules`) costs
several times that, and a jitted JAX call costs about 5 us of dispatch alone. For the
commonest call, a stationary kernel with one lengthscale on NumPy points of one float dtype,
this module checks the few facts it relies on and evaluates

    d/dx k(x, y_j) = 2 v w f'(s_j) (x - y_j),     s_j = w |x - y_j|^2

(w = 1 / l^2, the kernel's squared-distance weight)

directly (DESIGN.md's profile rule). For RBF, whose profile is exp(-s / 2), the constants
fold into the exponent and the whole gradient is six NumPy operations. Anything else
returns ``None`` and the caller takes the general path, which also produces every error
message.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels as K

#: Beyond this many points the general path's fixed cost no longer matters.
MAX_POINTS = 4096

_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class _Constants(NamedTuple):
    profile: type  # the kernel class, whose static df is the profile's derivative
    params: tuple  # profile hyperparameters (RQ's alpha, ...) as NumPy scalars
    rbf: bool  # f(s) = exp(-s / 2), so f'(s) = -f(s) / 2
    # Per dtype, 0-d arrays: NumPy multiplies by a 0-d array of the same dtype about 250 ns
    # faster than by a Python float, which it must convert on every call.
    scale: dict  # multiplies |x - y|^2: inv_sq, or -inv_sq / 2 for RBF (exp's argument)
    factor: dict  # multiplies the slope: 2 v inv_sq, or -v inv_sq for RBF


def _per_dtype(value: float) -> dict:
    return {dtype: np.asarray(value, dtype) for dtype in _DTYPES}


def _constants(k) -> _Constants | None:
    """The folded constants of ``k``, memoised on the instance; None if it doesn't qualify.

    Kernels are immutable, so the memo never goes stale. It is a plain attribute outside the
    pytree: a kernel rebuilt by a JAX transformation (with traced leaves) works it out anew.
    """
    # Equinox routes k.__dict__ through its own __getattribute__, which costs 3x more.
    known = object.__getattribute__(k, "__dict__").get("_kernelgrad_eager", 0)
    if known != 0:
        return known
    cls = type(k)
    leaves = (k.variance, k.lengthscale) if issubclass(cls, K.AbstractStationaryKernel) else ()
    qualifies = bool(leaves) and all(type(a) is np.ndarray and a.ndim == 0 for a in leaves)
    known = None
    if qualifies:
        inv_sq = float(cls.inverse_sq_scale(k, np, np.float64))
        params = cls.profile_params(k, np, np.float64)
        if all(type(p) is np.ndarray or isinstance(p, float) for p in params):
            coef = 2.0 * float(k.variance) * inv_sq  # (2 v / l^2) f'(s) (x - y)
            rbf = issubclass(cls, K.RBF)
            # RBF: (2 v / l^2) f'(s) = -(v / l^2) exp(-s / 2), 1 / l^2 folded into exp's argument.
            scale, factor = (-0.5 * inv_sq, -0.5 * coef) if rbf else (inv_sq, coef)
            known = _Constants(cls, params, rbf, _per_dtype(scale), _per_dtype(factor))
    object.__setattr__(k, "_kernelgrad_eager", known)
    return known


def grad(k, x, Y):
    """d/dx k(x, y_j) for every row of Y, or None when this fast path does not apply."""
    # Cheapest checks first: this function's whole budget is about a microsecond.
    if type(Y) is not np.ndarray or not 0 < Y.shape[0] <= MAX_POINTS:
        return None
    dtype = Y.dtype
    if not isinstance(x, np.ndarray | np.generic) or x.dtype != dtype or dtype not in _DTYPES:
        return None
    # 1-D points need a scalar x; (m, d) points need x of shape (d,).
    one_dim = Y.ndim == 1
    if x.shape != Y.shape[1:] or not (one_dim or Y.ndim == 2):
        return None
    c = _constants(k)
    if c is None:
        return None
    diff = x - Y
    s = diff * diff if one_dim else np.einsum("ja,ja->j", diff, diff)
    s *= c.scale[dtype]
    if c.rbf:
        slope = np.exp(s, out=s)
    else:
        # Profile hyperparameters are float64 arrays: cast back to the points' dtype.
        slope = c.profile.df(np, s, c.params).astype(dtype, copy=False)
    slope *= c.factor[dtype]
    if one_dim:
        slope *= diff  # in place: one allocation fewer, on a call that costs a few of them
        return slope
    return slope[:, None] * diff
