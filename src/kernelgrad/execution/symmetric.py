"""The weighted grad map on Y = X, computing each exp once for both (i, j) and (j, i).

When Y is X, every closed-form coefficient matrix is symmetric (stationary kernels depend on
|x_i - x_j|, dot-product kernels on x_i . x_j, and sums and products keep that). So the
blocks of rows I and columns J with I < J serve both halves of the sum:

    rows I:  sum_{j in J} c_ij w_j (x_i - x_j)      (C_IJ   @ [w_J, w_J x_J])
    rows J:  sum_{i in I} c_ij w_i (x_j - x_i)      (C_IJ^T @ [w_I, w_I x_I])

and only b (b + 1) / 2 of the b^2 blocks are evaluated: about half the transcendental work
of the dense program. Blocks are small enough to stay in cache, and the (I, J) pairs are
scanned, so memory is O(n d + block^2) and the program size does not grow with n.

A Gaussian profile (RBF, ARD or not) factors further: with z = (x - centre) / lengthscale,

    exp(-|z_i - z_j|^2 / 2) = a_i a_j exp(z_i . z_j),    a = exp(-|z|^2 / 2),

so a_j goes into the weights once, a_i onto the result once, and a block costs one matrix
product, one exp and the two products above, with no per-pair distance arithmetic. At
n = 20,000, d = 3 (float64, 2 cores) that took the block scan from 0.32-0.33 s to 0.21-0.22 s.
Its rounding matches the expansion form's (about eps (|z_i|^2 + |z_j|^2) relative), but
exp(z_i . z_j) overflows for points far from the centre, so it runs only while every
|z|^2 / 2 stays under :data:`GAUSSIAN_MAX_HALF_SQ_NORM` of the dtype's largest exponent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..derivatives import terms
from . import compile_cache, padding, policy
from .inputs import library_numpy


def applies(kernel, X) -> bool:
    """Whether the engine should use the symmetric path for the concrete points ``X`` (n, d):
    in d > 1 only (in d = 1 the unsymmetric program is one fused loop that XLA:CPU runs
    faster than these blocks), from the policy's ``symmetric_min_points``, or in d >= 3
    from its ``symmetric_gaussian_min_points`` where the Gaussian factorisation applies."""
    n, d = X.shape
    if d == 1:
        return False
    chosen = policy.current()
    if n >= chosen.symmetric_min_points:
        return True
    return d >= 3 and n >= chosen.symmetric_gaussian_min_points and factorises(kernel, X)


#: The Gaussian factorisation runs while max |z|^2 / 2 is at most this fraction of
#: log(largest float): exp(z_i . z_j) <= exp(|z_i|^2 / 2 + |z_j|^2 / 2) then stays below the
#: square root of the largest float (|z| up to 25 lengthscales in float64, 8.9 in float32).
GAUSSIAN_MAX_HALF_SQ_NORM = 0.45


def factorises(kernel, X) -> bool:
    """Whether :func:`grad_sum` may use the Gaussian factorisation for ``kernel`` on the
    concrete points ``X``: a Gaussian profile, and no point so far from the centre that
    exp(z_i . z_j) could overflow."""
    if not getattr(kernel, "gaussian_profile", False):
        return False
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(kernel)):
        return False  # hyperparameters under a transform: their range is not known here
    X = np.asarray(X)
    Z = (X - X.mean(axis=0)) * np.sqrt(np.asarray(kernel.inverse_sq_scale(np, X.dtype)))
    limit = GAUSSIAN_MAX_HALF_SQ_NORM * np.log(np.finfo(X.dtype).max)
    return bool(0.5 * np.max(np.sum(Z * Z, axis=1)) <= limit)


def _pairs(count: int):
    """The (I, J) block pairs with I <= J, as two index vectors for a scan."""
    rows, cols = np.triu_indices(count)
    return jnp.asarray(rows), jnp.asarray(cols)


def _add_block(G, rows, start):
    return lax.dynamic_update_slice_in_dim(
        G, lax.dynamic_slice_in_dim(G, start, rows.shape[0]) + rows, start, 0
    )


@library_numpy
def gaussian_grad_sum(kernel, X, w, block: int | None = None):
    """:func:`grad_sum` for a Gaussian-profile kernel through a_i a_j exp(z_i . z_j) (see the
    module docstring; the caller checks :func:`factorises` first)."""
    block = block or policy.current().symmetric_block
    n, d = X.shape
    Xc, _ = terms.centre(jnp, X, X)
    inverse_sq = kernel.inverse_sq_scale(jnp, X.dtype)
    Z = Xc * jnp.sqrt(inverse_sq)
    a = jnp.exp(-0.5 * jnp.sum(Z * Z, axis=1))
    u = a * w
    R = jnp.concatenate([u[:, None], u[:, None] * Xc], 1)  # [u_j, u_j c_j]: (n, d + 1)

    def accumulate(G, pair):
        I, J = pair
        ZI, ZJ = (lax.dynamic_slice_in_dim(Z, K * block, block) for K in (I, J))
        cI, cJ = (lax.dynamic_slice_in_dim(Xc, K * block, block) for K in (I, J))
        RI, RJ = (lax.dynamic_slice_in_dim(R, K * block, block) for K in (I, J))
        F = jnp.exp(terms.matmul(jnp, ZI, ZJ.T))
        right = terms.matmul(jnp, F, RJ)  # sum_j F_ij [u_j, u_j c_j]
        left = terms.matmul(jnp, RI.T, F).T  # sum_i F_ij [u_i, u_i c_i]
        to_I = cI * right[:, :1] - right[:, 1:]
        # A diagonal block already holds both halves of its own pairs.
        to_J = jnp.where(I == J, 0.0, 1.0) * (cJ * left[:, :1] - left[:, 1:])
        return _add_block(_add_block(G, to_I, I * block), to_J, J * block), None

    G, _ = lax.scan(accumulate, jnp.zeros((n, d), X.dtype), _pairs(n // block))
    # dk/dx_i = -variance w (x_i - x_j) exp(-s_ij / 2), with exp(-s_ij / 2) = a_i a_j F_ij.
    variance = jnp.asarray(kernel.variance, X.dtype)
    return -variance * inverse_sq * a[:, None] * G


@library_numpy
def grad_sum(kernel, X, w, block: int | None = None):
    """G[i] = sum_j w_j d/dx_i k(x_i, x_j) for a closed-form kernel: (n, d).

    Args:
        kernel: a kernel with closed-form rules.
        X: (n, d) points, with n a multiple of ``block``.
        w: (n,) weights.
        block: rows per block (default: the policy's ``symmetric_block``).
    """
    block = block or policy.current().symmetric_block
    n, d = X.shape
    count = n // block
    Xc, _ = terms.centre(jnp, X, X)

    def accumulate(G, pair):
        I, J = pair
        XI = lax.dynamic_slice_in_dim(X, I * block, block)
        XJ = lax.dynamic_slice_in_dim(X, J * block, block)
        cI = lax.dynamic_slice_in_dim(Xc, I * block, block)
        cJ = lax.dynamic_slice_in_dim(Xc, J * block, block)
        wI = lax.dynamic_slice_in_dim(w, I * block, block)
        wJ = lax.dynamic_slice_in_dim(w, J * block, block)
        to_I = jnp.zeros_like(XI)
        to_J = jnp.zeros_like(XJ)
        for term in kernel.tile(jnp, XI, XJ, cI, cJ, need_value=False).dx:
            if term.field.kind == "diff" and d == 1:
                # In one dimension the products c_ij (x_i - x_j) cost one pass and, unlike
                # the matmul form below, never cancel (Matern 1/2's c_ij ~ 1/r is huge for
                # near-duplicate points).
                E = term.coef * (term.field.scale * (XI - XJ[:, 0]))
                to_I = to_I + (E @ wJ)[:, None]
                to_J = to_J - (wI @ E)[:, None]  # w^T E, not E^T w: no transposed copy
                continue
            if term.field.kind == "diff":
                aI, aJ, bI, bJ = cI, cJ, cI, cJ
            else:  # "y": sum_j c_ij w_j y_j, with no x_i part
                aI, aJ, bI, bJ = jnp.zeros_like(cI), jnp.zeros_like(cJ), -XI, -XJ
            right = terms.matmul(
                jnp, term.coef, jnp.concatenate([wJ[:, None], wJ[:, None] * bJ], 1)
            )
            left = terms.matmul(
                jnp, jnp.concatenate([wI[:, None], wI[:, None] * bI], 1).T, term.coef
            ).T
            to_I = to_I + term.field.scale * (aI * right[:, :1] - right[:, 1:])
            to_J = to_J + term.field.scale * (aJ * left[:, :1] - left[:, 1:])
        # A diagonal block already holds both halves of its own pairs.
        to_J = jnp.where(I == J, 0.0, 1.0) * to_J
        return _add_block(_add_block(G, to_I, I * block), to_J, J * block), None

    G, _ = lax.scan(accumulate, jnp.zeros((n, d), X.dtype), _pairs(count))
    return G


@compile_cache.jit(static_argnames=("block", "gaussian"))
def _compiled(kernel, X, w, block, gaussian):
    return (gaussian_grad_sum if gaussian else grad_sum)(kernel, X, w, block)


def run(kernel, X, w):
    """:func:`grad_sum` on concrete arrays of any n, padded to whole blocks.

    Padded points copy the first point and carry weight 0: their columns add nothing to the
    real rows, so they never change (or NaN) the result. Their rows are left on the result
    for the caller to crop (see :mod:`kernelgrad.execution.engine`).
    """
    block = policy.current().symmetric_block
    rows = -(-X.shape[0] // block) * block
    gaussian = factorises(kernel, X)
    X = padding.pad_rows(X, rows, True)
    w = padding.pad_rows(w, rows, False)
    return _compiled(kernel, X, w, block, gaussian)
