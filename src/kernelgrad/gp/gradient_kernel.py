"""The gradient-kernel operator: the joint covariance of a GP's values and gradients.

For a GP f with covariance k, ``gradient_gram(k, X, Y)`` is the covariance of
``[f(X), grad f(X)]`` with ``[f(Y), grad f(Y)]``, an (n (d + 1), m (d + 1)) matrix, as a lazy
operator. Its **layout is block-major**: the first n rows are the values f(x_i); row
``n + i d + a`` is the derivative d f / dx_ia (columns likewise with m and y_j)::

    [ K           dK/dY  ]      K[i, j]             = k(x_i, y_j)             (n, m)
    [ dK/dX       d2K    ]      dK/dY[i, (j, b)]    = d k / dy_jb             (n, m d)
                                dK/dX[(i, a), j]    = d k / dx_ia             (n d, m)
                                d2K[(i, a), (j, b)] = d2 k / dx_ia dy_jb      (n d, m d)

So a vector in this space is ``concatenate([values (n,), gradients (n, d).ravel()])``.

**Matrix-vector products** never build the n m d^2 entries. For stationary kernels each
d x d block is a scaled identity plus a rank-one term (:mod:`kernelgrad.derivatives.hessian`), and
every product collapses to a few (n, m) x (m, d) matmuls: O(n m d) time. They run through
:func:`kernelgrad.execution.reductions.tiled_row_reduce`, one (row block, column block) tile at a
time, so memory is O((n + m) d + rows x cols). The same holds for dot-product kernels and for sums,
products and scalings of any of these.

Kernels without closed-form rules (pair functions) use AD per tile: ``"reverse"`` (the
default for them) pushes V through one JVP in y and pulls the gradient rows back with one
VJP in x, O(n m) pair evaluations times a constant, storing O(rows x cols x d) per tile;
``"forward"`` replaces the VJP by d JVPs in x, d times the work with no stored tape.

**Devices.** With several local devices the rows of X are split over them (``shard_map`` on
:func:`kernelgrad.execution.sharding.row_mesh`); Y and v are replicated, and since row i of the
product depends on x_i alone, no device waits on another.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from ..derivatives import autodiff, hessian, terms
from ..derivatives.terms import Field
from ..execution import compile_cache, memory, padding, policy, sharding
from ..execution.inputs import local_x64, prepare, resolve_method
from ..execution.reductions import tiled_row_reduce
from ..kernels import AbstractKernel

# --------------------------------------------------------------------------- tile functions


def _factors(f: Field, X, Xc, Y, Yc):
    """(R, (sign, Z)) with f_ija = s_a (R_ia + sign Z_ja): R is None for "y", Z for "x".

    Every product of a field with weights splits along these two parts, the rows' and the
    columns', each a matmul or a sum over d."""
    return {"x": X, "diff": Xc}.get(f.kind), {"y": (1.0, Y), "diff": (-1.0, Yc)}.get(f.kind)


def _scale(term, d: int):
    """A field's or a diagonal term's per-dimension scale as a (1, d) row."""
    return jnp.broadcast_to(term.scale, (d,))[None, :]


def _project(f: Field, X, Y, Xc, Yc, V1):
    """P[i, j] = sum_b f_ijb V1_jb: (rows, cols), or (1, cols) for a field of y alone."""
    Vs = V1 * _scale(f, X.shape[1])
    R, Z = _factors(f, X, Xc, Y, Yc)
    out = 0.0 if R is None else terms.matmul(jnp, R, Vs.T)
    return out if Z is None else out + Z[0] * jnp.sum(Z[1] * Vs, axis=1)[None, :]


def _contract(f: Field, A, X, Y, Xc, Yc):
    """R[i, a] = sum_j A_ij f_ija: (rows, d)."""
    R, Z = _factors(f, X, Xc, Y, Yc)
    out = 0.0 if R is None else R * jnp.sum(A, axis=1)[:, None]
    out = out if Z is None else out + Z[0] * terms.matmul(jnp, A, Z[1])
    return _scale(f, X.shape[1]) * out


