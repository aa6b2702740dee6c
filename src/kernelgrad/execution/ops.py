"""The op registry: one record per op the engine runs, and nothing else decodes op names.

An op is a function of a kernel, points X (n, d) and Y (m, d) and, for the reductions,
weights W over Y. Its record says:

* how to compute it: ``closed(kernel, xp, X, Y, W)`` by the analytic rules in namespace
  ``xp`` (NumPy or jax.numpy), ``ad(method, kernel, X, Y, W)`` by JAX AD (``"forward"`` or
  ``"reverse"``), and, for the reductions over j, ``tiled(kernel, X, Y, W, method=...,
  row_block=..., col_block=...)`` without an n x m buffer;
* which axes of its result are cropped after padding (rows only, or rows and columns);
* how much an eager NumPy call computes, against which policy limit;
* what to call instead when its dense result cannot fit.

Adding an op is one :class:`Op` here plus its rules (see ``docs/architecture.md``, which
adds the Laplacian as the worked example). The transforms (:mod:`kernelgrad.transforms`)
validate arguments, pick the method and hand the engine an op name; the engine
(:mod:`kernelgrad.execution.engine`) picks where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from ..derivatives import autodiff, hessian, rules, terms
from . import policy, reductions


class Op(NamedTuple):
    """One op the engine can run."""

    name: str
    closed: Callable  # (kernel, xp, X, Y, W) -> result
    ad: Callable  # (method, kernel, X, Y, W) -> result
    pairwise: bool  # the result has a row per x_i *and* a column per y_j (both cropped)
    eager_work: Callable  # (n, m, d) -> entries an eager NumPy call computes
    eager_limit: Callable  # (policy) -> the most entries that run eagerly
    matrix_free: str | None = None  # what to call instead when the dense result cannot fit
    tiled: Callable | None = None  # the matrix-free reduction over j, when there is one

    def compute(self, method: str, kernel, xp, X, Y, W):
        """The result by ``method`` ("closed" in namespace ``xp``; AD always in JAX)."""
        if method == "closed":
            return self.closed(kernel, xp, X, Y, W)
        return self.ad(method, kernel, X, Y, W)


def _pair_entries(n: int, m: int, d: int) -> int:
    return n * m


def _eager_pairs(chosen: policy.Policy) -> int:
    return chosen.eager_max_pairs


def _jacobian_ad(method, kernel, X, Y, W):
    fn = autodiff.jacobian_forward if method == "forward" else autodiff.jacobian_reverse
    return fn(kernel, X, Y)


def _grad_sum_ad(method, kernel, X, Y, W):
    fn = autodiff.grad_sum_forward if method == "forward" else autodiff.grad_sum_reverse
    return fn(kernel, X, Y, W)


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op(
            "gram",
            closed=lambda kernel, xp, X, Y, W: rules.gram(kernel, xp, X, Y),
            ad=lambda method, kernel, X, Y, W: autodiff.gram(kernel, X, Y),
            pairwise=True,
            eager_work=_pair_entries,
            eager_limit=_eager_pairs,
            matrix_free="kg.gram_matvec(k, X, Y, W) for K @ W (W of shape (m,) or (m, p))",
        ),
        Op(
            "jacobian",
            closed=lambda kernel, xp, X, Y, W: rules.jacobian(kernel, xp, X, Y),
            ad=_jacobian_ad,
            pairwise=True,
            # Its work (and output) grows with d: count its (i, j, a) entries.
            eager_work=lambda n, m, d: n * m * d,
            eager_limit=_eager_pairs,
            matrix_free="kg.grad_sum(k, X, Y, weights) for the weighted sum over j",
        ),
        Op(
            "grad_sum",
            closed=rules.grad_sum,
            ad=_grad_sum_ad,
            pairwise=False,
            eager_work=_pair_entries,
            eager_limit=_eager_pairs,
            tiled=reductions.grad_sum,
        ),
        Op(
            "gram_matvec",
            closed=rules.gram_matvec,
            ad=lambda method, kernel, X, Y, W: terms.matmul(jnp, autodiff.gram(kernel, X, Y), W),
            pairwise=False,
            eager_work=_pair_entries,
            eager_limit=_eager_pairs,
            tiled=reductions.gram_matvec,
        ),
        Op(
            "laplacian_sum",
            closed=hessian.closed_laplacian_sum,
            ad=hessian.ad_laplacian_sum,
            pairwise=False,
            # The trace costs O(d) per pair: no d x d block.
            eager_work=lambda n, m, d: n * m * d,
            eager_limit=_eager_pairs,
            tiled=reductions.laplacian_sum,
        ),
        Op(
            "cross_hessian",
            closed=lambda kernel, xp, X, Y, W: hessian.closed_cross_hessian(kernel, xp, X, Y),
            ad=lambda method, kernel, X, Y, W: hessian.ad_cross_hessian(kernel, X, Y, method),
            pairwise=True,
            eager_work=lambda n, m, d: n * m * d * d,
            eager_limit=lambda chosen: chosen.eager_cross_hessian_max_entries,
            matrix_free="a matrix-free product with the gradient kernel (no dense n x m x d x d)",
        ),
    )
}


def get(name: str) -> Op:
    """The record of op ``name``."""
    return OPS[name]


def tiled(name: str, method: str, kernel, X, Y, W, *, row_block=None, col_block=None):
    """Op ``name``'s matrix-free reduction (``grad_sum`` or ``gram_matvec``). Traceable."""
    op = OPS[name]
    if op.tiled is None:
        raise ValueError(
            f"{name} has no matrix-free reduction; the ops that have one are "
            + ", ".join(repr(o.name) for o in OPS.values() if o.tiled is not None)
            + "."
        )
    return op.tiled(kernel, X, Y, W, method=method, row_block=row_block, col_block=col_block)


__all__ = ["OPS", "Op", "get", "tiled"]
