"""A Gaussian process conditioned on values and gradients.

The prior is f ~ GP(0, k). Observations at n points X (n, d) are the values y (n,) and,
optionally, the gradients G (n, d), each with independent Gaussian noise:

    y_i = f(x_i) + e_i,          e_i ~ N(0, value_noise)
    G_ia = df/dx_a(x_i) + g_ia,  g_ia ~ N(0, gradient_noise)

Their covariance is the gradient-kernel operator of :func:`kernelgrad.gradient_gram`
(block-major: the n values first, then the n d gradient entries point by point) plus the
diagonal noise. Without gradients it is the Gram matrix plus ``value_noise``.

**Solving.** :meth:`GradientGP.condition` solves ``A alpha = [y, G.ravel()]`` either by an
exact Cholesky factorisation of the dense (n (d + 1))^2 matrix, O(n^3 d^3) time and
O(n^2 d^2) memory, by the structured Woodbury solve when d >> n
(:mod:`kernelgrad.gp.woodbury`), or by conjugate gradients on the lazy operator, O(n^2 d)
time per iteration and O(n d) memory, preconditioned by a block Gauss-Seidel sweep (the
values' block exact), the inverse diagonal (Jacobi) or a pivoted Cholesky
(:mod:`kernelgrad.gp.preconditioner`). ``"auto"`` picks among the solvers by
the policy's ``woodbury_max_points`` and ``cholesky_max`` (:mod:`kernelgrad.execution.policy`).

**Hyperparameter convention.** Every hyperparameter is positive: the kernel's array leaves
(variance, lengthscale, alpha, period, scale, offset) and both noise variances. Noise values
are *variances*, not standard deviations. :func:`fit` optimises them in **log space**,
theta = exp(eta) with eta unconstrained, so positivity needs no clipping and one learning
rate suits hyperparameters of any scale. It maximises the exact log marginal likelihood,
with gradients by ``jax.grad`` through the kernel pytree (the closed-form rules are
differentiable in the hyperparameters). Leaves that are exactly 0 (a polynomial offset of 0)
have no logarithm and stay fixed, as do all leaves named in ``fixed``.

Every float64 NumPy computation runs under a *local* ``jax.enable_x64``: results are float64
without touching JAX's global configuration. Results come back as NumPy arrays.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ..derivatives import autodiff, hessian, rules
from ..execution import compile_cache, policy, reductions
from ..execution.inputs import library_numpy, local_x64, require_finite
from ..kernels import AbstractKernel, positive
from ..kernels import kernel as as_kernel
from . import gradient_kernel, preconditioner, woodbury
from .observations import Observations, observations, observed_diagonal

#: Default cap on conjugate-gradient iterations. Jacobi-preconditioned CG on a smooth
#: kernel's covariance converges at a rate set by its condition number, about
#: variance / noise: small noise needs many iterations, or Cholesky.
CG_MAXITER = 1000

#: Test points are predicted this many at a time, so that the cross-covariance needed by
#: the variance, (observations, chunk), stays small.
PREDICT_CHUNK = 256

#: Each float32 solve of :func:`_refined_pcg` stops at this relative residual: at n = 1000,
#: d = 100 (``benchmarks/conditioning.py``, correlated) 1e-3 took two refinements to 1e-6 and
#: 397 float32 iterations, 1e-4 two and 498.
REFINEMENT_TOL = 1e-3


# --------------------------------------------------------------------------- the covariance


class _Covariance(eqx.Module):
    """The training covariance without noise, P A P^T for the observations ``obs`` (see
    :mod:`kernelgrad.gp.observations`), traceable.

    ``method`` is the closed form where the kernel has one, else AD (see
    :mod:`kernelgrad.gp.gradient_kernel` for the costs of each).
    """

    kernel: AbstractKernel
    X: Any  # (n, d)
    obs: Observations
    method: str = eqx.field(static=True)

    @property
    def with_gradients(self) -> bool:
        return self.obs.with_derivatives

    @property
    def size(self) -> int:
        return self.obs.size

    def _values_method(self):
        return "closed" if self.method == "closed" else "reverse"

    def gram(self, A, B):
        """k(a_i, b_j) for points A and B, by the rules where the kernel has them."""
        if self.method == "closed":
            return rules.gram(self.kernel, jnp, A, B)
        return autodiff.gram(self.kernel, A, B)

    def dense(self):
        """The covariance of the observations, dense: (size, size)."""
        if not self.with_gradients:
            return self.gram(self.X, self.X)
        if self.obs.kind == "general" and self.method == "closed":
            # Observation by observation, O(size^2 d): the joint matrix would be (n (d + 1))^2
            # for the few of its entries that partial or directional observations select.
            points, w = jax.vmap(self.obs.functional)(jnp.arange(self.size))
            Xo, a, U = self.X[points], w[:, 0].astype(self.X.dtype), w[:, 1:].astype(self.X.dtype)
            return gradient_kernel.functional_dense(self.kernel, Xo, a, U, Xo, a, U)
        A = gradient_kernel.joint_dense(self.kernel, self.X, self.X, method=self.method)
        return self.obs.gather(self.obs.gather(A).T).T

    def matvec(self, V):
        """The covariance times V (size, p), matrix-free and tiled: (size, p)."""
        if not self.with_gradients:
            return reductions.gram_matvec(
                self.kernel, self.X, self.X, V, method=self._values_method()
            )
        full = gradient_kernel.joint_matvec(
            self.kernel, self.X, self.X, self.obs.scatter(V), method=self.method
        )
        return self.obs.gather(full)

    def repeated_products(self, p: int):
        """(matvec, tile): :meth:`matvec` for a solver that multiplies by this covariance
        again and again, p vectors at a time, and the tile behind it or None. For one vector
        and a closed-form kernel with full gradients, the tile's coefficients are worked out
        once, here, up to the policy's ``cached_coefficients_max_bytes``
        (:class:`~kernelgrad.gp.gradient_kernel.CachedTile`; several vectors keep their
        batched tiles)."""
        if p == 1 and self.with_gradients and self.method == "closed":
            limit = policy.current().cached_coefficients_max_bytes
            tile = gradient_kernel.cached_tile(self.kernel, self.X, self.X, limit)
            if tile is not None:

                def matvec(V):
                    return self.obs.gather(tile.product(self.obs.scatter(V)[:, 0])[:, None])

                return matvec, tile if self.obs.kind == "full" else None
        return self.matvec, None

    def diagonal(self):
        if not self.with_gradients:
            return jax.vmap(self.kernel)(self.X, self.X)
        full = gradient_kernel.joint_diagonal(self.kernel, self.X, self.X, method=self.method)
        return observed_diagonal(self.kernel, self.X, self.obs, self.method, full)

    def noise(self, value_noise, gradient_noise):
        """The (size,) noise variances on the diagonal."""
        return self.obs.noise(value_noise, gradient_noise, self.X.dtype)

    def column(self, j):
        """Column j (traceable) of the covariance, (size,): observation j against all of
        them, O(n d) (one point on the right of the joint product)."""
        if not self.with_gradients:
            return self.gram(self.X, self.X[j][None])[:, 0]
        point, w = self.obs.functional(j)
        full = gradient_kernel.joint_matvec(
            self.kernel, self.X, self.X[point][None], w.astype(self.X.dtype), method=self.method
        )
        return self.obs.gather(full[:, None])[:, 0]

    def preconditioner(self, noise, kind: str, rank: int = 0):
        """CG's preconditioner for this covariance plus diag(noise), of a ``kind`` that
        :func:`_preconditioner_kind` has checked (:mod:`kernelgrad.gp.preconditioner`)."""
        if kind == "gauss-seidel":
            n = self.X.shape[0]
            V = self.gram(self.X, self.X) + jnp.diag(noise[:n])
            G = self.diagonal()[n:] + noise[n:]
            return preconditioner.gauss_seidel(V, noise[:n], G, noise[n:])
        rank = rank if kind == "pivoted-cholesky" else 0
        return preconditioner.build(self.diagonal(), noise, jax.vmap(self.column), rank)

    def cross(self, Xs):
        """Covariance of the observations with f at test points Xs: (size, ns)."""
        K = self.gram(self.X, Xs)
        if not self.with_gradients:
            return K
        # cov(df/dx_ia, f(xs)) = d k(x_i, xs) / dx_ia: the Jacobian in the first argument.
        if self.method == "closed":
            J = rules.jacobian(self.kernel, jnp, self.X, Xs)
        else:
            J = autodiff.jacobian_forward(self.kernel, self.X, Xs)
        n, ns, d = J.shape
        full = jnp.concatenate([K, jnp.transpose(J, (0, 2, 1)).reshape(n * d, ns)], axis=0)
        return self.obs.gather(full)

    def cross_joint(self, Xs, method):
        """Covariance of the observations with [f(Xs), grad f(Xs)] (block-major over the
        test points): (size, ns (d + 1))."""
        A = gradient_kernel.joint_dense(self.kernel, self.X, Xs, method=method)
        if not self.with_gradients:
            return A[: self.X.shape[0]]
        return self.obs.gather(A)


def _rank(preconditioner_rank: int | None) -> int:
    """The pivoted-Cholesky rank: the caller's, else the policy's; checked."""
    if preconditioner_rank is None:
        return policy.current().preconditioner_rank
    if (
        isinstance(preconditioner_rank, bool)
        or not isinstance(preconditioner_rank, int)
        or (preconditioner_rank < 0)
    ):
        raise ValueError(
            f"preconditioner_rank must be an integer >= 0 (0: Jacobi); got {preconditioner_rank!r}."
        )
    return preconditioner_rank


PRECONDITIONERS = ("auto", "jacobi", "gauss-seidel", "pivoted-cholesky")


def _preconditioner_kind(choice: str, rank: int | None, cov: _Covariance) -> tuple[str, int]:
    """(kind, rank) of CG's preconditioner from ``condition``'s arguments (``choice`` one
    of :data:`PRECONDITIONERS`), checked.

    "auto" takes the pivoted Cholesky when a rank is given (0: Jacobi), else Gauss-Seidel
    where it applies (values and full gradients, a closed-form kernel) and V^-1 and the
    cached tile fit the policy's ``cached_coefficients_max_bytes`` together (without the
    tile it would be block Jacobi, whose O(n^3) inverse saved a fifth of Jacobi's
    iterations in ``benchmarks/preconditioner_bounds.py``), else Jacobi."""
    applies = cov.obs.kind == "full" and cov.method == "closed"
    n, itemsize = cov.X.shape[0], cov.X.dtype.itemsize
    fits = applies and (
        n * n * itemsize + gradient_kernel.cached_tile_bytes(cov.kernel, cov.X, cov.X)
        <= policy.current().cached_coefficients_max_bytes
    )
    if choice == "gauss-seidel" and not applies:
        raise ValueError(
            "preconditioner='gauss-seidel' needs values and full gradients (no observed mask "
            f"or directions) and a kernel with closed-form rules; got {cov.obs.kind} "
            f"observations under {cov.kernel!r}. Use 'jacobi' or 'pivoted-cholesky'."
        )
    if choice == "pivoted-cholesky":
        rank = _rank(rank)
        if rank == 0:
            raise ValueError("preconditioner='pivoted-cholesky' needs preconditioner_rank >= 1.")
        return choice, rank
    if choice == "auto":
        if rank is not None:
            rank = _rank(rank)
            return ("pivoted-cholesky" if rank else "jacobi"), rank
        choice = "gauss-seidel" if fits else "jacobi"
    return choice, 0


def _method(kernel, with_gradients: bool) -> str:
    if with_gradients:
        hessian.check_twice_differentiable(kernel, "A GP with gradient observations")
        return "closed" if kernel.has_closed_form else "forward"
    return "closed" if kernel.has_closed_form else "reverse"


# --------------------------------------------------------------------------- linear algebra


class CGInfo(NamedTuple):
    """How a conjugate-gradient solve ended: iterations run (all of them, in either
    precision), the worst relative residual (of the float64 system), and how many of the
    solves were float32 refinement steps (:func:`_refined_pcg`)."""

    iterations: int
    relative_residual: float
    refinements: int = 0


def _warn_unconverged(info: CGInfo, tol: float) -> None:
    if not info.relative_residual <= tol:
        warnings.warn(
            f"conjugate gradients stopped after {info.iterations} iterations with a relative "
            f"residual of {info.relative_residual:.1e} > tol = {tol:.0e}; raise maxiter or "
            "the noise variances, or use method='cholesky'.",
            RuntimeWarning,
            stacklevel=3,
        )


#: CG on a system transformed by Eisenstat's trick (:meth:`GaussSeidel.split`) stops on the
#: transformed residual, then checks the true one; each check that fails lowers the target
#: and goes on, at most this many times.
SPLIT_CHECKS = 8


@compile_cache.jit(static_argnames=("maxiter",))
def _pcg(cov: _Covariance, noise, M, B, tol, *, maxiter: int):
    """Solve (cov + diag(noise)) Z = B for B (N, p) by CG preconditioned by M (one of
    :mod:`kernelgrad.gp.preconditioner`), per column; on the system M splits, where it
    does (Gauss-Seidel with the cached tile), whose iterates are the same.

    Returns Z, the iterations, the worst relative residual, and each iteration's step sizes
    and residual ratios (maxiter, p): the Lanczos coefficients of :func:`_lanczos_logdet`.
    """
    matvec, tile = cov.repeated_products(B.shape[1])

    def apply(V):
        return matvec(V) + noise[:, None] * V

    def worst(R, norms):
        return jnp.max(jnp.linalg.norm(R, axis=0) / jnp.where(norms > 0, norms, 1.0))

    split = M.split(tile)
    operator, into, out_of = split or (apply, None, None)
    B_cg = B if split is None else into(B)
    norm_b, norm_cg = jnp.linalg.norm(B, axis=0), jnp.linalg.norm(B_cg, axis=0)
    solve = M.solver(tile)
    record = jnp.zeros((maxiter, B.shape[1]), B.dtype)
    P = solve(B_cg)
    state = (0, jnp.zeros_like(B), B_cg, P, jnp.sum(B_cg * P, axis=0), record, record)

    def body(state):
        k, Z, R, P, rz, steps, ratios = state
        AP = operator(P)
        step = rz / jnp.where(rz > 0, jnp.sum(P * AP, axis=0), 1.0)
        Z = Z + step * P
        R = R - step * AP
        S = solve(R)
        rz_new = jnp.sum(R * S, axis=0)
        ratio = rz_new / jnp.where(rz > 0, rz, 1.0)
        P = S + ratio * P
        return k + 1, Z, R, P, rz_new, steps.at[k].set(step), ratios.at[k].set(ratio)

    def run(state, target):
        def cond(state):
            return (state[0] < maxiter) & (worst(state[2], norm_cg) > target)

        return jax.lax.while_loop(cond, body, state)

    if split is None:
        k, Z, R, _, _, steps, ratios = run(state, tol)
        return Z, k, worst(R, norm_b), steps, ratios

    def true_residual(state):
        return worst(B - apply(out_of(state[1])), norm_b)

    def check(outer):
        state, target, rel, checks = outer
        # the transformed residual overstated the true one by rel / target: aim lower
        target = jnp.maximum(target * jnp.minimum(0.5 * tol / rel, 0.5), jnp.finfo(B.dtype).eps)
        state = run(state, target)
        return state, target, true_residual(state), checks + 1

    def again(outer):
        state, _, rel, checks = outer
        return (rel > tol) & (state[0] < maxiter) & (checks < SPLIT_CHECKS)

    state = run(state, tol)
    outer = (state, jnp.asarray(tol, B.dtype), true_residual(state), 0)
    state, _, rel, _ = jax.lax.while_loop(again, check, outer)
    k, Z, _, _, _, steps, ratios = state
    return out_of(Z), k, rel, steps, ratios


def _low_precision(tree):
    """``tree`` with its float64 arrays in float32 (a covariance, noise or preconditioner)."""

    def cast(a):
        return a.astype(jnp.float32) if eqx.is_array(a) and a.dtype == jnp.float64 else a

    return jax.tree.map(cast, tree)


def _refined_pcg(cov: _Covariance, noise, M, B, tol, *, maxiter: int):
    """:func:`_pcg` for float64 systems by mixed-precision iterative refinement: CG in
    float32 on the residual, to a relative ``REFINEMENT_TOL``, then the residual of the
    float64 system, until it is below ``tol``. Returns (Z, CGInfo).

    A float32 product costs about half a float64 one on the CPU (RBF, n = 1000, d = 100),
    and two refinements to 1e-6 took 397-409 float32 iterations where float64 CG took 337. The
    answer meets ``tol`` on the float64 residual, as plain CG's does. Where float32 cannot
    get there (a float32 solve that stops short of its tolerance, or a refinement that does
    not cut the residual tenfold: condition numbers near 1 / float32's epsilon), float64 CG
    finishes from where refinement left it, with ``maxiter`` iterations, after float32
    solves of at most ``maxiter // 2`` in all: on 30 points in 2-D with noise 1e-5, 1701
    iterations where plain CG took 299.
    """

    def column_norms(A):  # zero columns count as 1: they divide, and stay zero
        norms = jnp.linalg.norm(A, axis=0)
        return jnp.where(norms > 0, norms, 1.0)

    norm_b = column_norms(B)

    def residual(Z):
        """(B - A Z, its worst relative norm) on the float64 system."""
        R = B - (cov.matvec(Z) + noise[:, None] * Z)
        return R, float(jnp.max(jnp.linalg.norm(R, axis=0) / norm_b))

    low, inner_tol = _low_precision((cov, noise, M)), max(tol, REFINEMENT_TOL)
    Z, R = jnp.zeros_like(B), B
    rel, used, refinements = 1.0, 0, 0
    while used < maxiter // 2:
        scale = column_norms(R)
        D, k, inner_rel, _, _ = _pcg(
            *low, (R / scale).astype(jnp.float32), inner_tol, maxiter=maxiter // 2 - used
        )
        used, refinements = used + int(k), refinements + 1
        Z_next = Z + D.astype(B.dtype) * scale
        R_next, rel_next = residual(Z_next)
        if not rel_next <= 0.1 * rel:  # float32 has stalled (or diverged): keep the last Z
            break
        Z, R, rel = Z_next, R_next, rel_next
        if rel <= tol:
            return Z, CGInfo(used, rel, refinements)
        if not float(inner_rel) <= inner_tol:
            break
    # Float64 CG on what is left, with a budget of its own (at n = 2000, d = 10, where
    # neither converged in 1000 iterations, the half left over ended at 2.6 and 22 times
    # plain CG's residual). Its tolerance is relative to the residual it starts from.
    inner = tol * float(jnp.min(norm_b / column_norms(R)))
    D, k, *_ = _pcg(cov, noise, M, R, inner, maxiter=maxiter)
    Z = Z + D
    _, rel = residual(Z)
    return Z, CGInfo(used + int(k), rel, refinements)


def _lanczos_logdet(steps, ratios, k, quadrature: int):
    """e1^T log(T) e1 for the Lanczos tridiagonal T of each column (p,), from its CG
    coefficients (Saad, "Iterative methods for sparse linear systems", 6.7.3): T_jj =
    1 / step_j + ratio_{j-1} / step_{j-1}, T_j,j+1 = sqrt(ratio_j) / step_j, over the first
    min(k, quadrature) iterations (stochastic Lanczos quadrature, Ubaru, Chen and Saad 2017)."""
    a, r = steps[:quadrature].T, ratios[:quadrature].T  # (p, q)
    q = a.shape[1]
    valid = jnp.arange(q)[None, :] < k
    a = jnp.where(valid, a, 1.0)
    diagonal = 1.0 / a + jnp.pad(r[:, :-1] / a[:, :-1], ((0, 0), (1, 0)))
    diagonal = jnp.where(valid, diagonal, 1.0)  # past k: decoupled ones, log 1 = 0
    off = jnp.where(valid[:, 1:], jnp.sqrt(jnp.maximum(r[:, :-1], 0.0)) / a[:, :-1], 0.0)
    T = jax.vmap(jnp.diag)(diagonal) + jax.vmap(lambda o: jnp.diag(o, 1) + jnp.diag(o, -1))(off)
    lam, Q = jnp.linalg.eigh(T)
    return jnp.sum(Q[:, 0, :] ** 2 * jnp.log(jnp.maximum(lam, jnp.finfo(lam.dtype).tiny)), axis=1)


_woodbury = compile_cache.jit(woodbury.factorise)


@compile_cache.jit(static_argnames=("kind", "rank"))
def _preconditioner(cov: _Covariance, noise, *, kind: str, rank: int):
    return cov.preconditioner(noise, kind, rank)


def _log_marginal_likelihood(gp: GradientGP, X, b, obs: Observations):
    """log N(b | 0, A) by a dense Cholesky factorisation; traceable and differentiable."""
    cov = _Covariance(gp.kernel, X, obs, _method(gp.kernel, obs.with_derivatives))
    A = cov.dense() + jnp.diag(cov.noise(gp.value_noise, gp.gradient_noise))
    L = jnp.linalg.cholesky(A)
    z = jax.scipy.linalg.solve_triangular(L, b, lower=True)
    return (
        -0.5 * jnp.sum(z * z)
        - jnp.sum(jnp.log(jnp.diagonal(L)))
        - 0.5 * b.shape[0] * jnp.log(2.0 * jnp.pi)
    )


# --------------------------------------------------------------------------- public API


def _data(X, y, G, observed=None, directions=None, D=None):
    """(X (n, d), b (size,), observations, dtype) as NumPy, checked against each other.

    y (n,) or None: the values, all or none. G (n, d): the partials, where ``observed``
    (n, d booleans, default all) is True; entries elsewhere are ignored. directions (n, r, d)
    (or (n, d) for one a point) and D (n, r) (or (n,)): directional derivatives
    D[i, s] = directions[i, s] . grad f(x_i).
    """
    X = np.asarray(X)
    X = X.astype(np.float64) if X.dtype.kind != "f" else X
    require_finite("X", X, skippable=False)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d) or (n,); got {X.shape}.")
    n, d = X.shape
    parts = []
    if y is not None:
        y = np.asarray(y, dtype=X.dtype)
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) for X of shape {X.shape}; got {y.shape}.")
        require_finite("y", y, skippable=False)
        parts.append(y)
    if G is None and observed is not None:
        raise ValueError("observed marks which entries of G are observed; G is missing.")
    if G is not None:
        G = np.asarray(G, dtype=X.dtype)
        if d == 1 and G.shape == (n,):
            G = G[:, None]
        if G.shape != (n, d):
            raise ValueError(
                f"G (the gradients) must have shape ({n}, {d}) for X of shape {X.shape}; "
                f"got {G.shape}."
            )
        observed = np.ones((n, d), bool) if observed is None else np.asarray(observed)
    if (directions is None) != (D is None):
        raise ValueError("directional derivatives need both directions and D.")
    if directions is not None:
        directions = np.asarray(directions, dtype=X.dtype)
        directions = directions[:, None, :] if directions.ndim == 2 else directions
        D = np.asarray(D, dtype=X.dtype)
        D = D[:, None] if D.ndim == 1 else D
        if directions.ndim == 3 and D.shape != directions.shape[:2]:
            raise ValueError(
                f"directions must have shape ({n}, r, {d}) (or ({n}, {d})) and D ({n}, r) (or "
                f"({n},)); got {directions.shape} and {D.shape}."
            )
        require_finite("directions", directions, skippable=False)
        require_finite("D", D, skippable=False)
    # The observation operator checks the mask and the directions' shapes.
    obs = observations(n, d, values=y is not None, observed=observed, directions=directions)
    if G is not None:
        # Unobserved entries may hold anything: check the rest, naming their (i, a).
        require_finite("G", np.where(observed, G, 0.0), skippable=False)
        parts.append(G[observed])
    if directions is not None:
        parts.append(D.reshape(-1))
    if obs.size == 0:
        raise ValueError("nothing is observed: give y, G or directional derivatives D.")
    return X, np.concatenate(parts), obs, X.dtype


class GradientGP(eqx.Module):
    """A zero-mean GP prior with covariance ``kernel``, observed with Gaussian noise.

    Attributes:
        kernel: the covariance function (twice differentiable at r = 0 when gradients are
            observed: not Matern 1/2 or 3/2).
        value_noise: noise *variance* on each observed value.
        gradient_noise: noise *variance* on each observed gradient component.

    It is a pytree: ``jax.grad`` of :meth:`log_marginal_likelihood` (called inside
    ``jax.enable_x64`` for float64) differentiates every hyperparameter and both noises.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> X = np.linspace(0.0, 1.0, 5)[:, None]
        >>> gp = kg.GradientGP(kg.RBF(lengthscale=0.3), value_noise=1e-6, gradient_noise=1e-6)
        >>> post = gp.condition(X, np.sin(X[:, 0]), np.cos(X))
        >>> bool(abs(post.mean(X[2:3])[0] - np.sin(0.5)) < 1e-4)
        True
    """

    kernel: AbstractKernel
    value_noise: Any
    gradient_noise: Any

    def __init__(self, kernel, value_noise=1e-6, gradient_noise=1e-6):
        self.kernel = as_kernel(kernel)
        self.value_noise = positive("value_noise", value_noise)
        self.gradient_noise = positive("gradient_noise", gradient_noise)

    @library_numpy
    def log_marginal_likelihood(self, X, y, G=None, *, observed=None, directions=None, D=None):
        """log p(observations | X) under this prior, by an exact dense Cholesky factorisation.

        The observations are those of :meth:`condition`. Outside a JAX transformation NumPy
        float64 inputs give a Python float (computed in float64). Inside one (``jax.grad``
        over the GP, with concrete data) it is a traceable JAX scalar; turn on
        ``jax.enable_x64`` locally for float64.
        """
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(self)):
            X, b, obs, _ = _data(X, y, G, observed, directions, D)
            return _log_marginal_likelihood(self, jnp.asarray(X), jnp.asarray(b), obs)
        X, b, obs, dtype = _data(X, y, G, observed, directions, D)
        with local_x64(dtype):
            return float(_log_marginal_likelihood(self, jnp.asarray(X), jnp.asarray(b), obs))

    @library_numpy
    def condition(
        self,
        X,
        y,
        G=None,
        *,
        observed=None,
        directions=None,
        D=None,
        method: str = "auto",
        tol: float = 1e-8,
        maxiter: int | None = None,
        preconditioner: str = "auto",
        preconditioner_rank: int | None = None,
        mixed_precision: bool = False,
    ) -> Posterior:
        """The posterior given observations at X (n, d): values, partial derivatives and
        directional derivatives, any of them.

        Args:
            X: the points.
            y: the values f(x_i), (n,); None observes no values.
            G: the partial derivatives df/dx_a(x_i), (n, d); None observes none.
            observed: booleans (n, d): which entries of G are observed (default all; entries
                that are not may hold anything, NaN included). All of them is the fast path.
            directions, D: directional derivatives D[i, s] = directions[i, s] . grad f(x_i),
                directions (n, r, d) and D (n, r) (or (n, d) and (n,) for one a point).

            The observation vector (the layout of :attr:`Posterior.weights`) is the values,
            then the observed entries of G in row-major order, then D in row-major order.
            Derivative observations carry ``gradient_noise``, values ``value_noise``.
            method: ``"cholesky"`` (dense, exact), ``"woodbury"`` (exact in O(n^3 d + n^6)
                for values and full gradients with one stationary or dot-product kernel, see
                :mod:`kernelgrad.gp.woodbury`), ``"cg"`` (matrix-free preconditioned
                conjugate gradients on the lazy operator) or ``"auto"``: Woodbury where it
                applies with n <= d and n <= the policy's ``woodbury_max_points``, else
                Cholesky up to its ``cholesky_max`` observations, else CG.
            tol: CG stops when every residual is below ``tol`` times its right-hand side.
            maxiter: CG iteration cap (default :data:`CG_MAXITER`). A solve that stops above
                ``tol`` warns, naming its residual: raise the noise, which bounds the
                condition number, or use Cholesky.
            preconditioner: CG's preconditioner (:mod:`kernelgrad.gp.preconditioner`):
                ``"jacobi"`` (the diagonal), ``"gauss-seidel"`` (the values' block exact, the
                gradients' diagonal and the coupling of the two: values and full gradients
                with a closed-form kernel), ``"pivoted-cholesky"`` (of rank
                ``preconditioner_rank``, default the policy's, plus the diagonal it leaves
                out) or ``"auto"``: the pivoted Cholesky if a rank is given (0: Jacobi),
                else Gauss-Seidel where it applies and the values' n x n inverse and the
                cached tile fit the policy's ``cached_coefficients_max_bytes`` together,
                else Jacobi. At n = 1000,
                d = 100 (``benchmarks/conditioning.py``) Gauss-Seidel took 129 iterations
                where Jacobi took 337 on the correlated problem, 41 where it took 58 on the
                near-diagonal one, and the pivoted Cholesky of rank 100 or 200 took more
                than Jacobi on the correlated one.
            preconditioner_rank: the pivoted Cholesky's rank (see ``preconditioner``).
            mixed_precision: for CG on float64 data, solve in float32 and refine in float64
                to the same ``tol`` on the float64 residual (:func:`_refined_pcg`). It pays
                where the preconditioned system is well within float32's reach: RBF,
                lengthscale sqrt(d), 0.55-0.72 of plain CG's time at n = 1000, d = 100
                (noise 1e-3), 0.6-1.0 at n = 300, d = 30 (noise 3e-5 to 1e-3). It costs
                where it is not: 30 points in 2-D with noise 1e-5 took 1701 iterations
                against 299. The float32 solves take at most ``maxiter // 2`` iterations,
                float64 CG ``maxiter`` after them.
        """
        methods = ("auto", "cholesky", "woodbury", "cg")
        if method not in methods:
            raise ValueError(f"method must be one of {methods}; got {method!r}.")
        if not isinstance(mixed_precision, bool):
            raise TypeError(f"mixed_precision must be True or False; got {mixed_precision!r}.")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be one of {PRECONDITIONERS}; got {preconditioner!r}."
            )
        X, b, obs, dtype = _data(X, y, G, observed, directions, D)
        cov_method = _method(self.kernel, obs.with_derivatives)
        size = b.shape[0]
        n, d = X.shape
        structured = woodbury.applies(self.kernel) and obs.kind == "full"
        if method == "woodbury" and not structured:
            raise ValueError(
                "method='woodbury' needs values and full gradients (no observed mask or "
                "directions) and one stationary kernel whose lengthscale scales the "
                "distance (RBF, Matern52, RationalQuadratic, ...) or one dot-product kernel "
                f"(Linear, Polynomial); got {self.kernel!r} with "
                f"{obs.kind} observations. Use 'cholesky' or 'cg'."
            )
        if method == "auto":
            chosen = policy.current()
            if structured and n <= min(d, chosen.woodbury_max_points):
                method = "woodbury"
            else:
                method = "cholesky" if size <= chosen.cholesky_max else "cg"
        with local_x64(dtype):
            cov = _Covariance(self.kernel, jnp.asarray(X), obs, cov_method)
            noise = cov.noise(self.value_noise, self.gradient_noise)
            info = None
            if method == "cholesky":
                factor = jnp.linalg.cholesky(cov.dense() + jnp.diag(noise))
                alpha = jax.scipy.linalg.cho_solve((factor, True), jnp.asarray(b))
            elif method == "woodbury":
                factor = _woodbury(self.kernel, cov.X, self.value_noise, self.gradient_noise)
                alpha = factor.solve(jnp.asarray(b)[:, None])[:, 0]
            else:
                kind, rank = _preconditioner_kind(preconditioner, preconditioner_rank, cov)
                factor = _preconditioner(cov, noise, kind=kind, rank=rank)
                B, cap = jnp.asarray(b)[:, None], maxiter or CG_MAXITER
                if mixed_precision and dtype == np.float64:
                    Z, info = _refined_pcg(cov, noise, factor, B, tol, maxiter=cap)
                else:
                    Z, k, rel, _, _ = _pcg(cov, noise, factor, B, tol, maxiter=cap)
                    info = CGInfo(int(k), float(rel))
                alpha = Z[:, 0]
                _warn_unconverged(info, tol)
        # NumPy weights: arithmetic on them outside x64 keeps float64.
        alpha = np.asarray(alpha)
        return Posterior(self, cov, noise, alpha, factor, method, info, tol, maxiter or CG_MAXITER)


class Posterior(eqx.Module):
    """The GP given its observations: mean, mean gradient and variance at new points.

    Attributes:
        weights: alpha = A^{-1} [y, G.ravel()], so that the mean is the cross-covariance
            times alpha.
        factor: the Cholesky factor, the :class:`~kernelgrad.gp.woodbury.WoodburySolver`,
            or CG's preconditioner.
        method: ``"cholesky"``, ``"woodbury"`` or ``"cg"``.
        cg_info: iterations and final residual of the CG solve (None for the others).
    """

    gp: GradientGP
    cov: _Covariance
    noise: Any
    weights: Any
    factor: Any
    method: str = eqx.field(static=True)
    cg_info: CGInfo | None = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    maxiter: int = eqx.field(static=True)

    def _points(self, Xs):
        Xs = np.asarray(Xs, dtype=self.cov.X.dtype)
        d = self.cov.X.shape[1]
        if Xs.ndim == 1 and d == 1:
            Xs = Xs[:, None]
        if Xs.ndim != 2 or Xs.shape[1] != d:
            raise ValueError(f"test points must have shape (ns, {d}); got {Xs.shape}.")
        require_finite("test points", Xs, skippable=False)
        return Xs

    def _mean_and_gradient(self, Xs):
        """(mean (ns,), mean gradient (ns, d)) from one product with the cross-covariance."""
        Xs = self._points(Xs)
        with local_x64(Xs.dtype):
            cov = self.cov
            Xs_j = jnp.asarray(Xs)
            ns, d = Xs.shape
            if cov.with_gradients:
                # The covariance of the test points' [f, grad f] with the observations, times
                # the weights: the joint covariance times P^T alpha, matrix-free.
                weights = cov.obs.scatter(self.weights[:, None])[:, 0]
                out = gradient_kernel.joint_matvec(
                    cov.kernel, Xs_j, cov.X, weights, method=cov.method
                )
                return np.asarray(out[:ns]), np.asarray(out[ns:].reshape(ns, d))
            ad = "closed" if cov.method == "closed" else "reverse"
            mean = reductions.gram_matvec(cov.kernel, Xs_j, cov.X, self.weights[:, None], method=ad)
            grad = reductions.grad_sum(cov.kernel, Xs_j, cov.X, self.weights, method=ad)
            return np.asarray(mean[:, 0]), np.asarray(grad)

    @library_numpy
    def mean(self, Xs) -> Float[Array, " ns"]:
        """Posterior mean E[f(x*)] at test points Xs (ns, d): (ns,)."""
        return self._mean_and_gradient(Xs)[0]

    @library_numpy
    def mean_gradient(self, Xs) -> Float[Array, "ns d"]:
        """Gradient of the posterior mean, d E[f(x*)] / dx*, at Xs (ns, d): (ns, d).

        It equals the posterior mean of grad f, since differentiation is linear.
        """
        return self._mean_and_gradient(Xs)[1]

    def _solved(self, C):
        """(L, R) with L^T R = C^T A^{-1} C for a cross-covariance C (size, p): L = R =
        chol^{-1} C after Cholesky, else C and A^{-1} C (by CG, :data:`PREDICT_CHUNK`
        columns at a time)."""
        if self.method == "cholesky":
            V = jax.scipy.linalg.solve_triangular(self.factor, C, lower=True)
            return V, V
        if self.method == "woodbury":
            return C, self.factor.solve(C)
        Z = [
            _pcg(self.cov, self.noise, self.factor, C[:, s : s + PREDICT_CHUNK], self.tol,
                 maxiter=self.maxiter)[0]
            for s in range(0, C.shape[1], PREDICT_CHUNK)
        ]  # fmt: skip
        return C, jnp.concatenate(Z, axis=1)

    @library_numpy
    def variance(self, Xs, *, noisy: bool = False) -> Float[Array, " ns"]:
        """Posterior variance Var[f(x*)] at Xs (ns, d): (ns,). Latent by default; with
        ``noisy=True`` that of a new observed value, plus ``value_noise``.

        Needs A^{-1} c for the cross-covariance c of each test point: triangular solves
        after Cholesky, or one multi-column CG solve per :data:`PREDICT_CHUNK` test points.
        """
        Xs = self._points(Xs)
        out = []
        with local_x64(Xs.dtype):
            for start in range(0, Xs.shape[0], PREDICT_CHUNK):
                chunk = jnp.asarray(Xs[start : start + PREDICT_CHUNK])
                left, right = self._solved(self.cov.cross(chunk))  # (size, chunk)
                prior = jax.vmap(self.cov.kernel)(chunk, chunk)
                out.append(np.asarray(jnp.maximum(prior - jnp.sum(left * right, axis=0), 0.0)))
        return np.concatenate(out) + (self.gp.value_noise if noisy else 0.0)

    @library_numpy
    def covariance(self, Xs, *, noisy: bool = False) -> Float[Array, "ns ns"]:
        """The joint posterior covariance of f at the test points Xs (ns, d): (ns, ns), with
        ``value_noise`` on its diagonal when ``noisy``. Its diagonal is :meth:`variance`."""
        Xs = self._points(Xs)
        with local_x64(Xs.dtype):
            Xs_j = jnp.asarray(Xs)
            left, right = self._solved(self.cov.cross(Xs_j))
            out = np.asarray(self.cov.gram(Xs_j, Xs_j) - left.T @ right)
        out = 0.5 * (out + out.T)  # exact in theory; round-off otherwise breaks symmetry
        return out + (self.gp.value_noise * np.eye(len(Xs)) if noisy else 0.0)

    @library_numpy
    def gradient_covariance(self, Xs, *, noisy: bool = False) -> Float[Array, "ns d d"]:
        """The posterior covariance of grad f at each test point: (ns, d, d), with
        ``gradient_noise`` on each diagonal when ``noisy``.

        From the dense covariance of the observations with [f, grad f] at a chunk of test
        points (sized to keep it near 128 MB), solved as in :meth:`variance`; the prior
        block of each test point with itself comes from the joint covariance of one point.
        """
        Xs = self._points(Xs)
        hessian.check_twice_differentiable(self.cov.kernel, "gradient_covariance")
        method = _method(self.cov.kernel, True)
        ns, d = Xs.shape
        chunk = max(1, min(PREDICT_CHUNK, (1 << 24) // (self.cov.size * (d + 1))))
        out = []
        with local_x64(Xs.dtype):
            for start in range(0, ns, chunk):
                part = jnp.asarray(Xs[start : start + chunk])
                c = part.shape[0]
                left, right = self._solved(self.cov.cross_joint(part, method)[:, c:])
                explained = jnp.einsum(
                    "nca,ncb->cab", left.reshape(-1, c, d), right.reshape(-1, c, d)
                )
                prior = jax.vmap(
                    lambda x: gradient_kernel.joint_dense(
                        self.cov.kernel, x[None], x[None], method=method
                    )[1:, 1:]
                )(part)
                out.append(np.asarray(prior - explained))
        out = np.concatenate(out)
        out = 0.5 * (out + np.swapaxes(out, 1, 2))
        return out + (self.gp.gradient_noise * np.eye(d) if noisy else 0.0)


# --------------------------------------------------------------------------- fitting


class FitResult(NamedTuple):
    """The fitted GP, the negative log marginal likelihood per observation at every step,
    and (``method="iterative"``) the CG iterations of every step's solve, else None."""

    gp: GradientGP
    losses: np.ndarray
    cg_iterations: np.ndarray | None = None


def _trainable(gp: GradientGP, fixed: Sequence[str]):
    """A filter pytree: True for the positive array leaves that :func:`fit` optimises."""

    def positive(leaf):
        return eqx.is_array(leaf) and bool(np.all(np.asarray(leaf) > 0))

    spec = jax.tree.map(positive, gp)
    for name in fixed:
        if name not in ("value_noise", "gradient_noise"):
            raise ValueError(
                f"fixed takes 'value_noise' and/or 'gradient_noise'; got {name!r}. To fix a "
                "kernel hyperparameter, call fit with a kernel built without it."
            )
        spec = eqx.tree_at(lambda g, name=name: getattr(g, name), spec, False)
    return spec


@library_numpy
def _iterative_loss_and_grad(model_of, eta, X, b, obs, probes, *, rank, tol, maxiter, quadrature):
    """The negative log marginal likelihood per observation and its gradient in eta, without
    a factorisation (see :func:`fit`). ``probes`` (N + k, p): standard Rademacher draws, k
    the preconditioner's rank."""
    model = model_of(eta)
    cov = _Covariance(model.kernel, X, obs, _method(model.kernel, obs.with_derivatives))
    noise = cov.noise(model.value_noise, model.gradient_noise)
    M = cov.preconditioner(noise, "pivoted-cholesky", rank)
    Z = M.sample(probes)  # covariance M
    solved, k, _, steps, ratios = _pcg(
        cov, noise, M, jnp.concatenate([b[:, None], Z], axis=1), tol, maxiter=maxiter
    )
    alpha, U = solved[:, 0], solved[:, 1:]  # A^-1 b, A^-1 z
    W = M.solve(Z)  # M^-1 z: E[W U^T] = A^-1, as E[z z^T] = M (Hutchinson, preconditioned)
    N = b.shape[0]
    # log det A = log det M + tr log(M^-1/2 A M^-1/2). PCG from z is Lanczos on the latter
    # from u = M^-1/2 z, E[u u^T] = I, so each probe gives u^T log(...) u =
    # |u|^2 e1^T log(T) e1 with |u|^2 = z^T M^-1 z.
    quad = _lanczos_logdet(steps[:, 1:], ratios[:, 1:], k, quadrature)
    logdet = M.logdet() + jnp.mean(jnp.sum(Z * W, axis=0) * quad)
    value = 0.5 * (b @ alpha + logdet + N * jnp.log(2.0 * jnp.pi)) / N

    V = jnp.concatenate([alpha[:, None], U], axis=1)

    def surrogate(AV):
        # Its gradient is the likelihood's: 1/2 tr(A^-1 dA) - 1/2 alpha^T dA alpha, with
        # alpha, U and W held fixed.
        return 0.5 * (jnp.mean(jnp.sum(W * AV[:, 1:], axis=0)) - alpha @ AV[:, 0]) / N

    def kernel_part(eta_kernel):
        kernel = model_of(eqx.tree_at(lambda e: e.kernel, eta, eta_kernel)).kernel
        return surrogate(eqx.tree_at(lambda c: c.kernel, cov, kernel).matvec(V))

    def noise_part(eta):
        m = model_of(eta)
        return surrogate(cov.noise(m.value_noise, m.gradient_noise)[:, None] * V)

    # Forward mode through the matrix-free operator (no stored tiles), one tangent per
    # kernel hyperparameter only: the noise enters A on its diagonal, so its gradient needs
    # no product (tangents for both noises doubled the cost of an RBF's gradient).
    grads = jax.grad(noise_part)(eta)
    if jax.tree.leaves(eta.kernel):
        grads = eqx.tree_at(lambda g: g.kernel, grads, jax.jacfwd(kernel_part)(eta.kernel))
    return value, grads, k


def fit(
    gp: GradientGP,
    X,
    y,
    G=None,
    *,
    observed=None,
    directions=None,
    D=None,
    steps: int = 300,
    learning_rate: float = 0.05,
    optimizer: optax.GradientTransformation | None = None,
    fixed: Sequence[str] = (),
    method: str = "exact",
    probes: int = 16,
    tol: float = 1e-2,
    maxiter: int = CG_MAXITER,
    quadrature: int = 50,
    preconditioner_rank: int | None = None,
    seed: int = 0,
    on_step: Callable[[int, float], Any] | None = None,
) -> FitResult:
    """Maximise the log marginal likelihood over the hyperparameters, in log space.

    Every positive array leaf of ``gp`` (the kernel's hyperparameters and both noise
    variances, minus those named in ``fixed``) is written theta = exp(eta), and eta is moved
    by ``optimizer`` (default ``optax.adam(learning_rate)``) down the negative log marginal
    likelihood per observation.

    ``method="exact"`` factorises the dense covariance at every step, O((n (d + 1))^3), with
    gradients from ``jax.grad`` through the kernel pytree. ``method="iterative"`` never
    factorises: one preconditioned CG solve per step with ``probes`` + 1 right-hand sides,
    [y, z_1, ...] for probes z with covariance M, the preconditioner (a rank
    ``preconditioner_rank`` pivoted Cholesky plus the diagonal it leaves out, rebuilt each
    step; z from Rademacher draws made once, from ``seed``, so the objective does not move
    under the optimiser), gives alpha = A^-1 y for the data term, the log determinant as
    log det M plus stochastic Lanczos quadrature over CG's own coefficients (the first
    ``quadrature`` of them), and the gradient of the log determinant, tr(A^-1 dA/dtheta), by
    Hutchinson's estimator on the same solves. The gradient is one forward-mode pass per
    kernel hyperparameter through the matrix-free operator (the noises need none): O(n^2 d)
    memory-free work, O(n d) memory.

    Args:
        gp: the starting point.
        X, y, G, observed, directions, D: the observations, as for
            :meth:`GradientGP.condition`.
        steps: optimiser steps.
        learning_rate: for the default Adam optimiser.
        optimizer: any optax optimiser instead of Adam.
        fixed: ``"value_noise"`` and/or ``"gradient_noise"`` to keep as given.
        method: ``"exact"`` or ``"iterative"``.
        probes, tol, maxiter, quadrature, preconditioner_rank, seed: the iterative
            method's probe count, CG tolerance and cap, Lanczos quadrature length,
            preconditioner rank (default the policy's; 0: Jacobi) and probe seed. The
            default tol, 1e-2, is loose on purpose: the gradient is a stochastic estimate
            whose probe noise dwarfs a 1e-2 solve's error. On benchmarks/iterative_fit.py
            at n = 500 and 2000 (d = 20) it gave the same hyperparameters and losses as
            1e-5, to 3 digits, in 40-45% of the CG iterations.
        on_step: called as ``on_step(step, loss)`` after every step: for a progress bar
            or a log on a long fit (an iterative step at 10^5 observations takes minutes).

    Returns:
        A :class:`FitResult` with the fitted GP (hyperparameters as NumPy float64 leaves)
        and the loss at every step (an estimate for the iterative method).
    """
    if method not in ("exact", "iterative"):
        raise ValueError(f"method must be 'exact' or 'iterative'; got {method!r}.")
    X, b, obs, dtype = _data(X, y, G, observed, directions, D)
    spec = _trainable(gp, fixed)
    params, static = eqx.partition(gp, spec)
    optimizer = optimizer or optax.adam(learning_rate)
    with local_x64(dtype):
        eta = jax.tree.map(lambda a: jnp.log(jnp.asarray(a, dtype)), params)
        X_j, b_j = jnp.asarray(X), jnp.asarray(b)

        def model_of(eta):
            return eqx.combine(jax.tree.map(jnp.exp, eta), static)

        def loss(eta):
            return -_log_marginal_likelihood(model_of(eta), X_j, b_j, obs) / b_j.shape[0]

        rank = min(_rank(preconditioner_rank), b.shape[0])
        rows = preconditioner.factor_rank(rank)
        signs = np.random.default_rng(seed).integers(0, 2, size=(b.shape[0] + rows, probes))
        probes_j = jnp.asarray(2.0 * signs - 1.0, dtype)

        @compile_cache.jit
        def step(eta, state):
            if method == "exact":
                (value, grads), iterations = jax.value_and_grad(loss)(eta), 0
            else:
                value, grads, iterations = _iterative_loss_and_grad(
                    model_of, eta, X_j, b_j, obs, probes_j,
                    rank=rank, tol=tol, maxiter=maxiter, quadrature=quadrature,
                )  # fmt: skip
            updates, state = optimizer.update(grads, state, eta)
            return optax.apply_updates(eta, updates), state, value, iterations

        state = optimizer.init(eta)
        losses, iterations = [], []
        for i in range(steps):
            eta, state, value, k = step(eta, state)
            losses.append(float(value))
            iterations.append(int(k))
            if on_step is not None:
                on_step(i, losses[-1])
        theta = jax.tree.map(lambda e: np.asarray(jnp.exp(e), dtype=np.float64), eta)
    cg = np.asarray(iterations) if method == "iterative" else None
    return FitResult(eqx.combine(theta, static), np.asarray(losses), cg)


__all__ = ["CGInfo", "CG_MAXITER", "FitResult", "GradientGP", "Posterior", "fit"]
