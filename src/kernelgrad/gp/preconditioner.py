"""Preconditioners for conjugate gradients on a GP's covariance A = K + diag(noise).

Three, traceable, each applied as ``solver(tile)(R)``, R -> M^-1 R, and each with
``split(tile)``, None or the transformed system that CG runs instead (see ``_pcg`` in
:mod:`kernelgrad.gp.gradient_gp`):

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
  diagonal, and the coupling between the two kept. Applied as M^-1, it would cost two
  n^2 d matmuls an iteration on top of the product's three (for a stationary kernel);
  CG runs instead on the system it splits (:meth:`GaussSeidel.split`, a block form of
  Eisenstat's trick), whose product costs the three alone and whose iterates are the
  same. At n = 1000, d = 100, lengthscale sqrt(d), it took 129 iterations where Jacobi
  took 337 (``benchmarks/conditioning.py``). Without the cached tile (several right-hand
  sides, or a tile too large to keep) it is block Jacobi, blockdiag(V, diag(G)).

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

    def split(self, tile):
        """None: CG runs on A itself (see :meth:`GaussSeidel.split`)."""
        return None

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

    def split(self, tile):
        """None: CG runs on A itself (see :meth:`GaussSeidel.split`)."""
        return None

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

    value_inverse: Any  # (n, n): W^-1, W the values' block V with its noise (and a jitter)
    value_noise: Any  # (n,): the noise in V
    gradient_diagonal: Any  # (n d,): diag(G), noise included
    gradient_noise: Any  # (n d,): the noise in G

    def solver(self, tile=None):
        """R -> D^-1 R for R (N, p), D = blockdiag(V, diag(G)): block Jacobi. On its own it
        is the preconditioner where the tile's products are not at hand; with them, it
        preconditions the system that :meth:`split` transforms."""
        n = self.value_inverse.shape[0]

        def block_jacobi(R):
            return jnp.concatenate(
                [self.value_inverse @ R[:n], R[n:] / self.gradient_diagonal[:, None]]
            )

        return block_jacobi

    def split(self, tile):
        """(operator, into, out_of) for CG on the system transformed by a block form of
        Eisenstat's trick ("Efficient implementation of a class of preconditioned conjugate
        gradient methods", SIAM J. Sci. Stat. Comput., 1981), with ``tile`` a
        :class:`~kernelgrad.gp.gradient_kernel.CachedTile` of the points against
        themselves; None without one. Each maps (N, 1) to (N, 1).

        M = L1 D L1^T with L1 = (D + L) D^-1 = [[I, 0], [C W^-1, I]], W the value block of
        D, which :attr:`value_inverse` inverts (V, but for a jitter or a fallback). A x = b
        becomes B y = L1^-1 b (``into``), B = L1^-1 A L1^-T (``operator``), x = L1^-T y
        (``out_of``), and CG on B preconditioned by D takes the iterates of CG on A
        preconditioned by M. Written out, with q = W^-1 C^T y2 and t1 = y1 - q, B y is
        [u, C (t1 - W^-1 u) + G y2] for u = V t1 + C^T y2 (= V y1 when W = V: B is then
        blockdiag(V, G - C V^-1 C^T)). So one product costs the projection of y2, one
        contraction, V once and W^-1 twice: the three n^2 d matmuls of a product with A
        for an RBF, where applying M^-1 besides would add two.
        """
        if tile is None:
            return None
        n = self.value_inverse.shape[0]
        Vi = self.value_inverse
        shape = (n, self.gradient_diagonal.shape[0] // n)

        def blocks(Y):
            return Y[:n, 0], Y[n:, 0].reshape(shape)

        def joined(y1, y2):
            return jnp.concatenate([y1, y2.reshape(-1)])[:, None]

        def operator(Y):
            y1, y2 = blocks(Y)
            from_gradients, gradient_rows = tile.split(y2)  # C^T y2, v0 -> C v0 + G y2
            t1 = y1 - Vi @ from_gradients
            u = tile.values @ t1 + self.value_noise * t1 + from_gradients
            noise = self.gradient_noise.reshape(shape) * y2  # the tile's G is noiseless
            return joined(u, gradient_rows(t1 - Vi @ u) + noise)

        def into(B):  # [b1, b2 - C W^-1 b1]
            b1, b2 = blocks(B)
            return joined(b1, b2 - tile.gradients_from_values(Vi @ b1))

        def out_of(Y):  # [y1 - W^-1 C^T y2, y2]
            y1, y2 = blocks(Y)
            return joined(y1 - Vi @ tile.split(y2)[0], y2)

        return operator, into, out_of


def gauss_seidel(V, value_noise, gradient_diagonal, gradient_noise):
    """:class:`GaussSeidel` from the values' block V (n, n) and the gradients' diagonal
    (n d,), noise included in both, and the noise in each, (n,) and (n d,).

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
    return GaussSeidel(inverse, value_noise, gradient_diagonal, gradient_noise)


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
