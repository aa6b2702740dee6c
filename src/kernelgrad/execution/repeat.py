"""Repeat calls: a hot NumPy call, made again, runs its compiled program with nothing around it.

Once a size is hot (called the policy's ``hot_calls`` times with one kernel), the engine runs
it in an exact-size program of its own (:func:`kernelgrad.execution.engine._dense`). Every
later call with the same kernel object, transform, mode and input *layout* (NumPy arrays of
the same shapes and dtypes, Y given or not, Y being X or not) would take the same route
to the same program. So the first hot call leaves an entry here, and the next ones go from
the transform straight to it, before the eager path's checks (which said no for this
layout): a reshape (a view), the compiled call, a finiteness check while it runs, and the
transform's finishing view.

That matters beyond the microseconds it saves. On a 2-core machine XLA's worker threads
stop spinning a few microseconds after a call returns, and waking them costs more than a
100-point program (the forum's own kernel: 40 us a call back to back, 70-110 us with 20-50
us of Python between calls). A call path that stays under that gap keeps them awake.

Anything else misses and takes the general path: another shape or dtype, a JAX array, a
list, another policy, and a non-finite point (whose error message the general path writes).
The only choices the general path makes from point *values* rather than layout are the
range checks of :mod:`kernelgrad.execution.gaussian`: they can send an RBF grad map to the
eager factorised form or, at exactly the symmetric threshold's size, to the symmetric
blocks. An entry keeps the dense program for its layout, which is exact either way.
"""

from __future__ import annotations

import numpy as np

from . import policy
from .identity import IdentityCache
from .inputs import all_finite

#: Kernels with entries, and entries per kernel (the oldest goes first).
CACHE_SIZE = 256

_TABLES = IdentityCache(CACHE_SIZE)

#: What an entry takes: NumPy arrays, and NumPy scalars (``X[0]`` of 1-D points, for grad).
_TYPES = (np.ndarray, np.float64, np.float32)


def _layout(a, X):
    """The part of the key for one argument: None, "X" (it is X), or (shape, dtype)."""
    if a is None:
        return None
    if a is X:
        return "X"
    return (a.shape, a.dtype) if type(a) in _TYPES else False


def _key(op: str, mode: str, check_finite: bool, X, Y, W):
    """The call's layout, or None where an entry could not stand for it."""
    if type(X) not in _TYPES:
        return None
    y, w = _layout(Y, X), _layout(W, X)
    if y is False or w is False:
        return None
    return (op, mode, check_finite, policy.current(), X.shape, X.dtype, y, w)


def call(op: str, k, mode: str, check_finite: bool, X, Y=None, W=None):
    """The result from this call's entry, or None (no entry: take the general path)."""
    table = _TABLES.peek(k)
    if table is None:
        return None
    entry = table.get(_key(op, mode, check_finite, X, Y, W))
    return None if entry is None else entry(X, Y, W)


def recorder(op: str, k, mode: str, check_finite: bool, X, Y=None, W=None):
    """What :func:`kernelgrad.execution.engine.run` calls, with ``(program, p, finish)``, when
    it runs this call in a hot program: it keeps an entry for the call's layout."""

    def remember(program, p, finish) -> None:
        key = _key(op, mode, check_finite, X, Y, W)
        if key is None:
            return
        table = _TABLES.get(k, lambda kernel: {})
        if len(table) >= CACHE_SIZE:
            table.pop(next(iter(table)))
        table[key] = _entry(program, p, finish, check_finite)

    return remember


def _entry(program, p, finish, check_finite: bool):
    """The call ``(X, Y, W) -> result`` for one layout; None where a point is not finite.

    ``program(X, Y, W)`` is the engine's compiled call on the problem's (n, d) points; it
    takes Y = None where the engine traced Y = X as one argument, as it did when the entry
    was made (whether it did follows from the layout, so it is recorded once).
    """
    x_shape, y_shape = p.X.shape, p.Y.shape
    y_is_x = p.Y is p.X

    def run(X, Y, W):
        # The program runs asynchronously, so the finiteness check goes after the dispatch:
        # it overlaps the computation instead of keeping XLA's threads waiting. Points that
        # fail it only cost a discarded result.
        out = program(X.reshape(x_shape), None if y_is_x else Y.reshape(y_shape), W)
        if check_finite and not all_finite(X, None if Y is X else Y, W):
            return None
        out = np.asarray(out)
        return out if finish is None else finish(out)

    return run


__all__ = ["call", "recorder"]