def _project_rows(f: Field, X, Y, Xc, Yc, U):
    """P[i, j] = sum_a f_ija U_ia: (rows, cols), or (rows, 1) for a field of x alone."""
    Us = U * _scale(f, X.shape[1])
    R, Z = _factors(f, X, Xc, Y, Yc)
    out = 0.0 if R is None else jnp.sum(R * Us, axis=1)[:, None]
    return out if Z is None else out + Z[0] * terms.matmul(jnp, Us, Z[1].T)


@compile_cache.jit
def functional_dense(kernel, X, a, U, Y, b, V):
    """cov(a_i f(x_i) + U_i . grad f(x_i), b_j f(y_j) + V_j . grad f(y_j)): (n, m), dense,
    from the closed-form tile in O(n m d) matmuls, never a d x d block. Traceable.

    One row per observation: a value (a = 1, U = 0), a partial (a = 0, U a unit vector) or
    a directional derivative (a = 0, U its direction), so this is P A P^T for any
    observations, where assembling A first would cost n m d^2.
    """
    Xc, Yc = terms.centre(jnp, X, Y)
    t = kernel.tile(jnp, X, Y, Xc, Yc, order=2)
    out = a[:, None] * b[None, :] * t.value
    for vec in t.dx:  # d k / dx along U, against the columns' values
        out = out + b[None, :] * vec.coef * _project_rows(vec.field, X, Y, Xc, Yc, U)
    for vec in t.dy:
        out = out + a[:, None] * vec.coef * _project(vec.field, X, Y, Xc, Yc, V)
    for o in t.outer:  # U^T (coef u v^T) V
        out = out + o.coef * _project_rows(o.u, X, Y, Xc, Yc, U) * _project(o.v, X, Y, Xc, Yc, V)
    for g in t.diagonal:
        out = out + g.coef * terms.matmul(jnp, U * _scale(g, X.shape[1]), V.T)
    return out


def closed_tile(kernel: AbstractKernel):
    """``tile_fn((X, Xc), (Y, Yc), (v0, V1)) -> (rows, 1 + d)``, the closed-form matvec.

    Column 0 is the value block of the product, columns 1.. the gradient block. Every term
    is a matmul with the (rows, cols) coefficient matrices of ``kernel.tile(..., order=2)``.
    """

    def tile_fn(rows, cols, weights):
        (X, Xc), (Y, Yc) = rows, cols
        return closed_product(kernel.tile(jnp, X, Y, Xc, Yc, order=2), rows, cols, weights)

    return tile_fn


def closed_product(t, rows, cols, weights):
    """:func:`closed_tile`'s product from the tile ``t`` of these rows and columns."""
    v0, V1 = weights
    from_gradients, gradient_rows = split_product(t, rows, cols, V1)
    out0 = terms.matmul(jnp, t.value, v0[:, None]) + from_gradients[:, None]
    return jnp.concatenate([out0, gradient_rows(v0)], axis=1)


def split_product(t, rows, cols, V1):
    """The product with [v0, V1] in two steps, for a v0 that may depend on the first:
    (C^T V1, v0 -> C v0 + G V1), the value rows' part from the gradient weights V1 (cols,
    d), (rows,), and a function giving the gradient rows (rows, d), with C the gradients'
    rows against the values and G the gradient block of the tile ``t``."""
    (X, Xc), (Y, Yc) = rows, cols
    # A field shared by several terms (a stationary kernel's x - y) is projected once and
    # its contractions are summed into one matmul: three n m d matmuls for an RBF.
    projected = {}
    weight_of = {}

    def project(f):
        if id(f) not in projected:
            projected[id(f)] = _project(f, X, Y, Xc, Yc, V1)
        return projected[id(f)]

    def add_weight(weights, f, A):
        prev = weights.get(id(f), (f, 0.0))[1]
        weights[id(f)] = (f, prev + A)

    from_gradients = jnp.zeros(X.shape[0], X.dtype)
    for vec in t.dy:
        from_gradients = from_gradients + jnp.sum(vec.coef * project(vec.field), axis=1)
    for o in t.outer:
        add_weight(weight_of, o.u, o.coef * project(o.v))
    from_diagonal = [_scale(g, X.shape[1]) * terms.matmul(jnp, g.coef, V1) for g in t.diagonal]

    def gradient_rows(v0):
        weights = dict(weight_of)
        for vec in t.dx:
            add_weight(weights, vec.field, vec.coef * v0[None, :])
        out1 = jnp.zeros_like(X)
        for f, A in weights.values():
            out1 = out1 + _contract(f, A, X, Y, Xc, Yc)
        return sum(from_diagonal, out1)

    return from_gradients, gradient_rows


