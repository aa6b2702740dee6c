"""Checking and coercing the arguments of every transform, before any work is done.

Bad input is reported here, in the caller's terms (the shapes it got and the ones it
expected), never as a traceback from inside JAX.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import hessian
from ..kernels import AbstractKernel
from ..kernels import kernel as as_kernel
from . import padding, policy
from .identity import IdentityCache

MODES = ("auto", "closed", "forward", "reverse")


@dataclass(frozen=True)
class Problem:
    """Validated inputs: points as (n, d) and (m, d) arrays of one float dtype."""

    kernel: AbstractKernel
    X: Any  # (n, d)
    Y: Any  # (m, d)
    W: Any  # (m,) or (m, p) weights, or None
    same: bool  # Y is X (the Gram matrix is symmetric)
    squeeze: bool  # the caller passed 1-D points: drop the trailing d axis of outputs
    is_jax: bool  # return a JAX array (else NumPy)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def m(self) -> int:
        return self.Y.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def dtype(self):
        return self.X.dtype


class KernelFacts(NamedTuple):
    """What every call asks of a kernel, worked out once per kernel instance."""

    closed_form: bool  # analytic rules exist (not a pair function)
    ard_dims: int | None  # the d fixed by per-dimension lengthscales
    traced: bool  # some hyperparameter is a JAX tracer (inside jax.grad over the kernel)


def _work_out_facts(k: AbstractKernel) -> KernelFacts:
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(k))
    return KernelFacts(k.has_closed_form, k.ard_dims, traced)


_FACTS = IdentityCache()


def facts(k: AbstractKernel) -> KernelFacts:
    """The kernel's :class:`KernelFacts`, worked out once per kernel.

    Asking afresh would cost more than the whole of a small eager computation. A kernel with
    traced leaves (inside ``jax.grad`` over it) is not kept: it lives for one trace, and the
    cache must not hold its tracers.
    """
    return _FACTS.get(k, _work_out_facts, keep=lambda known: not known.traced)


#: Kernels with pair functions already traced once at a (d, dtype): keyed by structure
#: (which holds the functions), so that a raw callable wrapped anew on every call is found.
_PROBED: set = set()
#: The (d, dtype)s each kernel was probed at, found by identity: a lookup costs 0.2 us where
#: flattening a kernel for its structure costs 1-3 us.
_PROBED_BY_KERNEL = IdentityCache(1024)


def probe_pair_functions(k: AbstractKernel, d: int, dtype) -> None:
    """Trace ``k`` once on abstract points of shape (d,), so that a pair function written
    with NumPy fails here, with its TypeError (see :class:`kernels.PairFunction`), rather
    than deep inside the engine's first program. Other errors are left to the real call."""
    dtype = np.dtype(dtype)
    probed = _PROBED_BY_KERNEL.get(k, lambda k: set())
    if (d, dtype) in probed:
        return
    key = (jax.tree.structure(k), d, dtype)
    if key not in _PROBED:
        _trace_once(k, d, dtype)
        if len(_PROBED) < 1024:
            _PROBED.add(key)
    probed.add((d, dtype))


def _trace_once(k: AbstractKernel, d: int, dtype) -> None:
    point = jax.ShapeDtypeStruct((d,), dtype)
    try:
        with local_x64(dtype):
            jax.eval_shape(lambda x, y: k(x, y), point, point)
    except TypeError as err:
        if "turned its traced points" in str(err):
            raise TypeError(str(err)) from None


def library_numpy(method):
    """Run ``method`` with NumPy-style rank promotion allowed, whatever the user's setting.

    kernelgrad's rules broadcast (n, d) against (d,) on purpose; a user's strict
    ``jax_numpy_rank_promotion="raise"`` is about their code, not ours. For the public
    functions that run or trace jax.numpy outside kernelgrad's own jitted programs (the GP's
    methods; the reductions a user may trace in their own jit); those programs get the same
    from :func:`kernelgrad.execution.compile_cache.jit`.
    """

    @functools.wraps(method)
    def call(*args, **kwargs):
        with jax.numpy_rank_promotion("allow"):
            return method(*args, **kwargs)

    return call


