"""Matrix-free reductions over kernel pairs: K @ W and the weighted grad map, tile by tile.

Everything here rests on one primitive, :func:`tiled_row_reduce`. Its contract:

``tiled_row_reduce(tile_fn, X, Y, W, *, row_block=None, col_block=None) -> (n, p)``

* ``X`` holds the *row* data: an array, or a pytree of arrays, each with leading axis n.
  ``Y`` holds the *column* data and ``W`` the column *weights*, both with leading axis m
  (pytrees too; ``W`` may be ``None``).
* ``tile_fn(X_block, Y_block, W_block) -> (rows, p)`` gets the same pytrees cut to ``rows``
  rows and ``cols`` columns and returns the block's partial sums over its columns. It must
  be

  - *row-local*: output row i depends only on row i of ``X_block`` (padded rows are dropped);
  - *linear in W*, so that a column whose weights are all 0 contributes exactly 0.

* Result: ``out[i] = sum over column blocks of tile_fn(...)[i]``, of shape (n, p), in the
  dtype of ``tile_fn``'s output.
* Memory is O((n + m) d + n p + rows * cols): never an n x m buffer. Column blocks are
  scanned (``lax.scan``); for each, the row blocks run one after another (``lax.map``),
  and each row's sums over column blocks are added with Kahan's compensated summation, so
  a float32 sum over 10^6 columns keeps the accuracy of one block's sum rather than losing
  a bit per block.
* Ragged n and m need no special care from ``tile_fn``: rows are padded with copies of the
  first row, columns with copies of the first column and weight 0, so a padded point is a
  real point (no NaN from, say, a distance of 0/0) that adds nothing.
* It traces under ``jax.jit``, ``shard_map`` and ``vmap``; call it from inside a jitted
  function (the shapes, hence the blocking, are static).

On top of it sit :func:`grad_sum` and :func:`gram_matvec` for every kernel and method (each
tile is the dense path's own rule, :mod:`kernelgrad.derivatives.rules` or
:mod:`kernelgrad.derivatives.autodiff`, on its block; method ``"gaussian"``, which the engine
picks for an RBF on centred host points, tiles :mod:`kernelgrad.execution.gaussian`'s
factorisation): the ``tiled`` entries of their ops
(:mod:`kernelgrad.execution.ops`), which the engine runs above the policy's ``tiled_min_pairs``
(:mod:`kernelgrad.execution.policy`) through :mod:`kernelgrad.execution.sharding`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..derivatives import autodiff, hessian, rules, terms
from . import gaussian, padding, policy
from .inputs import library_numpy

#: Blocks are rounded to a multiple of this many rows/columns (vector-register friendly).
_ALIGN = 8


def default_blocks(platform: str | None = None) -> tuple[int, int]:
    """The (row_block, col_block) used when none is given: the policy's ``tile_blocks``, for
    ``platform``'s built-in policy when one is named."""
    chosen = policy.current() if platform is None else policy.for_platform(platform)
    return chosen.tile_blocks