def _joined(out):
    """Rows ``[value part, gradient part]`` (n, 1 + d) as the block-major vector (n (d + 1),)."""
    return jnp.concatenate([out[:, 0], out[:, 1:].reshape(-1)])


def coefficient_arrays(t) -> int:
    """How many distinct (rows, cols) coefficient arrays the tile ``t`` holds."""
    coefs = [t.value] + [term.coef for part in t[1:] for term in part]
    return len({id(c) for c in coefs if c is not None})


class CachedTile:
    """The closed-form tile of all of X against all of Y, worked out once, and the products
    a solver asks of it again and again, one vector at a time: the joint product, and the
    same split in two steps (:meth:`split`). Traceable: under a trace the tile is computed
    where this is built (before a loop)."""

    def __init__(self, kernel: AbstractKernel, X, Y):
        self.X, self.Y = X, Y
        self.Xc, self.Yc = terms.centre(jnp, X, Y)
        self.tile = kernel.tile(jnp, X, Y, self.Xc, self.Yc, order=2)

    def product(self, v):
        """The joint product for v (m (d + 1),): (n (d + 1),)."""
        m, d = self.Y.shape
        geometry = (self.X, self.Xc), (self.Y, self.Yc)
        return _joined(closed_product(self.tile, *geometry, (v[:m], v[m:].reshape(m, d))))

    @property
    def values(self):
        """The kernel's values, (n, m)."""
        return self.tile.value

    def gradients_from_values(self, v0):
        """C v0, the gradient rows of the product with [v0, 0], for v0 (m,): (n, d), one
        contraction (the dx terms), where a split of zero gradient weights would pay for
        three and, on XLA:CPU 0.10.2 with its YNNPACK fusions, gave NaN (its zeros folded
        into the fused kernels; ``tests/gp/test_gradient_gram.py`` checks this one)."""
        X, Y, Xc, Yc = self.X, self.Y, self.Xc, self.Yc
        out = jnp.zeros_like(X)
        for vec in self.tile.dx:
            out = out + _contract(vec.field, vec.coef * v0[None, :], X, Y, Xc, Yc)
        return out

    def split(self, V1):
        """:func:`split_product` on this tile: (C^T V1, v0 -> C v0 + G V1) for V1 (m, d)."""
        return split_product(self.tile, (self.X, self.Xc), (self.Y, self.Yc), V1)


def cached_tile_bytes(kernel: AbstractKernel, X, Y) -> int:
    """The bytes a :class:`CachedTile` of X against Y would hold, found from a trace of its
    tile alone (no arithmetic)."""
    counted = []

    def tile_value(X, Y):
        cached = CachedTile(kernel, X, Y)
        counted.append(coefficient_arrays(cached.tile))
        return cached.values

    with jax.numpy_rank_promotion("allow"):
        jax.eval_shape(tile_value, X, Y)
    return X.shape[0] * Y.shape[0] * X.dtype.itemsize * counted[0]


def cached_tile(kernel: AbstractKernel, X, Y, max_bytes: int) -> CachedTile | None:
    """A :class:`CachedTile`, or None where its coefficient arrays would take more than
    ``max_bytes``; a declined tile is dead code under a trace."""
    n, m = X.shape[0], Y.shape[0]
    if n * m * X.dtype.itemsize > max_bytes:
        return None  # not even one array fits: decline before any work (called eagerly too)
    cached = CachedTile(kernel, X, Y)
    if n * m * X.dtype.itemsize * coefficient_arrays(cached.tile) > max_bytes:
        return None
    return cached


