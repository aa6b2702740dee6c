"""The forum's JAX code as posted, and the same approach with the kernel corrected.

The replica (``grad_kernel``, ``grad_kernel_map``, ``rbf_kernel`` and their ``jacrev`` twins)
is the posted code. Two mechanical changes only: ``partial`` comes from :mod:`functools`
(``jax.partial`` was removed from JAX), and the ``jacrev`` twins are the posted functions
with ``jacfwd`` replaced by ``jacrev``, which is how the forum made its second table.

**The posted kernel has a bug, kept on purpose here**: ``X + X2.T`` where the squares
``X**2 + X2.T**2`` are meant, so it is not the RBF kernel. The sweep uses
:func:`rbf_kernel_fixed`, the posted code with the squares restored and generalised to
points in d dimensions; the approach (``vmap`` of ``jacfwd`` over the points) is unchanged.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as np  # the forum imports jax.numpy as np; kept so the code reads as posted
import numpy
from jax import jacfwd, jacrev, jit, vmap

# ---- as posted ---------------------------------------------------------------------------


@partial(jit, static_argnums=1)
def grad_kernel(x, kernel):
    J = jacfwd(kernel)(x[:1], x)
    return J


@partial(jit, static_argnums=1)
def grad_kernel_map(x, kernel):
    J = vmap(
        jacfwd(kernel),  # jacfwd computes the Jacobian of k(x_j, x) w.r.t. x_j
        in_axes=(0, None),  # use vmap's in_axes to specify vectorisation across the first input
    )(x, x)
    return np.sum(J, axis=1)


@jit
def rbf_kernel(X, X2):
    X = X.reshape(-1, 1)
    X2 = X2.reshape(-1, 1)
    r2 = (-2 * X @ X2.T) + (X + X2.T)  # BUG as posted: X + X2.T should be X**2 + X2.T**2
    return np.exp(-0.5 * np.squeeze(r2))


# ---- the forum's jacrev variant: jacfwd replaced by jacrev --------------------------------


@partial(jit, static_argnums=1)
def grad_kernel_rev(x, kernel):
    J = jacrev(kernel)(x[:1], x)
    return J


@partial(jit, static_argnums=1)
def grad_kernel_map_rev(x, kernel):
    J = vmap(jacrev(kernel), in_axes=(0, None))(x, x)
    return np.sum(J, axis=1)


# ---- the corrected kernel, for the sweep --------------------------------------------------


@jit
def rbf_kernel_fixed(X, X2):
    """exp(-0.5 |x - y|^2) in the forum's style; points are (n,) for d = 1, else (n, d)."""
    d = 1 if X2.ndim == 1 else X2.shape[-1]
    X = X.reshape(-1, d)
    X2 = X2.reshape(-1, d)
    r2 = (-2 * X @ X2.T) + (np.sum(X**2, axis=1)[:, None] + np.sum(X2**2, axis=1)[None, :])
    return np.exp(-0.5 * np.squeeze(r2))


# ---- the forum's Julia broadcast, in JAX: one derivative call per point ------------------
# ``ForwardDiff.derivative.(x_ -> kernel([x_], x), x)`` calls the derivative once per point and
# ``vcat``s the rows. This is the same with the corrected kernel and the forum's own jacfwd:
# n dispatched calls of O(n) work each, against grad_kernel_map's one batched program.


@partial(jit, static_argnums=2)
def grad_kernel_point(x_i, x, kernel):
    return jacfwd(kernel)(x_i, x)  # d/dx_i k(x_i, x_j) for every j: one broadcast element


def grad_kernel_map_broadcast(points, x, kernel):
    """``points`` are the rows of x as host scalars or vectors, as Julia iterates over x.

    The rows are stacked and summed in NumPy, as Julia's ``vcat`` and ``sum`` run: stacking
    n arrays with jax.numpy would compile an n-operand concatenation for every n.
    """
    j = [grad_kernel_point(x_i, x, kernel) for x_i in points]
    J = numpy.stack(j)  # vcat(j...)
    return numpy.sum(J, axis=1)