def local_x64(dtype) -> contextlib.AbstractContextManager:
    """``jax.enable_x64`` for float64 work, scoped to the ``with`` block; nothing otherwise.

    NumPy float64 inputs get float64 results this way without the user's global JAX
    configuration changing.
    """
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}.")


def explicit_method(p: Problem, mode: str) -> str | None:
    """The method ``mode`` names for problem ``p``, or None for ``"auto"`` without closed form.

    Validates the mode, and refuses ``"closed"`` for a kernel without analytic rules with an
    error naming the modes that apply. ``"auto"`` resolves to ``"closed"`` where it exists;
    otherwise the transform picks its AD mode.
    """
    check_mode(mode)
    closed = facts(p.kernel).closed_form
    if mode == "closed" and not closed:
        raise ValueError(
            f"mode='closed' needs analytic rules, which {type(p.kernel).__name__} does not "
            "have; use mode='forward', 'reverse' or 'auto'."
        )
    if mode != "auto":
        return mode
    return "closed" if closed else None


#: Ops that need second derivatives of the kernel (named as in their error messages).
SECOND_ORDER = ("cross_hessian", "laplacian_sum", "gradient_gram", "hyper_grad(gradients=True)")


def resolve_method(op: str, p: Problem, mode: str) -> str:
    """The method ("closed", "forward" or "reverse") that ``mode`` means for ``op`` on ``p``:
    the one place a mode is resolved.

    A bad mode is refused first, then a kernel that ``op`` cannot differentiate, then
    ``"closed"`` for a kernel without rules (:func:`explicit_method`). ``"auto"`` without a
    closed form takes the cheaper AD mode for the shape: one reverse pass for a weighted grad
    map above the policy's ``forward_max_dims_for_sum`` dimensions, reverse for the gradient
    operator's tiles, forward-over-reverse (d passes per pair, each O(d)) for a cross-Hessian,
    and forward (one JVP per dimension, shared by all points) otherwise.
    """
    check_mode(mode)
    if op in SECOND_ORDER:
        hessian.check_twice_differentiable(p.kernel, op)
    method = explicit_method(p, mode)
    if method is not None:
        return method
    if op == "grad_sum" and p.d > policy.current().forward_max_dims_for_sum:
        return "reverse"
    return "reverse" if op == "gradient_gram" else "forward"


def _as_float_array(name: str, value):
    """A real floating array (NumPy or JAX, as given); integers and bools are promoted."""
    if type(value) is np.ndarray and value.dtype.kind == "f":
        # The common case, checked first: isinstance against jax.Array costs a microsecond.
        return value
    if isinstance(value, jax.core.Tracer):
        arr = value
    elif isinstance(value, jax.Array):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise TypeError(f"{name} must be an array of real numbers: {err}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}); kernelgrad needs real inputs.")
    if kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    # Integers and bools are returned as they are: :func:`prepare` promotes them to the float
    # dtype of the other inputs, so integer weights never widen float32 points to float64.
    return arr


def all_finite(*arrays) -> bool:
    """Whether every entry of these NumPy arrays (None skipped) is finite, in one pass each
    and no buffer.

    A sum of squares (one BLAS dot, 0.3 us for 300 numbers) is NaN or inf whenever an entry
    is; when it is not finite only through overflow, the exact check decides. That overflow
    needs entries near 1e150 in float64 (1e17 in float32), where the kernel's own squared
    distances overflow too, and NumPy then warns of it; no ``errstate`` guards the dot, since
    entering one would cost three times the dot on every call.
    """
    for A in arrays:
        if A is None or A.dtype.kind != "f":
            continue
        if A.ndim == 0:
            if math.isfinite(A):
                continue
        elif A.ndim == 1 or A.flags.c_contiguous:
            flat = A if A.ndim == 1 else A.reshape(-1)
            # math.isfinite on the dot's scalar: a tenth of np.isfinite's cost.
            if math.isfinite(flat.dot(flat)):
                continue
        if not np.isfinite(A).all():
            return False
    return True


def require_finite(name: str, A, *, skippable: bool = True) -> None:
    """Raise a ValueError naming ``name``, the count and the first index of any NaN or inf
    in NumPy array ``A`` (anything else is not checked). ``skippable``: the caller has a
    ``check_finite`` keyword, which the message then mentions."""
    if type(A) is not np.ndarray or all_finite(A):
        return
    bad = ~np.isfinite(A)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f" at index {first[0] if len(first) == 1 else first}" if first else ""
    raise ValueError(
        f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf); the first is "
        f"{A[first]}{where}. Expected finite numbers: remove or replace them"
        + (", or pass check_finite=False to skip this check." if skippable else ".")
    )


