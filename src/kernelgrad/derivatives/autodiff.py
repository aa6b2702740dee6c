"""Forward- and reverse-mode derivatives of any kernel's pair function, in JAX.

None of these builds an (n, m, n) or larger intermediate. Two facts make that possible:

* Row i of the Gram matrix depends only on x_i. So one tangent per input dimension, shared by
  all points, gives a whole column of derivatives per JVP: ``d`` forward passes in all.
* The weighted sum ``G = d/dX sum_i (K(X, Y) w)_i`` is the gradient of a scalar, so it takes
  one reverse pass, whatever n is.

The reverse-mode Jacobian is per-pair gradients batched by ``vmap``: ``n m`` scalar reverse
passes fused into one program, never the reverse Jacobian of a tall output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gram(kernel, X, Y):
    """K[i, j] = k(x_i, y_j) by batching the pair function: (n, m)."""
    return jax.vmap(lambda x: jax.vmap(lambda y: kernel(x, y))(Y))(X)


def _per_dimension_jvps(fn, X):
    """Stack of JVPs of ``fn`` at X along each unit direction, shared by every row: (d, ...)."""

    def along(e):
        return jax.jvp(fn, (X,), (jnp.broadcast_to(e, X.shape),))[1]

    if X.shape[1] == 1:
        # One direction: no vmap, whose unit leading axis XLA:CPU's YNNPACK fusion runs
        # about 7x slower (a 100 x 100 grad map: 319 against 44 us).
        return along(jnp.ones(1, X.dtype))[None]
    return jax.vmap(along)(jnp.eye(X.shape[1], dtype=X.dtype))


def jacobian_forward(kernel, X, Y):
    """J[i, j, a] = dk(x_i, y_j)/dx_ia from d JVPs of the Gram matrix: (n, m, d)."""
    return jnp.moveaxis(_per_dimension_jvps(lambda X_: gram(kernel, X_, Y), X), 0, -1)


def jacobian_reverse(kernel, X, Y):
    """J[i, j, a] from one batched scalar reverse pass per pair: (n, m, d)."""
    pair_grad = jax.grad(kernel, argnums=0)
    return jax.vmap(lambda x: jax.vmap(lambda y: pair_grad(x, y))(Y))(X)


def _weighted_rows(K, w):
    """K w, the row sums of K for ``w=None`` (unit weights)."""
    return jnp.sum(K, axis=1) if w is None else K @ w


def grad_sum_forward(kernel, X, Y, w):
    """G[i, a] = sum_j w_j dk(x_i, y_j)/dx_ia from d JVPs of K w: (n, d)."""
    return _per_dimension_jvps(lambda X_: _weighted_rows(gram(kernel, X_, Y), w), X).T


def grad_sum_reverse(kernel, X, Y, w):
    """G from a single reverse pass of sum(K w); Y is held fixed even when it equals X."""
    return jax.grad(lambda X_: jnp.sum(_weighted_rows(gram(kernel, X_, Y), w)))(X)