class _Products:
    """coef @ W for every (coef, W) asked, one matmul per coefficient array: a tile's
    (rows, cols) coefficients are read once however many weight matrices meet them."""

    def __init__(self):
        self._asked: dict = {}  # id(coef) -> (coef, {id(W): W})
        self._done: dict = {}

    def ask(self, coef, W):
        """A handle for coef @ W, (rows, *W.shape[1:]); read it with [] after :meth:`run`."""
        self._asked.setdefault(id(coef), (coef, {}))[1].setdefault(id(W), W)
        return id(coef), id(W)

    def run(self):
        for key, (coef, Ws) in self._asked.items():
            flat = [W.reshape(W.shape[0], -1) for W in Ws.values()]
            out = terms.matmul(jnp, coef, jnp.concatenate(flat, axis=1))
            parts = jnp.split(out, np.cumsum([w.shape[1] for w in flat])[:-1], axis=1)
            for (wid, W), part in zip(Ws.items(), parts, strict=True):
                self._done[key, wid] = part.reshape(part.shape[0], *W.shape[1:])

    def __getitem__(self, handle):
        return self._done[handle]


class _Weight:
    """A sum over terms sharing one coefficient array: coef_ij times (w_jc, a column
    weight, plus sum over separable parts of R_i . (s V1_jc))."""

    def __init__(self, coef):
        self.coef, self.w, self.separable = coef, None, []

    def add(self, w, separable):
        if w is not None:
            self.w = w if self.w is None else self.w + w
        if separable is not None:
            self.separable.append(separable)


def shared_tile(kernel: AbstractKernel):
    """``tile_fn((X, Xc), (Y, Yc), (v0, V1)) -> (rows, (1 + d) p)``: the closed-form product
    with p vectors at once, v0 (cols, p) their values and V1 (cols, d, p) their gradients,
    for tiles whose terms share their coefficient arrays (an RBF's: see :func:`_shared`).

    Row i is ``[value part (p), gradient part (d, p)]``, flattened. The terms of
    ``kernel.tile(..., order=2)`` meet the vectors through weights: a dx term through
    coef_ij v0_jc, a dy or rank-one term through coef_ij (v_ij . V1_jc), which splits into
    a column weight and R_i . (s V1_jc), R = X or X - centre. Summed over j, each is a
    matmul with the coefficients, batched per coefficient array (:class:`_Products`), but
    one: sum_j coef_ij (R_i . s V1_jc) Z_j against a field u = ... + Z_j, for which alone a
    (rows, p, cols) array is formed. Terms that share a coefficient array and a field (all
    of an RBF's) are summed before any matmul: for an RBF, one matmul of the value with
    [v, V, Z (x) v] (2 d p + p columns) and the two of the (rows, p, cols) array, where
    :func:`closed_tile` takes three matmuls and four elementwise passes over
    (rows, cols) arrays per vector.
    """

    def tile_fn(rows, cols, weights):
        (X, Xc), (Y, Yc), (v0, V1) = rows, cols, weights
        d, p = V1.shape[1], V1.shape[2]
        t = kernel.tile(jnp, X, Y, Xc, Yc, order=2)

        def scale(s):
            return jnp.broadcast_to(s, (d,))[None, :, None]

        def projected(f):
            """(column weight, separable part) of sum_b f_ijb V1_jbc."""
            R, Z = _factors(f, X, Xc, Y, Yc)
            # Sums over d of (cols or rows, d, p) arrays: elementwise, exact in any precision.
            w = None if Z is None else Z[0] * jnp.sum(Z[1][:, :, None] * scale(f.scale) * V1, 1)
            return w, None if R is None else (R, f.scale)

        values, gradients = {}, {}  # id(coef) -> _Weight; (id(coef), id(u)) -> (u, _Weight)
        values.setdefault(id(t.value), _Weight(t.value)).add(v0, None)
        for vec in t.dy:
            values.setdefault(id(vec.coef), _Weight(vec.coef)).add(*projected(vec.field))
        for vec in t.dx:
            key = id(vec.coef), id(vec.field)
            gradients.setdefault(key, (vec.field, _Weight(vec.coef)))[1].add(v0, None)
        for o in t.outer:
            key = id(o.coef), id(o.u)
            gradients.setdefault(key, (o.u, _Weight(o.coef)))[1].add(*projected(o.v))

        products = _Products()

        def total(weight):
            """A thunk for sum_j weight_ijc: (rows, p)."""
            hw = None if weight.w is None else products.ask(weight.coef, weight.w)
            hv = products.ask(weight.coef, V1) if weight.separable else None

            def read():
                out = 0.0 if hw is None else products[hw]
                for R, s in weight.separable:
                    out = out + jnp.sum(R[:, :, None] * scale(s) * products[hv], axis=1)
                return out

            return read

        def moment(weight, Z):
            """A thunk for sum_j weight_ijc Z_ja: (rows, d, p)."""
            w = weight.w
            hw = None if w is None else products.ask(weight.coef, Z[:, :, None] * w[:, None, :])

            def read():
                out = 0.0 if hw is None else products[hw]
                if weight.separable:
                    # Two plain matmuls: Q (rows, p, cols) = R (s V1)^T, the vectors outer
                    # to the columns, then (coef Q) Z with rows x p rows.
                    r, c = X.shape[0], Z.shape[0]
                    Q = 0.0
                    for R, s in weight.separable:
                        Vt = (scale(s) * V1).transpose(2, 0, 1).reshape(p * c, d)
                        Q = Q + terms.matmul(jnp, R, Vt.T)
                    H = (weight.coef[:, None, :] * Q.reshape(r, p, c)).reshape(r * p, c)
                    out = out + terms.matmul(jnp, H, Z).reshape(r, p, d).transpose(0, 2, 1)
                return out

            return read

        def contract(u, weight):
            """A thunk for sum_j weight_ijc u_ija = s_a (R_ia total + sign moment)."""
            R, Z = _factors(u, X, Xc, Y, Yc)
            rowsum = None if R is None else total(weight)
            mom = None if Z is None else moment(weight, Z[1])

            def read():
                out = 0.0 if R is None else R[:, :, None] * rowsum()[:, None, :]
                return scale(u.scale) * (out if Z is None else out + Z[0] * mom())

            return read

        parts0 = [total(weight) for weight in values.values()]
        parts1 = [contract(u, weight) for u, weight in gradients.values()]
        diagonal = [(g.scale, products.ask(g.coef, V1)) for g in t.diagonal]
        products.run()
        out0 = sum(read() for read in parts0)
        out1 = sum(read() for read in parts1) + sum(scale(s) * products[h] for s, h in diagonal)
        out1 = jnp.broadcast_to(out1, (X.shape[0], d, p)).reshape(X.shape[0], d * p)
        return jnp.concatenate([jnp.broadcast_to(out0, (X.shape[0], p)), out1], axis=1)

    return tile_fn