def _host_view(value):
    """A zero-copy NumPy view of a concrete JAX array held by one CPU device, else ``value``.

    Reshaping, padding and cropping such arrays in NumPy costs nothing, where each eager JAX
    operation costs a dispatch (tens of microseconds) or even a compile per new shape. The
    caller still gets a JAX array back (``Problem.is_jax``).
    """
    if isinstance(value, jax.Array) and padding.on_one_cpu(value):
        return np.asarray(value)
    return value


def _points(name: str, value, *, single: bool = False):
    """Coerce points to 2-D. Returns (array, was_1d_convention)."""
    arr = _as_float_array(name, value)
    rows = "m" if name == "Y" else "n"
    low, what = (0, "(d,) or a scalar") if single else (1, f"({rows}, d) or ({rows},)")
    if arr.ndim == low:
        return arr.reshape((*arr.shape, 1)) if not single else arr.reshape(1, 1), True
    if arr.ndim == low + 1:
        return (arr[None, :] if single else arr), False
    raise ValueError(f"{name} must have shape {what}, got shape {tuple(arr.shape)}.")


def _common_dtype(arrays, originals):
    """The float dtype of a problem, from its coerced arrays and what the caller passed.

    The points' dtype decides and weights follow it (``np.ones(m)`` must not widen float32
    points to float64). Integer inputs take the float dtype of the others. Python scalars and
    lists carry no dtype of their own, so, as in JAX, they are weak: a float32 array wins.
    """
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) == 1:
        dtype = dtypes.pop()
        return dtype if dtype.kind == "f" else np.dtype(np.float64)
    for strong in (True, False):
        for group in (slice(0, 2), slice(2, None)):  # points first, then weights
            dtypes = {
                a.dtype
                for a, orig in zip(arrays[group], originals[group], strict=False)
                if a.dtype.kind == "f" and hasattr(orig, "dtype") == strong
            }
            if dtypes:
                return dtypes.pop() if len(dtypes) == 1 else np.result_type(*dtypes)
    return np.dtype(np.float64)


_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def _numpy_problem(k, X, Y, W, single: bool, weight_ndim, check_finite: bool) -> Problem | None:
    """The Problem for the commonest call, built with a few checks; None for anything else.

    NumPy points (and weights) of one float dtype and matching shapes, and a concrete kernel
    of ours. Everything unusual, including every error, is left to the general path.
    """
    if type(X) not in (np.ndarray, np.float64, np.float32) or X.dtype not in _FLOATS:
        return None
    dtype = X.dtype
    low = 0 if single else 1
    if X.ndim == low:
        X2, one_dim = X.reshape(1, 1) if single else X[:, None], True
    elif X.ndim == low + 1 and X.shape[-1] > 0:
        X2, one_dim = (X[None, :] if single else X), False
    else:
        return None
    if Y is None:
        Y2 = X2
    elif type(Y) is np.ndarray and Y.dtype == dtype and Y.ndim == 2 - one_dim:
        Y2 = Y[:, None] if one_dim else Y
        if Y2.shape[1] != X2.shape[1]:
            return None
    else:
        return None
    if W is not None and (
        type(W) is not np.ndarray
        or W.dtype != dtype
        or W.ndim not in weight_ndim
        or W.shape[0] != Y2.shape[0]
    ):
        return None
    known = facts(k)
    if known.traced or (known.ard_dims is not None and known.ard_dims != X2.shape[1]):
        return None
    if check_finite and not all_finite(X, None if Y is None else Y2, W):
        return None  # the general path names what is not finite
    if not known.closed_form:
        probe_pair_functions(k, X2.shape[1], dtype)
    return Problem(k, X2, Y2, W, Y is None and not single, one_dim, False)


