"""The public derivative transforms: gram, grad, jacobian, grad_sum, gram_matvec and
cross_hessian.

Each takes a kernel, points and a ``mode``:

* ``"closed"``: analytic rules (:mod:`kernelgrad.derivatives.rules`); not for plain pair functions.
* ``"forward"``: JVPs, one per input dimension, shared by all points.
* ``"reverse"``: VJPs; one reverse pass for a weighted sum, batched per-pair passes otherwise.
* ``"auto"`` (default): closed form where it exists, else the cheaper AD mode for the shape.
  It never takes a path with n^3 intermediates or n separate reverse passes.

NumPy in gives NumPy out and JAX in gives JAX out, in the inputs' float dtype. Points of
shape (n,) mean n points in one dimension, and the trailing d axis is dropped from outputs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .execution import eager, engine, memory, repeat, sharding
from .execution.inputs import MODES, Problem, prepare, resolve_method

#: What a transform returns: a NumPy array for NumPy input, a JAX array for JAX input.
Out = Array | np.ndarray


def _empty(p: Problem, shape, *, squeeze: bool = False):
    """An empty result of ``shape`` (n or m is 0), without the d axis for 1-D points."""
    if squeeze and p.squeeze:
        shape = shape[:-1]
    return (jnp if p.is_jax else np).zeros(shape, p.dtype)


def _squeezer(p: Problem):
    """Drops the trailing d axis for 1-D points (applied by the engine, as a view)."""
    return (lambda out: out[..., 0]) if p.squeeze else None


def gram(k, X, Y=None, *, mode: str = "auto", check_finite: bool = True) -> Float[Out, "n m"]:
    """Gram matrix K[i, j] = k(x_i, y_j), of shape (n, m).

    Args:
        k: a kernel, or a pair function ``fn(x, y) -> scalar``.
        X: points, (n, d) or (n,).
        Y: points, (m, d) or (m,); ``None`` means Y = X.
        mode: ``"auto"``, ``"closed"``, ``"forward"`` or ``"reverse"``.
        check_finite: refuse NaN or inf in points and weights held in host memory with a
            ValueError (one pass over them); ``False`` skips the check. Inside a caller's
            ``jax.jit``, and on an accelerator, nothing is checked.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> kg.gram(kg.RBF(), np.zeros((3, 2))).shape
        (3, 3)
    """
    # A layout with a repeat entry went compiled before, so the eager checks would say no
    # again: asking the repeat table first saves them before a compiled call.
    again = repeat.call("gram", k, mode, check_finite, X, Y)
    if again is not None:
        return again
    if mode == "auto" or mode == "closed":
        fast = eager.gram(k, X, Y, check_finite)
        if fast is not None:
            return fast
    p = prepare(k, X, Y, check_finite=check_finite)
    method = resolve_method("gram", p, mode)
    if p.n == 0 or p.m == 0:
        return _empty(p, (p.n, p.m))
    memory.check_dense("gram", (p.n, p.m), p.dtype, p.X)
    remember = repeat.recorder("gram", k, mode, check_finite, X, Y)
    return engine.run("gram", method, p, remember=remember)


def jacobian(
    k, X, Y=None, *, mode: str = "auto", check_finite: bool = True
) -> Float[Out, "n m d"] | Float[Out, "n m"]:
    """Input Jacobian J[i, j] = d/dx_i k(x_i, y_j), of shape (n, m, d); (n, m) for 1-D points.

    Arguments as for :func:`gram`.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> kg.jacobian(kg.RBF(), np.zeros((4, 3)), np.ones((5, 3))).shape
        (4, 5, 3)
    """
    again = repeat.call("jacobian", k, mode, check_finite, X, Y)
    if again is not None:
        return again
    p = prepare(k, X, Y, check_finite=check_finite)
    method = resolve_method("jacobian", p, mode)
    if p.n == 0 or p.m == 0:
        return _empty(p, (p.n, p.m, p.d), squeeze=True)
    memory.check_dense("jacobian", (p.n, p.m, p.d), p.dtype, p.X)
    remember = repeat.recorder("jacobian", k, mode, check_finite, X, Y)
    return engine.run("jacobian", method, p, finish=_squeezer(p), remember=remember)


def grad(
    k, x, Y=None, *, mode: str = "auto", check_finite: bool = True
) -> Float[Out, "m d"] | Float[Out, " m"]:
    """Gradient of k(x, y_j) with respect to one point x, for every y_j: shape (m, d).

    ``x`` is (d,) or a scalar (1-D points; the output is then (m,)). ``Y=None`` means Y = x.
    The forum's ``grad_kernel`` is ``grad(k, X[0], X)``. Other arguments as for :func:`gram`.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> X = np.linspace(-1.0, 1.0, 100)
        >>> kg.grad(kg.RBF(), X[0], X).shape
        (100,)
    """
    again = repeat.call("grad", k, mode, check_finite, x, Y)
    if again is not None:
        return again
    if mode == "auto" or mode == "closed":
        fast = eager.grad(k, x, Y, check_finite)
        if fast is not None:
            return fast
    p = prepare(k, x, Y, single=True, check_finite=check_finite)
    method = resolve_method("jacobian", p, mode)
    if p.m == 0:
        return _empty(p, (p.m, p.d), squeeze=True)
    first_row = (lambda J: J[0, :, 0]) if p.squeeze else (lambda J: J[0])
    remember = repeat.recorder("grad", k, mode, check_finite, x, Y)
    return engine.run("jacobian", method, p, finish=first_row, remember=remember)


def grad_sum(
    k, X, Y=None, weights=None, *, mode: str = "auto", check_finite: bool = True
) -> Float[Out, "n d"] | Float[Out, " n"]:
    """Weighted grad map G[i] = sum_j w_j d/dx_i k(x_i, y_j), of shape (n, d); (n,) for 1-D.

    With unit weights this is the forum's summed ``grad_kernel_map`` and the SVGD repulsion
    term; with GP weights ``K^-1 y`` it is the gradient of the posterior mean at X.

    Args:
        k: a kernel, or a pair function.
        X: points, (n, d) or (n,).
        Y: points, (m, d) or (m,); ``None`` means Y = X (still differentiating only x_i).
        weights: (m,); ``None`` means ones.
        mode: ``"auto"``, ``"closed"``, ``"forward"`` or ``"reverse"``.
        check_finite: refuse NaN or inf in points and weights held in host memory with a
            ValueError (one pass over them); ``False`` skips the check. Inside a caller's
            ``jax.jit``, and on an accelerator, nothing is checked.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> X = np.linspace(-1.0, 1.0, 100)
        >>> kg.grad_sum(kg.RBF(), X).shape
        (100,)
    """
    again = repeat.call("grad_sum", k, mode, check_finite, X, Y, weights)
    if again is not None:
        return again
    if mode == "auto" or mode == "closed":
        fast = eager.grad_sum(k, X, Y, weights, check_finite)
        if fast is not None:
            return fast
    p = prepare(k, X, Y, weights, check_finite=check_finite)
    method = resolve_method("grad_sum", p, mode)
    if p.n == 0 or p.m == 0:  # an empty sum over j is 0
        return _empty(p, (p.n, p.d), squeeze=True)
    # weights=None stays None: unpadded programs then skip a multiply per pair, and the
    # engine puts in unit weights wherever padding or blocking needs them.
    remember = repeat.recorder("grad_sum", k, mode, check_finite, X, Y, weights)
    return engine.run("grad_sum", method, p, finish=_squeezer(p), remember=remember)


def gram_matvec(
    k, X, Y=None, W=None, *, mode: str = "auto", check_finite: bool = True
) -> Float[Out, " n"] | Float[Out, "n p"]:
    """Kernel matrix-vector product K @ W: (n,) for W of shape (m,), (n, p) for (m, p).

    ``W=None`` means ones (the row sums of K). Other arguments as for :func:`gram`.
    """
    p = prepare(k, X, Y, W, weight_ndim=(1, 2), check_finite=check_finite)
    method = resolve_method("gram_matvec", p, mode)
    vector = p.W is None or p.W.ndim == 1
    if p.W is None:
        p = _with_unit_weights(p)
    if vector:
        p = replace(p, W=p.W[:, None])
    if p.n == 0 or p.m == 0:
        out = _empty(p, (p.n, p.W.shape[1]))
        return out[:, 0] if vector else out
    return engine.run("gram_matvec", method, p, finish=(lambda out: out[:, 0]) if vector else None)


def cross_hessian(
    k, X, Y=None, *, mode: str = "auto", check_finite: bool = True
) -> Float[Out, "n m d d"] | Float[Out, "n m"]:
    """Cross-Hessian H[i, j, a, b] = d^2 k(x_i, y_j) / dx_ia dy_jb, of shape (n, m, d, d).

    For 1-D points, (n,) and (m,), the output is (n, m). ``Y=None`` means Y = X, still
    differentiating the first argument in x and the second in y (so the diagonal i = j is
    the covariance of the gradient process, not the Hessian of k(x, x)).

    Methods: ``"closed"`` uses f' and f'' of a stationary kernel's profile, g' and g'' of a
    dot-product kernel and the sum/product/scaling rules; ``"forward"`` is forward-over-reverse
    AD per pair (``jacfwd`` of ``grad``), ``"reverse"`` reverse-over-reverse; ``"auto"`` picks
    the closed form where it exists, else forward-over-reverse.

    Results are finite and exact at r = 0 for RBF, Matern 5/2, rational quadratic, periodic
    and their composites. Matern 1/2 and 3/2 (alone or inside a composite) raise a
    ``ValueError`` for any inputs: they are not twice differentiable at r = 0.

    Args:
        k: a kernel, or a pair function ``fn(x, y) -> scalar``.
        X: points, (n, d) or (n,).
        Y: points, (m, d) or (m,); ``None`` means Y = X.
        mode: ``"auto"``, ``"closed"``, ``"forward"`` or ``"reverse"``.
        check_finite: refuse NaN or inf in points held in host memory (see
            :func:`kernelgrad.gram`).

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> H = kg.cross_hessian(kg.RBF(), np.zeros((2, 3)))
        >>> H.shape, float(H[0, 0, 0, 0])
        ((2, 2, 3, 3), 1.0)
    """
    p = prepare(k, X, Y, check_finite=check_finite)
    method = resolve_method("cross_hessian", p, mode)
    memory.check_dense("cross_hessian", (p.n, p.m, p.d, p.d), p.dtype, p.X)
    squeeze = (lambda out: out[..., 0, 0]) if p.squeeze else None
    if p.n == 0 or p.m == 0:
        out = (jnp if p.is_jax else np).zeros((p.n, p.m, p.d, p.d), p.dtype)
        return out if squeeze is None else squeeze(out)
    # The engine pads to size buckets, runs eagerly or compiled, and crops, as for the
    # first-order transforms.
    return engine.run("cross_hessian", method, p, finish=squeeze)


def laplacian_sum(
    k, X, Y=None, weights=None, *, mode: str = "auto", check_finite: bool = True
) -> Float[Out, " n"]:
    """Weighted Laplacian sum L[i] = sum_j w_j sum_a d^2 k(x_i, y_j) / dx_ia dy_ja: (n,).

    The trace of the cross-Hessian, summed over j: the trace term of the kernel Stein
    discrepancy. In closed form it costs O(d) per pair (no d x d block is formed), and above
    the policy's ``tiled_min_pairs`` it runs matrix-free, as :func:`grad_sum` does.

    Args:
        k: a kernel twice differentiable at r = 0 (not Matern 1/2 or 3/2), or a pair function.
        X: points, (n, d) or (n,).
        Y: points, (m, d) or (m,); ``None`` means Y = X (still differentiating x and y
            separately).
        weights: (m,); ``None`` means ones.
        mode: ``"auto"``, ``"closed"``, ``"forward"`` (the trace of forward-over-reverse AD
            per pair) or ``"reverse"``.
        check_finite: refuse NaN or inf in points and weights held in host memory.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> float(kg.laplacian_sum(kg.RBF(), np.zeros((1, 3)))[0])  # d / l^2 at r = 0
        3.0
    """
    p = prepare(k, X, Y, weights, check_finite=check_finite)
    method = resolve_method("laplacian_sum", p, mode)
    if p.W is None:
        p = _with_unit_weights(p)
    if p.n == 0 or p.m == 0:  # an empty sum over j is 0
        return _empty(p, (p.n,))
    return engine.run("laplacian_sum", method, p, finish=lambda out: out[:, 0])


class Plan(NamedTuple):
    """How a transform call will run, as :func:`explain` reports it."""

    op: str  # the transform: "gram", "grad", "jacobian", "grad_sum" or "gram_matvec"
    method: str  # "closed", "forward" or "reverse"
    engine: str  # "eager", "dense", "sharded", "symmetric", "tiled" or "traced"
    padded: tuple[int, int] | None  # (N, M) the dense program runs on, else None
    devices: int  # devices the program runs on

    def __str__(self) -> str:
        what = {
            "eager": "eager NumPy, no compile",
            "sharded": f"XLA, on the {self.devices} devices holding X's rows, sharded result",
            "symmetric": "XLA, symmetric blocks (each exp serves (i, j) and (j, i))",
            "tiled": f"XLA, tiled matrix-free over {self.devices} device(s)",
            "traced": "XLA, inside the caller's own trace (their shapes)",
        }
        if self.engine == "dense":
            N, M = self.padded
            return f"{self.method}: XLA, one program on points padded to n={N}, m={M}"
        return f"{self.method}: {what[self.engine]}"


#: The op each transform runs in the engine (grad is the first row of a jacobian).
_ENGINE_OP = {"grad": "jacobian"}


def explain(
    op: str, k, X, Y=None, weights=None, *, mode: str = "auto", check_finite: bool = True
) -> Plan:
    """How ``kernelgrad.<op>(k, X, Y, weights, mode=mode)`` would run, without running it.

    Example:
        >>> import numpy as np, kernelgrad as kg
        >>> str(kg.explain("grad_sum", kg.RBF(), np.linspace(-1.0, 1.0, 100)))
        'closed: eager NumPy, no compile'
    """
    known = ("gram", "grad", "jacobian", "grad_sum", "gram_matvec", "laplacian_sum")
    if op not in known:
        raise ValueError(f"Unknown op {op!r}; expected one of {', '.join(map(repr, known))}.")
    if mode in ("auto", "closed") and eager.applies(op, k, X, Y, weights, check_finite):
        return Plan(op, "closed", "eager", None, 1)
    single = op == "grad"
    p = prepare(
        k,
        X,
        Y,
        weights,
        single=single,
        weight_ndim=(1, 2) if op == "gram_matvec" else (1,),
        check_finite=check_finite,
    )
    inner = _ENGINE_OP.get(op, op)
    method = resolve_method(inner, p, mode)
    how, padded = engine.plan(inner, method, p)
    devices = 1
    if how == "tiled":
        devices = len(sharding.local_devices())
    elif how == "sharded":
        devices = len(p.X.sharding.device_set)
    return Plan(op, method, how, padded, devices)


def _with_unit_weights(p: Problem) -> Problem:
    return replace(p, W=engine.unit_weights(p))


__all__ = [
    "MODES",
    "Plan",
    "cross_hessian",
    "explain",
    "gram",
    "grad",
    "grad_sum",
    "gram_matvec",
    "jacobian",
    "laplacian_sum",
]