def ad_tile(kernel: AbstractKernel, method: str):
    """The matvec tile by AD: a JVP in y, then a VJP ("reverse") or d JVPs ("forward") in x."""

    def tile_fn(rows, cols, weights):
        X, Y, (v0, V1) = rows[0], cols[0], weights

        def row_values(X_):
            # (K v0)_i + sum_j grad_y k(x_i, y_j) . V1_j; row i depends on x_i only.
            K, T = jax.jvp(lambda Y_: autodiff.gram(kernel, X_, Y_), (Y,), (V1,))
            return terms.matmul(jnp, K, v0[:, None])[:, 0] + jnp.sum(T, axis=1)

        if method == "reverse":
            out0, pull = jax.vjp(row_values, X)
            (out1,) = pull(jnp.ones_like(out0))
        else:
            out0 = row_values(X)

            def along(e):
                return jax.jvp(row_values, (X,), (jnp.broadcast_to(e, X.shape),))[1]

            # lax.map, not vmap: d tangents at once would hold d copies of the tile.
            out1 = lax.map(along, jnp.eye(X.shape[1], dtype=X.dtype)).T
        return jnp.concatenate([out0[:, None], out1], axis=1)

    return tile_fn


# --------------------------------------------------------------------------- jitted programs


def _shared(kernel, method, v) -> bool:
    """Whether the product takes :func:`shared_tile`: for several vectors and a kernel whose
    order-2 tile has one coefficient array, the RBF's (n = 2000-5000, d = 3-20, 4-17 vectors,
    interleaved: 0.34 to 0.66 of :func:`closed_tile`'s time). One vector keeps the per-vector
    tile: CG's conditioning at n = 1000, d = 100 took 10.7 s against 8.1 s through the
    shared one. Where the terms have coefficients of their own (Matern 5/2) its extra
    matmuls cost more than it saves from d = 100 (1.5x slower with 17 vectors)."""
    several = v.ndim == 2 and v.shape[1] > 1
    return several and method == "closed" and getattr(kernel, "gaussian_profile", False)


