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
import jax
import jax.numpy as jnp
import numpy as np

from ..execution.inputs import local_x64
from . import gradient_kernel


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
            spread = self.directions.astype(w.dtype)[:, :, None] * w[s:, None, :]  # (k, d, p)
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
        directions = self.directions.astype(u.dtype)
        return jnp.concatenate([picked, jnp.einsum("kd,kdp->kp", directions, grads)])

    def functional(self, j):
        """Observation j (traceable) as (its point i, w (d + 1,)): it is w . [f(x_i),
        grad f(x_i)]. For P A P^T one observation at a time: its columns (one point on
        the right of the joint product) and its dense form."""
        d = self.d

        def from_index(index):  # a block-major index: a value or a partial
            partial = index >= self.n
            point = jnp.where(partial, (index - self.n) // d, index)
            slot = jnp.where(partial, 1 + (index - self.n) % d, 0)
            return point, jax.nn.one_hot(slot, d + 1, dtype=self.directions.dtype)

        if self.kind != "general":
            return from_index(j)
        selected, points = jnp.asarray(self.selected), jnp.asarray(self.direction_points)
        directions = jnp.asarray(self.directions)
        s, k = selected.shape[0], points.shape[0]
        if k == 0:
            return from_index(selected[j])
        t = jnp.clip(j - s, 0, k - 1)
        direction = jnp.concatenate([jnp.zeros(1, directions.dtype), directions[t]])
        if s == 0:
            return points[t], direction
        point, w = from_index(selected[jnp.clip(j, 0, s - 1)])
        return jnp.where(j < s, point, points[t]), jnp.where(j < s, w, direction)

    def noise(self, value_noise, gradient_noise, dtype):
        """The (size,) noise variances: value_noise on values, gradient_noise on every
        derivative observation (partial or directional)."""
        values = jnp.full((self.value_count,), value_noise, dtype)
        derivatives = jnp.full((self.size - self.value_count,), gradient_noise, dtype)
        return jnp.concatenate([values, derivatives])


def observations(n: int, d: int, *, values=True, observed=None, directions=None) -> Observations:
    """P for the values (all of them, or none), the partials where the boolean ``observed``
    (n, d) is True (None: none) and the directional derivatives along ``directions``
    (n, r, d) (None: none).

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> mask = np.array([[True, False], [False, True], [True, True]])
        >>> kg.observations(3, 2, observed=mask, directions=np.ones((3, 1, 2))).size
        10
    """
    if observed is not None:
        observed = np.asarray(observed)
        if observed.shape != (n, d) or observed.dtype != bool:
            raise ValueError(
                f"observed must be a boolean array of shape ({n}, {d}); got {observed.dtype} "
                f"of shape {observed.shape}."
            )
    if directions is not None:
        directions = np.asarray(directions)
        if directions.ndim != 3 or directions.shape[::2] != (n, d):
            raise ValueError(f"directions must have shape ({n}, r, {d}); got {directions.shape}.")
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


def observed_diagonal(kernel, X, obs: Observations, method: str, full):
    """The diagonal of P A P^T from A's diagonal ``full`` (block-major, (n (d + 1),)).

    A directional observation's entry is Var[v^T grad f(x)] = v^T H v, H the d x d block of
    its point with itself, by one product each (never the block)."""
    if obs.kind != "general":
        return full
    parts = [full[obs.selected]]
    if obs.direction_points.shape[0]:

        def one(x, v):
            w = jnp.concatenate([jnp.zeros(1, v.dtype), v])
            Hv = gradient_kernel.joint_matvec(kernel, x[None], x[None], w, method=method)
            return Hv[1:] @ v

        parts.append(jax.vmap(one)(X[obs.direction_points], obs.directions.astype(X.dtype)))
    return jnp.concatenate(parts)


class ObservedGram(eqx.Module):
    """P_rows A P_cols^T for the joint covariance A of a :class:`GradientGram` and the
    observations of its two sides: the covariance of those observations, lazy. Build it with
    :func:`observe`."""

    op: gradient_kernel.GradientGram
    rows: Observations
    cols: Observations

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size

    def _run(self, fn):
        if self.op.is_jax:
            return fn()
        with local_x64(self.op.dtype):
            return np.asarray(fn())

    def matvec(self, v):
        """The product with v of shape (cols,) or (cols, p): O(n m d), through P^T, the
        joint operator's matrix-free product and P."""
        v = np.asarray(v) if not self.op.is_jax else v
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[1]:
            raise ValueError(
                f"matvec needs v of shape ({self.shape[1]},) or ({self.shape[1]}, p); got "
                f"{tuple(v.shape)}."
            )
        vector = v.ndim == 1

        def run():
            V = jnp.asarray(v, self.op.dtype)
            V = V[:, None] if vector else V
            out = self.rows.gather(jnp.asarray(self.op.matvec(self.cols.scatter(V))))
            return out[:, 0] if vector else out

        return self._run(run)

    def __matmul__(self, v):
        return self.matvec(v)

    def to_dense(self):
        """The (rows, cols) matrix, from the joint operator's dense form (small problems)."""
        return self._run(
            lambda: self.rows.gather(self.cols.gather(jnp.asarray(self.op.to_dense()).T).T)
        )

    def diagonal(self):
        """The diagonal, for the same observations of the same points on both sides."""
        if self.rows is not self.cols or self.op.X is not self.op.Y:
            raise ValueError("diagonal() needs the same points and observations on both sides.")

        def run():
            full = jnp.asarray(self.op.diagonal())
            X = jnp.asarray(self.op.X)
            return observed_diagonal(self.op.kernel, X, self.rows, self.op.method, full)

        return self._run(run)


def observe(op: gradient_kernel.GradientGram, rows: Observations, cols=None) -> ObservedGram:
    """The covariance of the observations ``rows`` at op's X with ``cols`` at its Y (default:
    ``rows``, for Y = X): a lazy :class:`ObservedGram`.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> X = np.random.default_rng(0).normal(size=(5, 3))
        >>> obs = kg.observations(5, 3, observed=np.eye(5, 3) > 0)
        >>> cov = kg.observe(kg.gradient_gram(kg.RBF(), X), obs)
        >>> cov.shape, cov.matvec(np.ones(cov.shape[1])).shape
        ((8, 8), (8,))
    """
    cols = rows if cols is None else cols
    n, m, d = op.X.shape[0], op.Y.shape[0], op.X.shape[1]
    for name, obs, points in (("rows", rows, n), ("cols", cols, m)):
        if not isinstance(obs, Observations) or (obs.n, obs.d) != (points, d):
            raise ValueError(
                f"{name} must be kg.observations({points}, {d}, ...) for this operator; got "
                f"{obs!r:.80}."
            )
        if obs.kind == "values":
            raise ValueError(f"{name} observes values only: use kg.gram for their covariance.")
    return ObservedGram(op, rows, cols)
