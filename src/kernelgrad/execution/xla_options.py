"""XLA:CPU compile options per kind of program: YNNPACK fusions for closed forms only.

XLA:CPU fuses elementwise work, reductions and matrix products into YNNPACK kernels by
default. That suits the closed forms, whose intermediates are (n, m) matrices and matrix
products: on 2 cores (float64, jitted, one call after another) the default against the
option off was 189 against 290 us for a Gram matrix at n = 320, d = 3, and 1.0 against 3.7
ms for a grad map at n = 1008, d = 3.

Programs that trace a pair function (the AD modes, and a pair function's plain Gram matrix)
are another matter. Batching a pair function over points of shape (d,) gives (n, m, d)
intermediates whose last axis is d, and the fused kernels run them far slower: a
forward-mode grad map of 1000 points in d = 3 took 36.9 ms with the fusions and 3.5 ms
without; a reverse-mode one of 112 points in d = 1, 497 against 74 us; a pair function's
Gram matrix of 320 points in d = 3, 344 against 151 us. Nothing measured went the other way
by more than the noise (a forward-over-reverse cross-Hessian of 112 points in d = 1: 28
against 34 us). So every program of a method other than the closed form compiles without
them, and hot programs still time both (:func:`kernelgrad.execution.engine._faster`).
"""

from __future__ import annotations

import functools

import jax

#: The option that turns XLA:CPU's YNNPACK fusions off for one program.
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}

#: Methods whose programs are closed forms (the fused kernels suit them).
CLOSED_METHODS = ("closed", "gaussian")


@functools.cache
def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def for_method(method: str | None) -> dict | None:
    """The compiler options for a program computed by ``method``; None: XLA's defaults."""
    if method is None or method in CLOSED_METHODS or not _on_cpu():
        return None
    return NO_YNN


__all__ = ["CLOSED_METHODS", "NO_YNN", "for_method"]
