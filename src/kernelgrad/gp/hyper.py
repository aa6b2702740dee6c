"""Derivatives of kernel matrices with respect to the kernel's hyperparameters.

A kernel is an equinox pytree whose hyperparameters are its array leaves (variance,
lengthscale, alpha, period, scale, offset). :func:`hyper_grad` returns, for every such leaf
theta, the derivative dK/dtheta of the Gram matrix (or of the joint value-and-gradient
covariance of :func:`kernelgrad.gradient_gram`), as a pytree shaped like the kernel.

Derivatives are taken with respect to the **raw** hyperparameters, as stored. In log space,
the convention of :mod:`kernelgrad.gp.gradient_gp`, multiply by theta: dK/dlog(theta) = theta
dK/dtheta.

There are a handful of hyperparameters and n m outputs, so forward mode is the right AD
mode: one JVP per hyperparameter entry, each as cheap as one Gram matrix.
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np

from ..derivatives import autodiff
from ..execution.inputs import local_x64, prepare, resolve_method
from . import gradient_kernel


def hyper_grad(k, X, Y=None, *, gradients: bool = False, check_finite: bool = True):
    """dK/dtheta for every hyperparameter theta of ``k``, as a pytree shaped like ``k``.

    Each array leaf of the kernel, of shape ``s`` (``()`` for a scalar, ``(d,)`` for ARD
    lengthscales), is replaced by an array of shape ``(n, m, *s)``: entry ``[i, j, ...]`` is
    d k(x_i, y_j) / d theta[...]. With ``gradients=True`` the matrix differentiated is the
    (n (d + 1), m (d + 1)) joint covariance of values and gradients (block-major, see
    :func:`kernelgrad.gradient_gram`), and each leaf becomes ``(n (d + 1), m (d + 1), *s)``.

    Static fields (a polynomial's degree, a pair function's code) have no derivative and are
    kept as they are. A pair function has no array leaves, so its result has none either.

    Args:
        k: a kernel (or pair function).
        X: points, (n, d) or (n,).
        Y: points, (m, d) or (m,); ``None`` means Y = X.
        gradients: differentiate the joint value-and-gradient covariance instead of K.
        check_finite: refuse NaN or inf in points held in host memory (see
            :func:`kernelgrad.gram`).

    Returns:
        A kernel-shaped pytree of derivatives, NumPy for NumPy inputs (float64 inputs give
        float64 results without touching JAX's global x64 setting), JAX otherwise.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> dK = kg.hyper_grad(kg.RBF(variance=2.0), np.zeros((3, 2)))
        >>> dK.variance.shape, float(dK.variance[0, 1])  # K = v exp(..) = v at r = 0
        ((3, 3), 1.0)
    """
    p = prepare(k, X, Y, check_finite=check_finite)
    if gradients:
        method = resolve_method("hyper_grad(gradients=True)", p, "auto")
    params, static = eqx.partition(p.kernel, eqx.is_array)

    def matrix(params):
        kernel = eqx.combine(params, static)
        if gradients:
            return gradient_kernel.joint_dense(kernel, p.X, p.Y, method=method)
        return autodiff.gram(kernel, p.X, p.Y)

    with local_x64(p.dtype):
        jac = jax.jacfwd(matrix)(params)
        if not p.is_jax:
            jac = jax.tree.map(np.asarray, jac)
    return eqx.combine(jac, static)


__all__ = ["hyper_grad"]