def _blocks(method, shared, row_block, col_block):
    """The tile shape: the caller's, else the policy's for the tile in use (the AD tape
    holds rows x cols x d numbers, the closed tiles' blocks rows x cols or rows x p x cols)."""
    chosen = policy.current()
    if shared:
        rows, cols = chosen.gradient_shared_blocks
    elif method == "closed":
        rows, cols = chosen.gradient_closed_blocks
    else:
        rows, cols = chosen.gradient_ad_blocks
    return row_block or rows, col_block or cols


def _rows(kernel, X, Xc, Y, Yc, v0, V1, *, method, row_block, col_block):
    """Row i of the product, ``[value part, gradient part]``: (n, 1 + d), or (n, (1 + d) p)
    for the shared tile's p vectors. Row-local in X."""
    shared = V1.ndim == 3  # p vectors at once: from :func:`_shared`
    if shared:
        tile_fn = shared_tile(kernel)
    else:
        tile_fn = closed_tile(kernel) if method == "closed" else ad_tile(kernel, method)
    rows, cols = _blocks(method, shared, row_block, col_block)
    return tiled_row_reduce(tile_fn, (X, Xc), (Y, Yc), (v0, V1), row_block=rows, col_block=cols)


@compile_cache.jit(static_argnames=("method", "row_block", "col_block", "mesh"))
def joint_matvec(kernel, X, Y, v, *, method, row_block=None, col_block=None, mesh=None):
    """The joint covariance times v: (n (d + 1),) for v of shape (m (d + 1),), or (.., p) for
    v (.., p); matrix-free and tiled. Traceable.

    With a ``mesh`` the rows of X are split over its devices (``shard_map``); Y and v are
    replicated. Rows never talk to each other, so the devices exchange nothing.
    """
    n, m, d = X.shape[0], Y.shape[0], X.shape[1]
    # One centre (the mean of Y) for every tile and every device: the projections of
    # :func:`_project` are then consistent across column blocks.
    Xc, Yc = terms.centre(jnp, X, Y)
    rows = functools.partial(_rows, kernel, method=method, row_block=row_block, col_block=col_block)
    if mesh is not None:
        devices = mesh.devices.size
        padded = -(-n // devices) * devices
        X, Xc = (padding.pad_rows(A, padded, True) for A in (X, Xc))
        rows = jax.shard_map(
            rows,
            mesh=mesh,
            in_specs=(P(sharding.AXIS), P(sharding.AXIS), P(), P(), P(), P()),
            out_specs=P(sharding.AXIS),
        )

    def shared(V):  # (m (d + 1), p) -> (n (d + 1), p): all p vectors in each tile
        p = V.shape[1]
        out = rows(X, Xc, Y, Yc, V[:m], V[m:].reshape(m, d, p))[:n]
        return jnp.concatenate([out[:, :p], out[:, p:].reshape(n * d, p)])

    def one(v):  # (m (d + 1),) -> (n (d + 1),)
        return _joined(rows(X, Xc, Y, Yc, v[:m], v[m:].reshape(m, d))[:n])

    chosen = policy.current()
    if _shared(kernel, method, v):
        chunk = chosen.gradient_shared_rhs_chunk

        def batched(v):  # a leftover single column takes the per-vector tile
            return shared(v) if v.shape[1] > 1 else one(v[:, 0])[:, None]
    else:
        # Several right-hand sides share the tiles' coefficients (vmap); one column (a CG
        # solve for one right-hand side) runs unbatched: conditioning at n = 1000, d = 100
        # took 4.1 s (337 products) vmapped over it, 3.6 s without.
        vmapped, chunk = jax.vmap(one, in_axes=1, out_axes=1), chosen.gradient_rhs_chunk
        if v.ndim == 1:
            return one(v)

        def batched(v):
            return one(v[:, 0])[:, None] if v.shape[1] == 1 else vmapped(v)

    # A tile's batched intermediates grow with the number of vectors: take them a chunk at
    # a time, in sequence, and the columns left over in one smaller batch (padding 17
    # columns to two chunks of 16 doubled the work of an iterative fit's products).
    p = v.shape[1]
    if p <= chunk:
        return batched(v)
    whole = p // chunk * chunk
    parts = v[:, :whole].reshape(v.shape[0], whole // chunk, chunk).transpose(1, 0, 2)
    out = lax.map(batched, parts)  # (chunks, n (d + 1), chunk)
    out = out.transpose(1, 0, 2).reshape(out.shape[1], whole)
    return out if whole == p else jnp.concatenate([out, batched(v[:, whole:])], axis=1)


def assemble(value, dx, dy, H):
    """The block-major dense matrix from K (n, m), dK/dx, dK/dy (n, m, d), H (n, m, d, d)."""
    n, m, d = dx.shape
    top = jnp.concatenate([value, dy.reshape(n, m * d)], axis=1)
    bottom = jnp.concatenate(
        [
            jnp.transpose(dx, (0, 2, 1)).reshape(n * d, m),
            H.transpose(0, 2, 1, 3).reshape(n * d, m * d),
        ],
        axis=1,
    )
    return jnp.concatenate([top, bottom], axis=0)


@compile_cache.jit(static_argnames=("method",))
def joint_dense(kernel, X, Y, *, method):
    """The dense (n (d + 1), m (d + 1)) joint covariance, block-major. Traceable."""
    if method == "closed":
        Xc, Yc = terms.centre(jnp, X, Y)
        t = kernel.tile(jnp, X, Y, Xc, Yc, order=2)
        dx = hessian.dense_vectors(jnp, t.dx, X, Y, Xc, Yc)
        dy = hessian.dense_vectors(jnp, t.dy, X, Y, Xc, Yc)
        return assemble(t.value, dx, dy, hessian.dense_hessian(jnp, t, X, Y, Xc, Yc))
    dx, dy = hessian.ad_input_gradients(kernel, X, Y)
    H = hessian.ad_cross_hessian(kernel, X, Y, method)
    return assemble(autodiff.gram(kernel, X, Y), dx, dy, H)


@compile_cache.jit(static_argnames=("method",))
def joint_diagonal(kernel, X, Y, *, method):
    """Entries [p, p] of the square joint covariance (n = m): (n (d + 1),), O(n d) for
    closed forms. Traceable."""

    def one(x, y):
        x, y = x[None, :], y[None, :]
        if method == "closed":
            t = kernel.tile(jnp, x, y, x, y, order=2)
            h = jnp.zeros(x.shape[1], x.dtype)
            for o in t.outer:
                u = hessian.dense_field(jnp, o.u, x, y, x, y)[0, 0]
                w = hessian.dense_field(jnp, o.v, x, y, x, y)[0, 0]
                h = h + o.coef[0, 0] * u * w
            for g in t.diagonal:
                h = h + g.coef[0, 0] * jnp.broadcast_to(g.scale, h.shape)
            return t.value[0, 0], h
        H = hessian.ad_cross_hessian(kernel, x, y, method)[0, 0]
        return autodiff.gram(kernel, x, y)[0, 0], jnp.diagonal(H)

    values, grads = jax.vmap(one)(X, Y)
    return jnp.concatenate([values, grads.reshape(-1)])


# --------------------------------------------------------------------------- the operator


class GradientGram(eqx.Module):
    """Lazy (n (d + 1), m (d + 1)) joint covariance of values and gradients; see the module.

    Build it with :func:`gradient_gram`. It is a pytree (the kernel's hyperparameters and the
    points are its leaves), so it passes through ``jax.jit`` and ``jax.grad``.
    """

    kernel: AbstractKernel
    X: Float[Array, "n d"]
    Y: Float[Array, "m d"]
    method: str = eqx.field(static=True)
    is_jax: bool = eqx.field(static=True)
    row_block: int | None = eqx.field(static=True, default=None)
    col_block: int | None = eqx.field(static=True, default=None)

    @property
    def shape(self) -> tuple[int, int]:
        d = self.X.shape[1]
        return self.X.shape[0] * (d + 1), self.Y.shape[0] * (d + 1)

    @property
    def dtype(self):
        return self.X.dtype

    def _call(self, fn, *args, **kwargs):
        """Run a jitted program, in the caller's array type (NumPy float64 under local x64)."""

        def run():
            return fn(self.kernel, self.X, self.Y, *args, method=self.method, **kwargs)

        if self.is_jax:
            return run()
        with local_x64(self.dtype):
            return np.asarray(run())

    def matvec(self, v) -> Float[Array, "N ..."]:
        """The product with v of shape (m (d + 1),) or (m (d + 1), p): (n (d + 1),) or (.., p).

        O(n m d) time and O((n + m) d) memory beyond one tile for closed-form kernels.
        """
        cols = self.shape[1]
        shape = tuple(np.shape(v))
        if len(shape) not in (1, 2) or shape[0] != cols:
            raise ValueError(
                f"matvec needs v of shape ({cols},) or ({cols}, p) (m (d + 1) with m = "
                f"{self.Y.shape[0]}, d = {self.X.shape[1]}); got shape {shape}."
            )
        xp = jnp if self.is_jax else np
        v = xp.asarray(v, dtype=self.dtype)
        blocks = dict(row_block=self.row_block, col_block=self.col_block)
        return self._call(joint_matvec, v, **blocks, mesh=sharding.local_mesh())

    def __matmul__(self, v):
        return self.matvec(v)

    def to_dense(self) -> Float[Array, "N M"]:
        """The full matrix, (n (d + 1), m (d + 1)): O(n m d^2) memory, for small problems.

        Raises :class:`kernelgrad.execution.memory.DenseTooLargeError` (a ``MemoryError``) before
        allocating anything when the matrix cannot fit.
        """
        try:
            memory.check_dense("gradient_gram(k, X, Y).to_dense()", self.shape, self.dtype, self.X)
        except memory.DenseTooLargeError as err:
            raise memory.DenseTooLargeError(
                f"{err} For products with the operator, op.matvec(v) needs only O((n + m) d)."
            ) from None
        return self._call(joint_dense)

    def diagonal(self) -> Float[Array, " N"]:
        """The diagonal of a square operator (n = m), such as the training covariance."""
        if self.X.shape[0] != self.Y.shape[0]:
            raise ValueError(
                f"diagonal() needs a square operator; this one is {self.shape[0]} x "
                f"{self.shape[1]} (n = {self.X.shape[0]}, m = {self.Y.shape[0]})."
            )
        return self._call(joint_diagonal)


def gradient_gram(
    k,
    X,
    Y=None,
    *,
    mode: str = "auto",
    row_block: int | None = None,
    col_block=None,
    check_finite: bool = True,
) -> GradientGram:
    """Lazy joint covariance of [f(X), grad f(X)] and [f(Y), grad f(Y)] for a GP f ~ k.

    The operator has shape (n (d + 1), m (d + 1)) in the block-major layout of the module
    docstring: values first, then the gradients point by point.

    Args:
        k: a kernel twice differentiable at r = 0 (not Matern 1/2 or 3/2), or a pair function.
        X: points, (n, d) or (n,) for d = 1.
        Y: points, (m, d) or (m,); ``None`` means Y = X.
        mode: ``"closed"`` (O(n m d) matvec by the structured rules), ``"reverse"`` or
            ``"forward"`` (AD per tile; see the module docstring), or ``"auto"``: closed
            where the kernel has rules, else reverse.
        row_block, col_block: the tile shape of the matrix-free matvec (default per
            platform, :func:`kernelgrad.execution.reductions.default_blocks`).
        check_finite: refuse NaN or inf in points held in host memory (see
            :func:`kernelgrad.gram`).

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> op = kg.gradient_gram(kg.RBF(), np.zeros((4, 2)))
        >>> op.shape, op.matvec(np.ones(12)).shape, op.to_dense().shape
        ((12, 12), (12,), (12, 12))
    """
    p = prepare(k, X, Y, check_finite=check_finite)
    method = resolve_method("gradient_gram", p, mode)
    return GradientGram(p.kernel, p.X, p.Y, method, p.is_jax, row_block, col_block)


__all__ = [
    "CachedTile",
    "GradientGram",
    "cached_tile",
    "cached_tile_bytes",
    "gradient_gram",
    "joint_dense",
    "joint_diagonal",
    "joint_matvec",
]
