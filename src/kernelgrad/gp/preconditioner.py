"""Preconditioners for conjugate gradients on a GP's covariance A = K + diag(noise).

Three, traceable, each applied as ``solver(tile)(R)``, R -> M^-1 R:

* :class:`Jacobi`: M = diag(A). Free to build; enough when A is close to diagonal.
* :class:`PivotedCholesky`: M = L L^T + D for a rank-k partial pivoted Cholesky L of K
  (Harbrecht, Peters and Schneider 2012; used for GP solves by Gardner et al., "GPyTorch",
  2018) and D = noise + the diagonal that L leaves out, diag(K - L L^T). L captures K's
  largest directions, the ones that make CG slow; D keeps M exact on the diagonal, so
  M falls back to Jacobi where L explains nothing. Fewer iterations are not guaranteed:
  on a strongly correlated problem in d = 100, where the slow directions are spread over
  the gradient block, it took more than Jacobi (``benchmarks/conditioning.py``).
  Building it takes k columns of K, O(k n d) for the joint covariance of values and
  gradients, and O(k^2 N) for the factor; M^-1 is applied by Woodbury's identity in O(k N).
* :class:`GaussSeidel`: for values and full gradients, A = [[V, C^T], [C, G]] with V the
  values' block (n, n), noise included. M = (D + L) D^-1 (D + U), the symmetric block
  Gauss-Seidel sweep over the two blocks, with D = blockdiag(V, diag(G)) and L, U A's
  off-diagonal blocks: V exact (its inverse, O(n^3) once), the gradients by their
  diagonal, and the coupling between the two kept. Applying M^-1 costs two n^2 matvecs and
  the two cross blocks' products, C y and C^T x, about 2/3 of a product with A for a
  stationary kernel. At n = 1000, d = 100, lengthscale sqrt(d), it took 129 iterations where
  Jacobi took 337 (``benchmarks/conditioning.py``). Without the cached tile's cross blocks
  (several right-hand sides, or a tile too large to keep) it applies block Jacobi,
  blockdiag(V, diag(G)).

Jacobi and the pivoted Cholesky also give ``logdet`` and ``sample``, which ``gradient_gp.fit``
needs: ``sample`` maps standard probes to probes with covariance M, the start vectors that
make preconditioned CG a Lanczos run for stochastic Lanczos quadrature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax


class Jacobi(eqx.Module):
    """M = diag(A), the inverse diagonal as preconditioner."""

    diagonal: Any  # (N,), noise included

    def solver(self, tile=None):
        """R -> M^-1 R; M needs no products with A (``tile`` is not used)."""
        return self.solve

    def solve(self, R):
        """M^-1 R for R (N, p)."""
        return R / self.diagonal[:, None]

    def logdet(self):
        return jnp.sum(jnp.log(self.diagonal))

    def sample(self, E):
        """M^(1/2) E[:N] for standard probes E (N + k, p), any k: covariance M."""
        return jnp.sqrt(self.diagonal)[:, None] * E[: self.diagonal.shape[0]]


class PivotedCholesky(eqx.Module):
    """M = L^T L + diag(D) for a rank-k pivoted Cholesky factor L (k, N) (see the module)."""

    L: Any  # (k, N)
    D: Any  # (N,): noise plus the diagonal that L leaves out
    capacity: Any  # (k, k): the Cholesky factor of I + L D^-1 L^T

    def solver(self, tile=None):
        """R -> M^-1 R; M needs no products with A (``tile`` is not used)."""
        return self.solve

    def solve(self, R):
        """M^-1 R = D^-1 R - D^-1 L^T (I + L D^-1 L^T)^-1 L D^-1 R, for R (N, p)."""
        S = R / self.D[:, None]
        inner = jax.scipy.linalg.cho_solve((self.capacity, True), self.L @ S)
        return S - (self.L.T @ inner) / self.D[:, None]

    def logdet(self):
        """log det M = log det D + log det (I + L D^-1 L^T)."""
        return jnp.sum(jnp.log(self.D)) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(self.capacity)))

    def sample(self, E):
        """L^T E[N:] + D^(1/2) E[:N] for standard probes E (N + k, p): covariance M."""
        N = self.D.shape[0]
        return self.L.T @ E[N:] + jnp.sqrt(self.D)[:, None] * E[:N]


class GaussSeidel(eqx.Module):
    """M = (D + L) D^-1 (D + U) on values and full gradients (see the module)."""

    value_inverse: Any  # (n, n): V^-1, V the values' block with its noise
    gradient_diagonal: Any  # (n d,): diag(G), noise included

    def solver(self, tile):
        """R (N, 1) -> M^-1 R, with the cross blocks of ``tile``, a
        :class:`~kernelgrad.gp.gradient_kernel.CachedTile` of the points against themselves;
        block Jacobi for ``tile`` None or several columns.

        By blocks, with r = [r1, r2]: y = V^-1 r1, x2 = (r2 - C y) / diag(G) and
        x1 = V^-1 (r1 - C^T x2).
        """
        n = self.value_inverse.shape[0]
        Vi, Dg = self.value_inverse, self.gradient_diagonal.reshape(n, -1)

        def block_jacobi(R):
            return jnp.concatenate([Vi @ R[:n], R[n:] / self.gradient_diagonal[:, None]])

        def sweep(R):
            if R.shape[1] != 1:
                return block_jacobi(R)
            r1, r2 = R[:n, 0], R[n:, 0].reshape(Dg.shape)
            x2 = (r2 - tile.gradients_from_values(Vi @ r1)) / Dg
            x1 = Vi @ (r1 - tile.values_from_gradients(x2))
            return jnp.concatenate([x1, x2.reshape(-1)])[:, None]

        return block_jacobi if tile is None else sweep


def gauss_seidel(V, gradient_diagonal):
    """:class:`GaussSeidel` from the values' block V (n, n), noise included, and the
    gradients' diagonal (n d,), noise included.

    V is factorised with a jitter of sqrt(eps) times its mean diagonal, which keeps a
    Cholesky of a near-singular V (tiny noise, near-equal points) finite and leaves M an SPD
    approximation of A, which is all CG asks of it. Should it still fail, V's diagonal
    stands in for it.
    """
    n = V.shape[0]
    jitter = jnp.sqrt(jnp.finfo(V.dtype).eps) * jnp.mean(jnp.diagonal(V))
    factor = jnp.linalg.cholesky(V + jitter * jnp.eye(n, dtype=V.dtype))
    inverse = jax.scipy.linalg.cho_solve((factor, True), jnp.eye(n, dtype=V.dtype))
    inverse = 0.5 * (inverse + inverse.T)  # symmetric to round-off, as CG needs
    inverse = jnp.where(jnp.all(jnp.isfinite(inverse)), inverse, jnp.diag(1.0 / jnp.diagonal(V)))
    return GaussSeidel(inverse, gradient_diagonal)


#: Pivots are taken this many at a time (see :func:`pivoted_cholesky`).
PIVOT_BLOCK = 32


def factor_rank(rank: int) -> int:
    """k, the rows of :func:`pivoted_cholesky`'s factor for ``rank``: whole blocks, at
    least ``rank``."""
    blocks = -(-rank // PIVOT_BLOCK)
    return blocks * -(-rank // blocks) if rank else 0


def pivoted_cholesky(diagonal, columns: Callable[[Any], Any], rank: int):
    """A partial pivoted Cholesky factor L (k, N), k >= ``rank``, of a PSD matrix K, given
    its diagonal (N,) and ``columns(I)``, its columns I (b,) as rows (b, N), traceable in I.

    Pivots come in blocks of up to :data:`PIVOT_BLOCK`: the entries with the largest
    diagonal that the factor so far leaves out. A block's rows are the Nystroem update
    S^(-1/2) C^T for its residual columns C = K[:, I] - L^T L[:, I] and their Schur complement
    S = C[I], through S's eigendecomposition so that dependent pivots (K's rank reached, or
    two near-equal points) give zero rows instead of dividing by round-off. Building the
    factor reads L once a block, k / 32 times, where one pivot at a time reads it k times
    (memory-bound at N = 10^5: rank 100 took 1.4 s that way, rank 1000 65 s).
    """
    N = diagonal.shape[0]
    blocks = -(-rank // PIVOT_BLOCK)
    b = factor_rank(rank) // blocks
    floor = jnp.finfo(diagonal.dtype).eps * jnp.max(diagonal) * N

    def step(j, state):
        L, residual = state
        _, pivots = lax.top_k(residual, b)
        C = columns(pivots) - L[:, pivots].T @ L  # (b, N); rows >= j b of L are still zero
        lam, Q = jnp.linalg.eigh(C[:, pivots])
        scale = jnp.where(lam > floor, 1.0 / jnp.sqrt(jnp.maximum(lam, floor)), 0.0)
        rows = (scale[:, None] * Q.T) @ C
        residual = jnp.maximum(residual - jnp.sum(rows * rows, axis=0), 0.0).at[pivots].set(0.0)
        return lax.dynamic_update_slice(L, rows, (j * b, 0)), residual

    init = (jnp.zeros((blocks * b, N), diagonal.dtype), diagonal)
    return lax.fori_loop(0, blocks, step, init)[0]


def build(diagonal, noise, columns: Callable[[Any], Any], rank: int):
    """The preconditioner of A = K + diag(noise) from K's diagonal and columns: Jacobi at
    rank 0, else :class:`PivotedCholesky` of that rank (at most N)."""
    rank = min(rank, diagonal.shape[0])
    if rank == 0:
        return Jacobi(diagonal + noise)
    L = pivoted_cholesky(diagonal, columns, rank)
    D = noise + jnp.maximum(diagonal - jnp.sum(L * L, axis=0), 0.0)
    capacity = jnp.linalg.cholesky(jnp.eye(L.shape[0], dtype=L.dtype) + (L / D[None, :]) @ L.T)
    return PivotedCholesky(L, D, capacity)


__all__ = [
    "GaussSeidel",
    "Jacobi",
    "PivotedCholesky",
    "build",
    "factor_rank",
    "gauss_seidel",
    "pivoted_cholesky",
]
