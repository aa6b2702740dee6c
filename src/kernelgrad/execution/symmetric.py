"""The weighted grad map on Y = X, computing each exp once for both (i, j) and (j, i).

When Y is X, every closed-form coefficient matrix is symmetric (stationary kernels depend on
|x_i - x_j|, dot-product kernels on x_i . x_j, and sums and products keep that). So the
blocks of rows I and columns J with I < J serve both halves of the sum:

    rows I:  sum_{j in J} c_ij w_j (x_i - x_j)      (C_IJ   @ [w_J, w_J x_J])
    rows J:  sum_{i in I} c_ij w_i (x_j - x_i)      (C_IJ^T @ [w_I, w_I x_I])

and only b (b + 1) / 2 of the b^2 blocks are evaluated: about half the transcendental work
of the dense program. Blocks are small enough to stay in cache, and the (I, J) pairs are
scanned, so memory is O(n d + block^2) and the program size does not grow with n.

A Gaussian profile (RBF) takes :mod:`kernelgrad.execution.gaussian`'s factorisation in
each block: one matrix product, one exp and the two products above, with no per-pair
distance arithmetic. At n = 20,000, d = 3 (float64, 2 cores) that took the block scan from
0.32-0.33 s to 0.21-0.22 s.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..derivatives import terms
from . import compile_cache, gaussian, padding, policy
from .inputs import library_numpy


def applies(kernel, X) -> bool:
    """Whether the engine should use the symmetric path for the concrete points ``X`` (n, d).

    Never in d = 1, where the unsymmetric program is one fused loop that XLA:CPU runs faster
    than these blocks. Where :mod:`kernelgrad.execution.gaussian`'s factorisation applies,
    in d >= 3 from the policy's ``symmetric_gaussian_min_points`` (in d = 2 its unsymmetric
    tiles are as fast); otherwise from its ``symmetric_min_points``.
    """
    n, d = X.shape
    chosen = policy.current()
    if d == 1 or n < min(chosen.symmetric_gaussian_min_points, chosen.symmetric_min_points):
        return False  # and no O(n d) range check on small calls
    if gaussian.factorises(kernel, X):
        return d >= 3 and n >= chosen.symmetric_gaussian_min_points
    return n >= chosen.symmetric_min_points


def _scan_block_pairs(block_sums, n: int, d: int, dtype, block: int):
    """sum over the block pairs (I, J), I <= J, of ``block_sums(I, J) -> (to_I, to_J)``,
    each added to its rows of an (n, d) result: to_I holds rows I's sums over columns J,
    to_J rows J's over columns I."""

    def add(G, rows, start):
        return lax.dynamic_update_slice_in_dim(
            G, lax.dynamic_slice_in_dim(G, start, block) + rows, start, 0
        )

    def accumulate(G, pair):
        I, J = pair
        to_I, to_J = block_sums(I, J)
        # A diagonal block already holds both halves of its own pairs.
        to_J = jnp.where(I == J, 0.0, 1.0) * to_J
        return add(add(G, to_I, I * block), to_J, J * block), None

    rows, cols = np.triu_indices(n // block)
    G, _ = lax.scan(accumulate, jnp.zeros((n, d), dtype), (jnp.asarray(rows), jnp.asarray(cols)))
    return G


@library_numpy
def gaussian_grad_sum(kernel, X, w, block: int | None = None):
    """:func:`grad_sum` for a Gaussian-profile kernel, each block through
    :mod:`kernelgrad.execution.gaussian`'s factorisation (the caller checks
    :func:`kernelgrad.execution.gaussian.factorises` first)."""
    block = block or policy.current().symmetric_block
    n, d = X.shape
    Z, _, c, R, a, coefficient = gaussian.parts(kernel, X, X, w)

    def block_sums(I, J):
        ZI, ZJ = (lax.dynamic_slice_in_dim(Z, K * block, block) for K in (I, J))
        cI, cJ = (lax.dynamic_slice_in_dim(c, K * block, block) for K in (I, J))
        RI, RJ = (lax.dynamic_slice_in_dim(R, K * block, block) for K in (I, J))
        F = jnp.exp(terms.matmul(jnp, ZI, ZJ.T))
        right = terms.matmul(jnp, F, RJ)  # sum_j F_ij [u_j, u_j c_j]
        left = terms.matmul(jnp, RI.T, F).T  # sum_i F_ij [u_i, u_i c_i]
        return cI * right[:, :1] - right[:, 1:], cJ * left[:, :1] - left[:, 1:]

    G = _scan_block_pairs(block_sums, n, d, X.dtype, block)
    return coefficient * a[:, None] * G


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
    Xc, _ = terms.centre(jnp, X, X)

    def block_sums(I, J):
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
        return to_I, to_J

    return _scan_block_pairs(block_sums, n, d, X.dtype, block)


@compile_cache.jit(static_argnames=("block", "factorised"))
def _compiled(kernel, X, w, block, factorised):
    return (gaussian_grad_sum if factorised else grad_sum)(kernel, X, w, block)


def run(kernel, X, w):
    """:func:`grad_sum` on concrete arrays of any n, padded to whole blocks.

    Padded points copy the first point and carry weight 0: their columns add nothing to the
    real rows, so they never change (or NaN) the result. Their rows are left on the result
    for the caller to crop (see :mod:`kernelgrad.execution.engine`).
    """
    block = policy.current().symmetric_block
    rows = -(-X.shape[0] // block) * block
    factorised = gaussian.factorises(kernel, X)
    X = padding.pad_rows(X, rows, True)
    w = padding.pad_rows(w, rows, False)
    return _compiled(kernel, X, w, block, factorised)