def prepare(
    k, X, Y=None, W=None, *, single: bool = False, weight_ndim=(1,), check_finite: bool = True
) -> Problem:
    """Validate a transform's arguments and bring them to a common float dtype.

    With ``check_finite``, points and weights in host memory (NumPy, or JAX arrays on the
    CPU) must be finite. Arrays on an accelerator are not checked (that would cost a device
    round trip), nor are tracers inside a caller's jit.
    """
    if isinstance(k, AbstractKernel):
        quick = _numpy_problem(k, X, Y, W, single, weight_ndim, check_finite)
        if quick is not None:
            return quick
    if not isinstance(k, AbstractKernel):
        if not callable(k):
            raise TypeError(
                f"Expected a kernel (e.g. kernelgrad.RBF()) or a pair function fn(x, y), got "
                f"{type(k).__name__}."
            )
        k = as_kernel(k)
    xname = "x" if single else "X"
    jax_in = any(isinstance(a, jax.Array) for a in (X, Y, W))
    X, Y, W = _host_view(X), _host_view(Y), _host_view(W)
    X2, x_1d = _points(xname, X, single=single)
    if Y is None:
        Y2, y_1d, same = X2, x_1d, not single
    else:
        Y2, y_1d = _points("Y", Y)
        same = False
    if x_1d != y_1d:
        shapes = f"{xname} has shape {tuple(np.shape(X))} and Y has shape {tuple(np.shape(Y))}"
        hint = (
            "give x as a scalar and Y as (m,)" if single else "give X as (n,) and Y as (m,)"
        ) + ", or both in the (.., d) form"
        raise ValueError(f"{shapes}: mixed 1-D and d-dimensional points; {hint}.")
    if X2.shape[1] != Y2.shape[1]:
        raise ValueError(
            f"{xname} has shape {tuple(np.shape(X))} (d = {X2.shape[1]}) but Y has shape "
            f"{tuple(np.shape(Y))} (d = {Y2.shape[1]}); expected Y of shape "
            f"(m, {X2.shape[1]})."
        )
    if X2.shape[1] == 0:
        raise ValueError(
            f"{xname} has shape {tuple(np.shape(X))}: points with d = 0 coordinates; expected "
            f"{'(d,) with d >= 1 or a scalar' if single else '(n, d) with d >= 1, or (n,)'}."
        )
    ard = facts(k).ard_dims
    if ard is not None and ard != X2.shape[1]:
        raise ValueError(
            f"The kernel has {ard} per-dimension lengthscales but the points have d = "
            f"{X2.shape[1]}; expected points of shape (n, {ard})."
        )
    arrays = [X2, Y2]
    if W is not None:
        W = _as_float_array("weights", W)
        m = Y2.shape[0]
        if W.ndim not in weight_ndim or W.shape[0] != m:
            expected = " or ".join(["(m,)", "(m, p)"][n - 1] for n in weight_ndim)
            raise ValueError(
                f"weights has shape {tuple(W.shape)}; expected {expected} with m = {m}, "
                "the number of points in Y."
            )
        arrays.append(W)
    if check_finite:
        # Reported in the caller's shapes: index 3 of X of shape (n,), not (3, 0).
        originals = (X, Y, W)
        for name, a, orig in zip((xname, "Y", "weights"), arrays, originals, strict=False):
            if orig is not None and type(a) is np.ndarray:
                require_finite(name, a.reshape(np.shape(orig)))
    # Hyperparameters traced by jax.grad over the kernel make every output a tracer, so such a
    # problem must take the JAX path even when the points are NumPy arrays.
    is_jax = jax_in or facts(k).traced or any(type(a) is not np.ndarray for a in arrays)
    dtype = _common_dtype(arrays, (X, X if Y is None else Y, W))
    if not is_jax:
        arrays = [a.astype(dtype, copy=False) for a in arrays]
    else:
        # JAX's own dtype rules apply on its path: float64 only where x64 is enabled.
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        arrays = [
            a.astype(dtype, copy=False)
            if isinstance(a, np.ndarray)
            else (a if a.dtype == dtype else jnp.asarray(a, dtype))
            for a in arrays
        ]
    X2, Y2 = arrays[0], (arrays[0] if same else arrays[1])
    W2 = arrays[2] if W is not None else None
    if not facts(k).closed_form:
        probe_pair_functions(k, X2.shape[1], dtype)
    return Problem(k, X2, Y2, W2, same, x_1d, is_jax)
