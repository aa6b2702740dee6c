"""Exact solves with the joint covariance of values and gradients when d >> n.

For a stationary kernel k = v f(s), s = (x - y)^T W (x - y) with W = diag(w) (w = 1 /
lengthscale^2), the gradient block of the joint covariance is, for points a and b,

    d2k / dx_a dx_b^T = B_ab W + c_ab W delta_ab delta_ab^T W,   delta_ab = x_a - x_b,
    B = -2 v f'(s),   c = -4 v f''(s)                             (both n x n),

and W delta_ab = W X^T (e_a - e_b) lies in the span of the n points. So the (n d)^2 block
plus its noise is A0 + U M U^T with A0 = B (x) W + noise I (a Kronecker product, inverted
through the eigendecomposition of B, O(n^3 + n^2 d)), U = I_n (x) W X^T (n d x n^2) and M
(n^2 x n^2) built from c. Woodbury's identity needs only the n^2 x n^2 capacity matrix
I + U^T A0^-1 U M: exact inference in O(n^3 d + n^6) time and O(n^2 d + n^4) memory, where
a Cholesky factorisation of the (n (d + 1))^2 matrix costs O(n^3 d^3). The structure is that
of de Roos, Gessner and Hennig, "High-dimensional Gaussian process inference with
derivatives" (ICML 2021); this is our own derivation and code.

**Dot-product kernels** k = g(x . y) (Linear, Polynomial) have the same shape with W = I:

    d2k / dx_a dx_b^T = B_ab I + c_ab x_b x_a^T,   B = g'(t),   c = g''(t),   t = X X^T,

whose rank-one parts x_b x_a^T also lie in the span of the points, so only M changes (its
block (a, b) is c_ab e_b e_a^T), and the value-gradient block is g'(t_ab) x_a.

The values join through their Schur complement: with F the (n, n d) value-gradient block,
``[[K + s_v I, F], [F^T, A]]`` is solved by one n x n factorisation of
K + s_v I - F A^-1 F^T, where A^-1 F^T costs n Woodbury solves.

All products here take the gradient block as an (n, d) matrix, point i's gradient its row i,
which is kernelgrad's block-major layout of :mod:`kernelgrad.gp.gradient_kernel`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..kernels import AbstractKernel
from ..kernels.dot_product import AbstractDotProductKernel
from ..kernels.stationary import AbstractStationaryKernel


def applies(kernel: AbstractKernel) -> bool:
    """Whether the Woodbury solve covers this kernel: one stationary family whose lengthscale
    scales the distance (RBF, Matern 5/2, RQ, IMQ; not Periodic) and that is twice
    differentiable at 0 (not Matern 1/2 or 3/2), or one dot-product kernel."""
    stationary = (
        isinstance(kernel, AbstractStationaryKernel)
        and kernel.lengthscale_scales_distance
        and kernel.twice_differentiable_at_zero
    )
    return stationary or isinstance(kernel, AbstractDotProductKernel)


class WoodburySolver(eqx.Module):
    """Solves (joint covariance + noise) Z = R for the values and gradients at X; see the
    module. Build it with :func:`factorise` (traceable)."""

    X: Any  # (n, d)
    w: Any  # (d,) the squared distance's weights
    B: Any  # (n, n) the identity part's coefficients
    c: Any  # (n, n) the rank-one parts' coefficients
    eigenvectors: Any  # of B, (n, n)
    inverse_scales: Any  # (n, d): A0^-1 in B's eigenbasis, 1 / (beta_c w_a + noise)
    capacity: Any  # LU factors of I + T M, (n^2, n^2)
    pivots: Any
    schur: Any  # Cholesky factor of the values' Schur complement (n, n)
    dot_product: bool = eqx.field(static=True)  # else stationary

    def _a0_solve(self, G):
        """A0^-1 G for G (..., n, d)."""
        V = self.eigenvectors
        return V @ ((V.T @ G) * self.inverse_scales)

    def _m(self, u):
        """M u for u (..., n, n), row a the a-th block. Stationary: (M u)_a = sum_b c_ab
        (e_a - e_b) (u_b[a] - u_b[b]); dot product: (M u)_a = sum_b c_ab e_b u_b[a]."""
        cross = jnp.swapaxes(u, -1, -2)  # [a, b] = u_b[a]
        if self.dot_product:
            return self.c * cross
        diag = jnp.diagonal(u, axis1=-2, axis2=-1)  # u_b[b]
        t = self.c * (cross - diag[..., None, :])  # t_ab = c_ab (u_b[a] - u_b[b])
        rows = jnp.sum(t, axis=-1)  # the e_a parts
        return jnp.eye(u.shape[-1], dtype=u.dtype) * rows[..., :, None] - t

    def gradient_solve(self, G):
        """A^-1 G for the noisy gradient block A and G (..., n, d)."""
        n = self.X.shape[0]
        XW = self.X * self.w
        Q = self._a0_solve(G)
        r = (Q @ XW.T).reshape(*G.shape[:-2], n * n)  # U^T Q, row a = X W q_a
        t = jax.scipy.linalg.lu_solve((self.capacity, self.pivots), r.reshape(-1, n * n).T).T
        u = self._m(t.reshape(*G.shape[:-2], n, n))
        return Q - self._a0_solve(u @ XW)  # U u, row a = (u_a^T X W)

    def _f(self, Z):
        """F Z for Z (..., n, d): (F Z)_a = sum_b B_ab (W (x_a - x_b)) . z_b (stationary) or
        sum_b B_ab x_a . z_b (dot product)."""
        if self.dot_product:
            return jnp.sum(self.X * (self.B @ Z), -1)
        XW = self.X * self.w
        return jnp.sum(
            self.B * (XW @ jnp.swapaxes(Z, -1, -2) - jnp.sum(XW * Z, -1)[..., None, :]), -1
        )

    def _ft(self, alpha):
        """F^T alpha for alpha (..., n): row b = W (sum_a alpha_a B_ab (x_a - x_b))
        (stationary) or sum_a alpha_a B_ab x_a (dot product)."""
        if self.dot_product:
            return jnp.swapaxes(self.B, -1, -2) @ (alpha[..., :, None] * self.X)
        weighted = alpha[..., :, None] * self.B  # [a, b] = alpha_a B_ab
        return (
            jnp.swapaxes(weighted, -1, -2) @ self.X - jnp.sum(weighted, -2)[..., :, None] * self.X
        ) * self.w

    def solve(self, R):
        """The joint solve for R (n (d + 1), p), block-major: (n (d + 1), p)."""
        n, d = self.X.shape
        y = R[:n].T  # (p, n)
        G = R[n:].T.reshape(-1, n, d)  # (p, n, d)
        AG = self.gradient_solve(G)
        alpha = jax.scipy.linalg.cho_solve((self.schur, True), (y - self._f(AG)).T).T
        beta = AG - self.gradient_solve(self._ft(alpha))
        return jnp.concatenate([alpha.T, beta.reshape(-1, n * d).T])


def _coefficients(kernel, X):
    """(w (d,), K, B, c (n, n)) of the module's formulas for the kernel's family."""
    d = X.shape[1]
    dtype = X.dtype
    if isinstance(kernel, AbstractDotProductKernel):
        t = X @ X.T
        return (
            jnp.ones(d, dtype),
            kernel.g(jnp, t, dtype),
            kernel.dg(jnp, t, dtype),
            kernel.d2g(jnp, t, dtype),
        )
    w = jnp.broadcast_to(kernel.inverse_sq_scale(jnp, dtype), (d,))
    params = kernel.profile_params(jnp, dtype)
    v = jnp.asarray(kernel.variance, dtype)
    diff = X[:, None, :] - X[None, :, :]  # (n, n, d): O(n^2 d), as the data itself
    s = jnp.einsum("abi,abi,i->ab", diff, diff, w)
    K = v * kernel.f(jnp, s, params)
    return w, K, -2.0 * v * kernel.df(jnp, s, params), -4.0 * v * kernel.d2f(jnp, s, params)


def factorise(kernel: AbstractKernel, X, value_noise, gradient_noise) -> WoodburySolver:
    """The solver for values and gradients at X (n, d) with these noise variances, for a
    kernel that :func:`applies`."""
    n = X.shape[0]
    dtype = X.dtype
    dot_product = isinstance(kernel, AbstractDotProductKernel)
    w, K, B, c = _coefficients(kernel, X)
    beta, V = jnp.linalg.eigh(B)
    inverse_scales = 1.0 / (beta[:, None] * w[None, :] + gradient_noise)  # (n, d)
    # T = U^T A0^-1 U: block (a, b) = sum_e V_ae V_be X W diag(1 / (beta_e w + noise)) W X^T.
    gamma = jnp.einsum("id,ed,jd->eij", X, inverse_scales * w * w, X)  # (n, n, n)
    T = jnp.einsum("ae,be,eij->aibj", V, V, gamma).reshape(n * n, n * n)
    E = jnp.eye(n, dtype=dtype)
    if dot_product:  # M: block (a, b) = c_ab e_b e_a^T
        M = jnp.einsum("ab,ib,ja->aibj", c, E, E).reshape(n * n, n * n)
    else:  # M: block (a, b) = c_ab (e_a - e_b)(e_a - e_b)^T
        diffs = E[:, None, :] - E[None, :, :]  # (n, n, n): e_a - e_b
        M = jnp.einsum("ab,abi,abj->aibj", c, diffs, diffs).reshape(n * n, n * n)
    capacity, pivots = jax.scipy.linalg.lu_factor(jnp.eye(n * n, dtype=dtype) + T @ M)
    solver = WoodburySolver(
        X, w, B, c, V, inverse_scales, capacity, pivots, jnp.eye(n, dtype=dtype), dot_product
    )
    # The values' Schur complement, K + s_v I - F A^-1 F^T, from n gradient solves.
    AFt = solver.gradient_solve(solver._ft(E))  # row a: A^-1 F^T e_a, (n, n, d)
    schur = K + value_noise * E - solver._f(AFt).T
    return eqx.tree_at(lambda s: s.schur, solver, jnp.linalg.cholesky(0.5 * (schur + schur.T)))
