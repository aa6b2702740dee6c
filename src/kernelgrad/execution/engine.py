"""Where the arithmetic runs: eager NumPy, or one jitted XLA program per size bucket.

* **Eager NumPy** for closed-form work on small NumPy inputs. There is no trace and no compile,
  so the first call costs what every call costs. JAX's fixed cost per call (dispatch, transfer)
  exceeds the whole computation below the policy's ``eager_max_pairs`` pairs (measured by
  ``benchmarks/crossover.py``; every threshold here is a field of
  :mod:`kernelgrad.execution.policy`).
* **Symmetric blocks** for a closed-form ``grad_sum`` with Y = X from
  a measured size on (:func:`symmetric.applies`): each exp serves (i, j) and (j, i).
* **Jitted XLA** for everything else, and for anything that needs AD. Point counts are padded
  up to size buckets (:func:`bucket`) so that a growing n compiles a handful of programs,
  not one per n. Padded points are copies of a real point, carrying weight 0, so they never
  make a NaN; their outputs are sliced off. For points in host memory (NumPy, or JAX on one
  CPU) padding and slicing are NumPy views, a JAX caller's result is transferred once, and
  each program is compiled ahead of time and called directly (:func:`_executable`). A size
  called ``hot_calls`` times with the same hyperparameters runs unpadded, in a program
  specialised to their values (:func:`_sizes`); a NumPy caller's later calls of that
  layout then go to it straight from the transform (:mod:`.repeat`). Programs that trace a
  pair function compile without XLA:CPU's YNNPACK fusions (:mod:`.xla_options`).

NumPy float64 inputs run under a *local* ``jax.enable_x64`` context: float64-accurate results
without touching the user's global JAX configuration.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import rules
from . import compile_cache, gaussian, ops, padding, policy, sharding, symmetric, xla_options
from .identity import IdentityCache
from .inputs import Problem, facts, local_x64


def _namespace_call(op: str, method: str, kernel, xp, X, Y, W):
    return ops.get(op).compute(method, kernel, xp, X, Y, W)


@compile_cache.jit(static_argnames=("op", "method"))
def _compiled(kernel, X, Y, W, *, op, method):
    """``Y=None`` means Y = X, traced as one argument so that XLA shares the work on both."""
    return _namespace_call(op, method, kernel, jnp, X, X if Y is None else Y, W)


#: How many kernels' flattened parts, and how many compiled programs, are kept.
CACHE_SIZE = 256

#: Compiled programs, per policy (which shapes their traces).
_EXECUTABLES = IdentityCache()


def _remember(cache: dict, key, value):
    if len(cache) >= CACHE_SIZE:
        cache.pop(next(iter(cache)))  # the oldest entry
    cache[key] = value
    return value


def _flatten(kernel) -> tuple:
    leaves, treedef = jax.tree.flatten(kernel)
    signature = (treedef, tuple((np.shape(a), np.result_type(a)) for a in leaves))
    numpy_leaves = all(type(a) is np.ndarray for a in leaves)
    values = tuple(a.tobytes() for a in leaves) if numpy_leaves else None
    return leaves, signature, values


_KERNEL_PARTS = IdentityCache(CACHE_SIZE)


def _parts(kernel) -> tuple:
    """(leaves, signature, values) of a concrete kernel, worked out once per kernel.

    Flattening an equinox module costs a microsecond or more per call, as does letting jit
    flatten it again. ``values`` are the leaves' bytes when all of them are NumPy arrays
    (else None): what a program specialised to these hyperparameters is keyed on.
    """
    return _KERNEL_PARTS.get(kernel, _flatten)


def _executable(op: str, method: str, kernel, X, Y, W, *, specialise: bool = False):
    """``_compiled``'s program for these arguments, compiled ahead of time and kept, as a
    call ``(X, Y, W)`` with the kernel's leaves bound (Y = None: Y is X).

    Calling the compiled executable directly skips, on every call, what only compiling
    needs: the cache scope, the x64 and rank-promotion contexts, and re-flattening the
    kernel. With ``specialise`` (for hot calls, see :func:`_sizes`) the hyperparameters are
    constants of the program, so XLA folds them (a unit variance costs nothing); it is keyed
    on their values, so a kernel with other values never reuses it.
    """
    leaves, signature, values = _parts(kernel)
    specialise = specialise and values is not None
    # Y = X is traced as one argument: XLA then shares the work on Y with the work on X.
    Y = None if Y is X else Y
    shapes = (X.shape, X.dtype, None if Y is None else Y.shape, None if W is None else W.shape)
    executables = _EXECUTABLES.get(policy.current(), lambda chosen: {})
    key = (op, method, signature, values if specialise else None, shapes)
    exe = executables.get(key)
    if exe is None:
        treedef = signature[0]

        def program(leaves, X, Y, W):
            Y = X if Y is None else Y
            return _namespace_call(op, method, treedef.unflatten(leaves), jnp, X, Y, W)

        with local_x64(X.dtype), jax.numpy_rank_promotion("allow"):
            if specialise:
                # A new jit each time: a jit's trace cache does not know the policy.
                def lower():
                    return jax.jit(lambda X, Y, W: program(leaves, X, Y, W)).lower(X, Y, W)

                lowered = [lower()]
                other = _other_geometry(method, X.shape[1])
                if other is not None:
                    with policy.use(other):
                        alternative = lower()
                    # Kernels without squared distances trace the same program either way.
                    if alternative.as_text() != lowered[0].as_text():
                        lowered.append(alternative)
                exe = _without_leaves(_faster(lowered, (X, Y, W)))
            else:
                lowered = jax.jit(program).lower(leaves, X, Y, W)
                exe = compile_cache.compile(lowered, xla_options.for_method(method))
        _remember(executables, key, exe)
    if X.dtype == np.float64:

        def program(X, Y, W):
            # The executable checks its float64 arguments against the x64 mode of the call.
            with jax.enable_x64(True):
                return exe(leaves, X, Y, W)

        return program
    return lambda X, Y, W: exe(leaves, X, Y, W)


def _other_geometry(method: str, d: int):
    """The policy that traces a closed form's squared distances the other way, or None.

    XLA sums them from per-dimension differences below the policy's
    ``xla_expansion_min_dims`` and by the expansion |x|^2 + |y|^2 - 2 x.y (one matmul) from
    there on. Which is faster depends on n as well as d: at d = 3 a 300-point Gram matrix
    took 156 us in the difference form's one fused loop and 206 us by the expansion's five
    steps (centring, norms, matmul, the clamped exponent); at n = 1000 and 3000 the two were
    within 5%. So a hot program in few dimensions is traced both ways and timed
    (:func:`_faster`).
    Both forms are accurate (the expansion is centred); the difference form is exact at
    duplicates. Beyond NumPy's ``difference_form_max_dims`` only the expansion is tried.
    """
    chosen = policy.current()
    if method != "closed" or d > chosen.difference_form_max_dims:
        return None
    if d >= chosen.xla_expansion_min_dims:
        return replace(chosen, xla_expansion_min_dims=d + 1)
    return None


def _faster(lowered: list, args):
    """The fastest of the ``lowered`` programs, each compiled with and without XLA:CPU's
    YNNPACK fusions.

    Those fusions make most closed forms 1.5-3x faster and most pair-function programs
    several times slower (:mod:`.xla_options`), which new sizes go by. Only hot programs
    get here, so timing every candidate on the real arguments is paid once for many calls.

    Each candidate is called once untimed (a first call sets up its fusions), then they
    take turns, and each keeps its fastest of the policy's ``hot_timed_calls``: with two calls
    each and no warm-up, a shared machine's noise picked the slower program for a 300-point
    grad map in one dimension (200 against 55 us).
    """
    candidates = []
    for one in lowered:
        candidates.append(compile_cache.compile(one))
        if jax.default_backend() == "cpu":
            try:
                candidates.append(compile_cache.compile(one, xla_options.NO_YNN))
            except Exception:  # an XLA without the option: keep its default
                pass
    if len(candidates) == 1:
        return candidates[0]
    for exe in candidates:
        jax.block_until_ready(exe(*args))
    best = [float("inf")] * len(candidates)
    for _ in range(policy.current().hot_timed_calls):
        for i, exe in enumerate(candidates):
            start = time.perf_counter()
            jax.block_until_ready(exe(*args))
            best[i] = min(best[i], time.perf_counter() - start)
    return candidates[best.index(min(best))]


def _without_leaves(exe):
    """A specialised executable called like the general one (its leaves are constants)."""
    return lambda leaves, X, Y, W: exe(X, Y, W)


def unit_weights(p: Problem):
    """Ones for the m points of Y: NumPy, unless the points are traced."""
    if isinstance(p.X, jax.core.Tracer):
        return jnp.ones(p.m, p.dtype)
    # NumPy even for JAX callers: the engine pads it on the host and the compiled call
    # transfers it (jnp.ones would compile a program per m).
    return np.ones(p.m, p.dtype)


def _weighted(op: str, p: Problem) -> Problem:
    """``p`` with unit weights filled in where a grad_sum has none (padding needs them)."""
    return replace(p, W=unit_weights(p)) if op == "grad_sum" and p.W is None else p


def route(op: str, method: str, p: Problem) -> str:
    """Which program runs ``op`` on a problem that is not eager NumPy.

    ``"sharded"`` (X's rows split over devices by the caller: computed there, returned
    sharded the same way), ``"symmetric"`` (Y = X blocks, each exp serving (i, j) and
    (j, i)), ``"tiled"`` (matrix-free, sharded over the local devices), ``"traced"`` (inside
    the caller's own jit or vmap: their shapes, no padding) or ``"dense"`` (one program per
    size bucket).
    """
    traced = any(isinstance(a, jax.core.Tracer) for a in (p.X, p.Y, p.W))
    reduction = ops.get(op).tiled is not None  # a sum over j, with a matrix-free form
    if reduction and sharding.row_sharding(p.X) is not None:
        return "sharded"
    if (
        op == "grad_sum"
        and method == "closed"
        and p.same
        and not traced
        and sharding.local_mesh() is None
        and symmetric.applies(p.kernel, p.X)
    ):
        return "symmetric"
    if reduction and p.n * p.m > _tiled_min_pairs(op, method, p):
        return "tiled"
    return "traced" if traced else "dense"


def _factorised(op: str, method: str, p: Problem):
    """(method, X, Y) for a tiled reduction: ``"gaussian"`` with X and Y centred on the host
    where :mod:`kernelgrad.execution.gaussian`'s factorisation applies (closed-form grad_sum
    and gram_matvec of an RBF on host points within its range), else as they came."""
    if op in ("grad_sum", "gram_matvec") and method == "closed" and _on_host(p):
        centred = gaussian.centred_in_range(p.kernel, p.X, None if p.same else p.Y)
        if centred is not None:
            return ("gaussian", *centred)
    return method, p.X, p.Y


def _tiled_min_pairs(op: str, method: str, p: Problem) -> int:
    """Pairs above which a reduction runs tiled: later for a one-device grad map that XLA
    fuses into one loop in one dimension, whose dense program holds no (n, m) buffer."""
    chosen = policy.current()
    fused = op == "grad_sum" and method == "closed" and rules.fused_1d_grad_sum(p.kernel, p.d)
    if fused and p.n * p.m <= chosen.tiled_min_pairs_1d and sharding.local_mesh() is None:
        return chosen.tiled_min_pairs_1d
    return chosen.tiled_min_pairs


def _padded(op: str, method: str, p: Problem, remember=None):
    """The XLA result for ``p``, possibly with padded rows (and columns) still on it.

    Returns (result, cropped): whether the result already has exactly n (and m) rows.
    ``remember`` as for :func:`_dense`.
    """
    how = route(op, method, p)
    hot = _count_call(op, method, p)
    if how == "dense":
        # Host problems need no context here: see _executable.
        return _dense(op, method, p, hot, remember), False
    # The rules broadcast NumPy-style ((n, d) against (d,)); a user's strict
    # jax_numpy_rank_promotion is about their code, not ours. Host problems (NumPy) get
    # their float64 from a local x64 context.
    x64 = contextlib.nullcontext() if p.is_jax else local_x64(p.dtype)
    if how != "traced":  # blocks and padded columns carry weights
        p = _weighted(op, p)
    with jax.numpy_rank_promotion("allow"), x64:
        if how == "sharded":
            return sharding.along_rows(op, method, p.kernel, p.X, p.Y, p.W), True
        if how == "symmetric":
            return symmetric.run(p.kernel, p.X, p.W), False
        if how == "tiled":
            # Matrix-free (and multi-device when there are several); pads to its own buckets.
            # Hot sizes run unpadded: the tiles take ragged sizes.
            method, X, Y = _factorised(op, method, p)
            return sharding.tiled(op, method, p.kernel, X, Y, p.W, pad=not hot), False
        return _compiled(p.kernel, p.X, p.Y, p.W, op=op, method=method), True


_calls_per_size: dict[tuple, int] = {}


def _sizes(p: Problem, hot: bool) -> tuple[int, int]:
    """(N, M): the sizes a dense program runs on.

    A new size runs padded to its bucket, so that a growing n compiles a handful of programs.
    A size called the policy's ``hot_calls`` times with the same kernel values (a loop at fixed n)
    is *hot*: it gets a program of its own, specialised to those values, for one more
    compile (tens of milliseconds, so only for calls made often enough to earn it back),
    then no padded pairs and no hyperparameter arithmetic per pair on any later call. One
    point (grad) is never padded: a program per m at most, and no 16x wasted rows.
    """
    if hot:
        return p.n, p.m
    N = 1 if p.n == 1 else padding.dense_bucket(p.n)
    return N, N if p.same else padding.dense_bucket(p.m)


def _size_key(op: str, method: str, p: Problem) -> tuple:
    """Calls are counted per sizes and per kernel values: a loop over new hyperparameters
    (a GP fit) never makes a size hot, so it never pays for specialised programs."""
    _, signature, values = _parts(p.kernel)
    return (op, method, p.n, p.m, p.same, p.d, p.dtype, signature, values)


def _count_call(op: str, method: str, p: Problem, *, count: bool = True) -> bool:
    """Count one more call of a host problem (unless not ``count``); whether it is hot."""
    if p.is_jax:
        return False
    key = _size_key(op, method, p)
    hot = policy.current().hot_calls
    if not count:
        return _calls_per_size.get(key, 0) >= hot
    return _remember(_calls_per_size, key, _calls_per_size.pop(key, 0) + 1) >= hot


def _dense(op: str, method: str, p: Problem, hot: bool, remember=None):
    """One program for the whole problem: on points padded to size buckets, or, once the
    size is ``hot``, on the exact points in a program specialised to the kernel's values.

    A hot host problem hands that program to ``remember(program)``, if given: the caller's
    later calls of the same layout can then go to it directly (:mod:`.repeat`).
    """
    N, M = _sizes(p, hot)
    if not hot:
        # Padded columns must carry weight 0; and a bucket's program takes weights whether
        # or not this n happens to need padding, so that it is compiled once.
        p = _weighted(op, p)
    X = padding.pad_rows(p.X, N, True)
    Y = X if p.same else padding.pad_rows(p.Y, M, True)
    W = None if p.W is None else padding.pad_rows(p.W, M, False)
    if not p.is_jax:
        program = _executable(op, method, p.kernel, X, Y, W, specialise=hot)
        if hot and remember is not None:
            remember(program)
        return program(X, None if Y is X else Y, W)
    with jax.numpy_rank_promotion("allow"):
        return _compiled(p.kernel, X, None if p.same else Y, W, op=op, method=method)


def _crop(out, op: str, p: Problem):
    """The first n rows (and m columns for pairwise ops) of a padded host result (a view)."""
    if ops.get(op).pairwise:
        return out[: p.n, : p.m]
    return out[: p.n]


def _on_host(p: Problem) -> bool:
    """Whether the points are concrete arrays in host memory: NumPy, or JAX on one CPU.

    For these, padding, cropping and reshaping are NumPy views (no per-n compiles, no
    dispatch), and only the final result is transferred back to a JAX caller.
    """
    if not p.is_jax:
        return True
    if facts(p.kernel).traced:
        return False
    for a in (p.X, p.Y, p.W):
        if a is None or isinstance(a, np.ndarray):
            continue
        if isinstance(a, jax.core.Tracer) or not padding.on_one_cpu(a):
            return False
    return True


def run(op: str, method: str, p: Problem, finish=None, remember=None):
    """Compute ``op`` by ``method`` on a validated problem, in the caller's array type.

    ``finish`` (indexing only: a squeeze, a row) is applied to the cropped result before
    it is handed back, so that for host-resident problems it is a NumPy view, not a JAX
    dispatch. ``remember`` (from :func:`.repeat.recorder`) is called with
    ``(program, p, finish)`` when a NumPy caller's problem runs in a hot exact-size program.
    """
    if not _on_host(p):
        out, cropped = _padded(op, method, p)
        if not cropped:
            out = padding.crop(out, p.n, p.m if ops.get(op).pairwise else None)
        return out if finish is None else finish(out)
    caller_is_jax = p.is_jax
    if caller_is_jax:
        # Zero-copy views of the CPU buffers.
        W = None if p.W is None else np.asarray(p.W)
        p = replace(p, X=np.asarray(p.X), Y=np.asarray(p.Y), W=W, is_jax=False)
    if not caller_is_jax and _runs_eagerly(op, method, p):
        out = _namespace_call(op, method, p.kernel, np, p.X, p.Y, _weighted(op, p).W)
    else:
        keep = None
        if remember is not None and not caller_is_jax:
            keep = lambda program: remember(program, p, finish)  # noqa: E731
        padded, _ = _padded(op, method, p, keep)
        if isinstance(padded, jax.core.Tracer):
            # Host points closed over inside a caller's jit: the jitted routes (tiled,
            # symmetric) were staged into their trace, so the result is theirs to finish.
            out = padding.crop(padded, p.n, p.m if ops.get(op).pairwise else None)
            return out if finish is None else finish(out)
        out = _crop(np.asarray(padded), op, p)
    out = out if finish is None else finish(out)
    # A JAX caller gets a JAX array, transferred once (jnp.asarray would compile per shape).
    return jax.device_put(out) if caller_is_jax else out


def _runs_eagerly(op: str, method: str, p: Problem) -> bool:
    """Whether a host problem with NumPy in runs in NumPy, with no compile."""
    record = ops.get(op)
    return method == "closed" and record.eager_work(p.n, p.m, p.d) <= record.eager_limit(
        policy.current()
    )


def plan(op: str, method: str, p: Problem) -> tuple[str, tuple[int, int] | None]:
    """How :func:`run` computes ``op`` on ``p``: (engine, padded sizes or None).

    The engine is ``"eager"`` (NumPy, no compile) or one of :func:`route`'s programs; a
    ``"dense"`` program runs on points padded to (N, M).
    """
    if _on_host(p) and not p.is_jax and _runs_eagerly(op, method, p):
        return "eager", None
    how = route(op, method, p)
    if how != "dense":
        return how, None
    return how, _sizes(p, _count_call(op, method, p, count=False))
