"""The RBF computations written out by hand, as a careful user would: NumPy and jitted XLA.

These are the strongest simple peers: no AD, no library, just the closed form
exp(-0.5 |x - y|^2) and its derivative -(x - y) k. Each comes in the two forms a competent
user picks between:

* **difference form**: the squared distance from per-dimension differences, and the grad map
  as sum_j k_ij (x_j - x_i), one 2-D expression per dimension (no (n, n, d) temporary);
* **matmul form**: the squared distance by the expansion |x|^2 + |y|^2 - 2 x.y (one matrix
  product) and the grad map as K x - x rowsum(K) (another).

Shapes follow the forum: points (n,) for d = 1, else (n, d); the kernel is (n, n), grad and
grad map are shaped like the points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def numpy_closed_form(op: str, X: np.ndarray) -> np.ndarray:
    """The computation ``op`` in NumPy, difference form for K, matmul form for the sum."""
    X2 = X.reshape(X.shape[0], -1)
    if op == "grad":
        diff = X2[0] - X2
        return (-np.exp(-0.5 * np.sum(diff * diff, axis=1))[:, None] * diff).reshape(X.shape)
    # One (n, n) difference per dimension: no (n, n, d) temporary.
    sq = np.zeros((X2.shape[0], X2.shape[0]), X.dtype)
    for a in range(X2.shape[1]):
        diff = X2[:, a, None] - X2[None, :, a]
        sq += diff * diff
    K = np.exp(-0.5 * sq)
    if op == "kernel":
        return K
    # sum_j -K_ij (x_i - x_j) = K x - x rowsum(K): one matrix product.
    return (K @ X2 - X2 * K.sum(axis=1)[:, None]).reshape(X.shape)


def _squared_distance(X2, form: str):
    if form == "diff":
        return sum((X2[:, a, None] - X2[None, :, a]) ** 2 for a in range(X2.shape[1]))
    norms = jnp.sum(X2 * X2, axis=1)
    return jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * X2 @ X2.T, 0.0)


def _xla(op: str, form: str, X):
    X2 = X.reshape(X.shape[0], -1)
    if op == "grad":
        if form == "diff":
            diff = X2[0] - X2
            s = jnp.sum(diff * diff, axis=1)
        else:
            s = jnp.maximum(X2[0] @ X2[0] + jnp.sum(X2 * X2, axis=1) - 2.0 * X2 @ X2[0], 0.0)
            diff = X2[0] - X2
        return (-jnp.exp(-0.5 * s)[:, None] * diff).reshape(X.shape)
    K = jnp.exp(-0.5 * _squared_distance(X2, form))
    if op == "kernel":
        return K
    if form == "diff":
        # sum_j K_ij (x_ja - x_ia) per dimension: XLA fuses each into one loop, no n x n buffer.
        G = jnp.stack(
            [jnp.sum(K * (X2[None, :, a] - X2[:, a, None]), axis=1) for a in range(X2.shape[1])],
            axis=1,
        )
    else:
        G = K @ X2 - X2 * jnp.sum(K, axis=1)[:, None]
    return G.reshape(X.shape)


_JITTED = {
    (op, form): jax.jit(lambda X, op=op, form=form: _xla(op, form, X))
    for op in ("kernel", "grad", "grad_map")
    for form in ("diff", "matmul")
}


def xla_closed_form(op: str, form: str):
    """The jitted jax.numpy closed form of ``op`` in ``form`` (``"diff"`` or ``"matmul"``)."""
    return _JITTED[op, form]
