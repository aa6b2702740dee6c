"""The Gaussian factorisation of an RBF grad map: one matrix product and one exp per pair.

For a kernel with the Gaussian profile, k(x, y) = v exp(-|z_x - z_y|^2 / 2) with
z = (x - centre) / lengthscale, and the exp factors as

    exp(-|z_i - z_j|^2 / 2) = a_i a_j exp(z_i . z_j),    a = exp(-|z|^2 / 2).

So the grad map sum_j w_j dk/dx_i = -v W sum_j w_j exp(-|z_i - z_j|^2 / 2) (x_i - y_j) is

    G_i = -v W a_i [c_i (F u)_i - (F (u c))_i],    F = exp(Z_X Z_Y^T),  u = a_Y w,

with c the centred points and W the inverse squared lengthscales: a_j goes into the weights
once and a_i onto the result once, and a pair costs one entry of a matrix product and one
exp, with none of the expansion's per-pair distance arithmetic (norms, the noise floor, the
profile's scale). The matrix-free reductions (:mod:`kernelgrad.execution.reductions`)
use it for ``grad_sum`` and ``gram_matvec`` on concrete host points, 1.7-2.0x faster than
their closed-form tiles at n = m = 5000 and 20,000 (d = 3, float64), and
:mod:`kernelgrad.execution.symmetric` in its blocks. As one dense XLA program it did not
beat the expansion form, which XLA:CPU fuses with its matrix product (RBF, d = 2, 3 and 8,
n = 300: 1.3-1.5x slower in interleaved minima; n = 1000: from 1.2x slower to 1.25x
faster), so the dense engine keeps that; but in NumPy, on NumPy points
(:func:`kernelgrad.execution.eager._gaussian_grad_sum`), it beat the whole compiled call
up to n = 1536 in d >= 3.

Its rounding matches the expansion form's (about eps (|z_i|^2 + |z_j|^2) relative, with the
same centring), but exp(z_i . z_j) overflows for points far from the centre. So it is used
only on concrete points for which :func:`factorises` says every |z|^2 / 2 is under
:data:`MAX_HALF_SQ_NORM` of the dtype's largest exponent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import terms
from .identity import IdentityCache

#: The factorisation runs while max |z|^2 / 2 is at most this fraction of log(largest
#: float): exp(z_i . z_j) <= exp(|z_i|^2 / 2 + |z_j|^2 / 2) then stays below the square root
#: of the largest float (|z| up to 25 lengthscales in float64, 8.9 in float32).
MAX_HALF_SQ_NORM = 0.45


def _root_scale(kernel):
    """1 / lengthscale (scalar or (d,)) as NumPy float64, or None for a kernel without the
    Gaussian profile or with traced hyperparameters (inside a transform over the kernel,
    where their range is not known)."""
    if not getattr(kernel, "gaussian_profile", False):
        return None
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(kernel)):
        return None
    return 1.0 / np.asarray(kernel.lengthscale, np.float64)


#: Asking a kernel afresh costs more (equinox attribute and method calls) than the check.
_ROOT_SCALES = IdentityCache()


def factorises(kernel, X, Y=None) -> bool:
    """Whether ``kernel``'s grad map on the concrete points X (against Y, default X) may use
    the factorisation: a Gaussian profile with concrete hyperparameters, and no point so far
    from the centre (the mean of Y) that exp(z_i . z_j) could overflow."""
    return centred_in_range(kernel, X, Y) is not None


def centred_in_range(kernel, X, Y=None):
    """:func:`centred` of X and Y (default X) where :func:`factorises` says yes, else None:
    the range check is made on the centred points themselves."""
    root = _ROOT_SCALES.get(kernel, _root_scale, keep=lambda known: known is not None)
    if root is None:
        return None
    X = np.asarray(X)
    Y = X if Y is None else np.asarray(Y)
    centred_points = centred(X, Y)
    for c in centred_points[:1] if Y is X else centred_points:
        half_sq = 0.5 * np.max(np.sum(np.square(c * root), axis=1), initial=0.0)
        if not in_range(half_sq, X.dtype):
            return None
    return centred_points


def in_range(max_half_sq_norm: float, dtype) -> bool:
    """Whether points whose largest |z|^2 / 2 is ``max_half_sq_norm`` may be factorised in
    ``dtype`` (see :data:`MAX_HALF_SQ_NORM`)."""
    return max_half_sq_norm <= MAX_HALF_SQ_NORM * np.log(np.finfo(dtype).max)


def centred(X, Y):
    """Concrete host points X and Y shifted by the mean of Y (Y stays X when it is X): a
    caller that cuts Y into chunks or pads it centres first, so that every chunk has the
    centre :func:`factorises` checked."""
    centre = np.mean(Y, axis=0)
    cX = X - centre
    return cX, cX if Y is X else Y - centre


def scaled(kernel, c):
    """(Z, a) for centred points c: Z = c / lengthscale and a = exp(-|Z|^2 / 2)."""
    Z = c * jnp.sqrt(kernel.inverse_sq_scale(jnp, c.dtype))
    return Z, jnp.exp(-0.5 * jnp.sum(Z * Z, axis=1))


def parts(kernel, X, Y, w, *, centre: bool = True):
    """(Z_X, Z_Y, c_X, R_Y, a_X, coefficient): the factorisation's pieces, with ``R_Y`` =
    [u, u c_Y] (m, d + 1) and u = a_Y w. The grad map is ``coefficient * a_X * (c_X S[:, :1]
    - S[:, 1:])`` with S = exp(Z_X Z_Y^T) R_Y. ``centre=False`` takes X and Y as already
    centred (:func:`centred`)."""
    cX, cY = terms.centre(jnp, X, Y) if centre else (X, Y)
    (ZX, aX), (ZY, aY) = scaled(kernel, cX), scaled(kernel, cY)
    u = aY * w
    RY = jnp.concatenate([u[:, None], u[:, None] * cY], 1)
    # dk/dx_i = -v W (x_i - y_j) exp(-s_ij / 2).
    coefficient = -jnp.asarray(kernel.variance, X.dtype) * kernel.inverse_sq_scale(jnp, X.dtype)
    return ZX, ZY, cX, RY, aX, coefficient


__all__ = [
    "MAX_HALF_SQ_NORM",
    "centred",
    "centred_in_range",
    "factorises",
    "in_range",
    "parts",
    "scaled",
]
