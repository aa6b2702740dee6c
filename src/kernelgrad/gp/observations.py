"""Which linear functionals of [f, grad f] a GP observes: the observation operator P.

Every observation is a linear functional of the values and gradients at the points X:

* a value f(x_i);
* a partial derivative df/dx_a(x_i), for any subset of dimensions per point;
* a directional derivative v^T grad f(x_i), for any directions per point.

Stacked, they are ``P [f(X), grad f(X)]`` for a sparse P with at most d nonzeros a row,
against the block-major vector of :mod:`kernelgrad.gp.gradient_kernel` (the n values, then
point i's gradient at n + i d). **The observation vector's layout**: the observed values in
point order, then the observed partials in row-major (point, dimension) order, then the
directional derivatives in row-major (point, direction) order.

The covariance of the observations is P A P^T for the joint covariance A. Its products
never form P A P^T or A's d x d blocks: ``P^T w`` scatters w into a block-major vector
(O(n d)), A multiplies it matrix-free (O(n m d)), and P gathers the result back. With every
value and every partial observed P is the identity and nothing is scattered at all.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np


class Observations(eqx.Module):
    """P for n points in d dimensions (see the module). Build it with :func:`observations`.

    Attributes:
        selected: block-major indices of the observed values and partials, in layout order.
        direction_points: the point of each directional derivative, (k,).
        directions: their direction vectors, (k, d).
        value_count: how many observations are values (they come first).
        kind: ``"values"`` (values only: P is the identity on the n values), ``"full"``
            (every value and partial: the identity on the joint vector) or ``"general"``.
    """

    n: int = eqx.field(static=True)
    d: int = eqx.field(static=True)
    selected: Any
    direction_points: Any
    directions: Any
    value_count: int = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    @property
    def size(self) -> int:
        """The number of observations."""
        return self.selected.shape[0] + self.direction_points.shape[0]

    @property
    def with_derivatives(self) -> bool:
        return self.kind != "values"

    def scatter(self, w):
        """P^T w: (n (d + 1), p) from w (size, p)."""
        if self.kind != "general":
            return w
        s, p = self.selected.shape[0], w.shape[1]
        out = jnp.zeros((self.n * (self.d + 1), p), w.dtype).at[self.selected].add(w[:s])
        if self.direction_points.shape[0]:
            rows = self.n + self.direction_points[:, None] * self.d + jnp.arange(self.d)[None, :]
            spread = self.directions[:, :, None] * w[s:, None, :]  # (k, d, p)
            out = out.at[rows.reshape(-1)].add(spread.reshape(-1, p))
        return out

    def gather(self, u):
        """P u: (size, p) from u (n (d + 1), p) (or (n, p) for values only)."""
        if self.kind != "general":
            return u
        picked = u[self.selected]
        if not self.direction_points.shape[0]:
            return picked
        grads = u[self.n :].reshape(self.n, self.d, u.shape[1])[self.direction_points]
        return jnp.concatenate([picked, jnp.einsum("kd,kdp->kp", self.directions, grads)])

    def noise(self, value_noise, gradient_noise, dtype):
        """The (size,) noise variances: value_noise on values, gradient_noise on every
        derivative observation (partial or directional)."""
        values = jnp.full((self.value_count,), value_noise, dtype)
        derivatives = jnp.full((self.size - self.value_count,), gradient_noise, dtype)
        return jnp.concatenate([values, derivatives])


def observations(n: int, d: int, *, values: bool, observed=None, directions=None) -> Observations:
    """P for the values (all of them, or none), the partials where the boolean ``observed``
    (n, d) is True (None: none) and the directional derivatives along ``directions``
    (n, r, d) (None: none)."""
    none = np.zeros(0, np.int32)
    if directions is None and observed is not None and values and observed.all():
        return Observations(n, d, np.arange(n * (d + 1)), none, np.zeros((0, d)), n, "full")
    if directions is None and observed is None and values:
        return Observations(n, d, np.arange(n), none, np.zeros((0, d)), n, "values")
    selected = [np.arange(n)] if values else []
    if observed is not None:
        i, a = np.nonzero(observed)  # row-major
        selected.append(n + i * d + a)
    selected = np.concatenate(selected).astype(np.int32) if selected else none
    if directions is None:
        points, vectors = none, np.zeros((0, d))
    else:
        r = directions.shape[1]
        points, vectors = np.repeat(np.arange(n, dtype=np.int32), r), directions.reshape(n * r, d)
    return Observations(n, d, selected, points, vectors, n if values else 0, "general")