def _split(total: int, block: int) -> tuple[int, int]:
    """(count, size) of near-equal blocks of at most ``block`` covering ``total``.

    Equal blocks, rather than full blocks plus a remainder, bound the padding by
    ``count * _ALIGN`` instead of a whole block.
    """
    count = max(1, -(-total // block))
    size = -(-total // count)
    size = -(-size // _ALIGN) * _ALIGN if total > _ALIGN else total
    return count, size


def _blocks(tree, count: int, size: int):
    """Each leaf reshaped from (count * size, ...) to (count, size, ...)."""
    return jax.tree.map(lambda a: a.reshape(count, size, *a.shape[1:]), tree)


def _leading(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def tiled_row_reduce(
    tile_fn, X, Y, W, *, row_block: int | None = None, col_block: int | None = None
):
    """Sum ``tile_fn`` over column blocks for every row block, without an n x m buffer.

    See the module docstring for the contract of ``tile_fn``.

    Args:
        tile_fn: ``(X_block, Y_block, W_block) -> (rows, p)`` partial sums.
        X: row data, an array or pytree of arrays with leading axis n.
        Y: column data, leading axis m.
        W: column weights, leading axis m, or ``None``.
        row_block: rows per block; default from :func:`default_blocks`.
        col_block: columns per block; default from :func:`default_blocks`.

    Returns:
        The (n, p) sums.
    """
    default_rows, default_cols = default_blocks()
    n, m = _leading(X), _leading(Y)
    row_count, rows = _split(n, row_block or default_rows)
    col_count, cols = _split(m, col_block or default_cols)
    Xb = _blocks(padding.pad_tree(X, row_count * rows, True), row_count, rows)
    Yb = _blocks(padding.pad_tree(Y, col_count * cols, True), col_count, cols)
    Wb = _blocks(padding.pad_tree(W, col_count * cols, False), col_count, cols)

    def row_blocks(col):
        """Every row block against one column block: (row_count, rows, p)."""
        return lax.map(lambda x_block: tile_fn(x_block, *col), Xb)

    def step(carry, col):
        return padding.kahan_add(*carry, row_blocks(col)), None

    # Columns outside, rows inside: XLA:CPU ran the other nesting (a column scan inside
    # each row block) 2-3x slower. Starting from the first block's sums (not from constant
    # zeros) keeps the carry's type identical to the body's, also under shard_map where
    # values vary per device.
    first = row_blocks(jax.tree.map(lambda a: a[0], (Yb, Wb)))
    rest = jax.tree.map(lambda a: a[1:], (Yb, Wb))
    (total, lost), _ = lax.scan(step, (first, jnp.zeros_like(first)), rest)
    out = total - lost  # (row_count, rows, p)
    return out.reshape(row_count * rows, -1)[:n]


# ----------------------------------------------------------------------------- tile functions


def _gaussian_tile(ZX, ZY, R):
    """exp(Z_X Z_Y^T) @ R: :mod:`kernelgrad.execution.gaussian`'s one product and one exp."""
    return terms.matmul(jnp, jnp.exp(terms.matmul(jnp, ZX, ZY.T)), R)


@library_numpy
def grad_sum(kernel, X, Y, w, *, method: str = "closed", row_block=None, col_block=None):
    """G[i, a] = sum_j w_j d k(x_i, y_j) / d x_ia, tiled: (n, d). Traceable (call under jit).

    Args:
        kernel: the kernel.
        X: (n, d) points; Y: (m, d) points; w: (m,) weights.
        method: ``"closed"``, ``"forward"`` or ``"reverse"`` (as in the transforms).
        row_block, col_block: block shape, see :func:`tiled_row_reduce`.
    """
    blocks = {"row_block": row_block, "col_block": col_block}
    if method == "gaussian":
        ZX, ZY, cX, RY, aX, coefficient = gaussian.parts(kernel, X, Y, w, centre=False)
        S = tiled_row_reduce(_gaussian_tile, ZX, ZY, RY, **blocks)
        return coefficient * aX[:, None] * (cX * S[:, :1] - S[:, 1:])
    if method == "closed":
        # Each tile is the dense rule on its block, finished: the matmul form's two terms,
        # which cancel, are centred on the tile's own columns rather than on all of Y.
        def tile_fn(Xb, Yb, wb):
            return rules.grad_sum(kernel, jnp, Xb, Yb, wb)

    else:
        fn = autodiff.grad_sum_forward if method == "forward" else autodiff.grad_sum_reverse

        def tile_fn(Xb, Yb, wb):
            return fn(kernel, Xb, Yb, wb)

    return tiled_row_reduce(tile_fn, X, Y, w, **blocks)


@library_numpy
def gram_matvec(kernel, X, Y, W, *, method: str = "closed", row_block=None, col_block=None):
    """K @ W for W of shape (m, p), tiled: (n, p). Traceable (call under jit)."""
    if method == "gaussian":  # K = v a_X a_Y^T (.) exp(Z_X Z_Y^T), X and Y centred
        (ZX, aX), (ZY, aY) = gaussian.scaled(kernel, X), gaussian.scaled(kernel, Y)
        S = tiled_row_reduce(
            _gaussian_tile, ZX, ZY, aY[:, None] * W, row_block=row_block, col_block=col_block
        )
        return jnp.asarray(kernel.variance, X.dtype) * aX[:, None] * S
    if method == "closed":

        def tile_fn(Xb, Yb, Wb):
            return rules.gram_matvec(kernel, jnp, Xb, Yb, Wb)

    else:

        def tile_fn(Xb, Yb, Wb):
            return terms.matmul(jnp, autodiff.gram(kernel, Xb, Yb), Wb)

    return tiled_row_reduce(tile_fn, X, Y, W, row_block=row_block, col_block=col_block)


@library_numpy
def laplacian_sum(kernel, X, Y, w, *, method="closed", row_block=None, col_block=None):
    """L[i] = sum_j w_j trace(d^2 k(x_i, y_j) / dx_i dy_j), tiled: (n, 1). Traceable."""
    if method == "closed":

        def tile_fn(Xb, Yb, wb):
            return hessian.closed_laplacian_sum(kernel, jnp, Xb, Yb, wb)

    else:

        def tile_fn(Xb, Yb, wb):
            return hessian.ad_laplacian_sum(method, kernel, Xb, Yb, wb)

    return tiled_row_reduce(tile_fn, X, Y, w, row_block=row_block, col_block=col_block)


__all__ = [
    "default_blocks",
    "grad_sum",
    "gram_matvec",
    "laplacian_sum",
    "tiled_row_reduce",
]
