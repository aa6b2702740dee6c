"""Every measured threshold of the engine, in one object per platform.

Each number below is where one way of computing started to beat another in a measurement
(the benchmark that measured it is named with it). They were measured on the CPU; a platform
without measurements of its own starts from the CPU's values, and :data:`GPU` changes only
what is known to differ there.

The engine reads :func:`current`. A caller (or a test) runs with other values by passing a
policy rather than editing module globals::

    import dataclasses, kernelgrad as kg
    with kg.policy.use(dataclasses.replace(kg.policy.current(), tiled_min_pairs=10_000)):
        kg.grad_sum(k, X)          # tiled from 10,000 pairs on

Programs traced under one policy are never reused under another (see
:func:`kernelgrad.execution.compile_cache.jit`), so values that shape a trace (blocks, the
expansion's dimension) take effect at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools

import jax


@dataclasses.dataclass(frozen=True)
class Policy:
    """The engine's thresholds for one platform."""

    # ------------------------------------------------------------------- eager NumPy
    #: Closed-form work on NumPy inputs with at most this many (i, j) pairs (times d for a
    #: jacobian) runs eagerly in NumPy: JAX's fixed cost per call exceeds the whole
    #: computation below it (``benchmarks/crossover.py``).
    eager_max_pairs: int = 40_000
    #: The same for cross-Hessians, counted in output entries (n m d^2).
    eager_cross_hessian_max_entries: int = 200_000
    #: The lean NumPy ``grad`` (:mod:`kernelgrad.execution.eager`) up to this many points: beyond it
    #: the general path's fixed cost no longer matters.
    lean_grad_max_points: int = 4096
    #: The lean Gram matrix and grad map up to this many pairs times (d + 1); beyond it one
    #: jitted XLA program (fused, on every core) is faster. On 2 shared cores (RBF, float64,
    #: interleaved medians), lean against the jitted difference form: the Gram matrix 103
    #: against 132 us at n = 300 and 300 against 275 us at n = 500 (d = 1), 107 against 109
    #: us at n = 200 and 264 against 187 us at n = 300 (d = 3); the grad map 58 against 80 us
    #: at n = 200 and 137 against 105 us at n = 300 (d = 1), 135 against 193 us at n = 200 and
    #: 316 against 286 us at n = 300 (d = 3).
    lean_gram_max_work: int = 240_000
    lean_grad_sum_max_work: int = 120_000
    #: An RBF's lean grad map in d > 1 is factorised, a_i a_j exp(z_i . z_j) (one matrix
    #: product and one exp per pair: ``eager._gaussian_grad_sum``), and beats the jitted
    #: program for longer: up to this many pairs in d >= 3, up to the tiled threshold, and
    #: up to the second number in d = 2. Interleaved medians against kernelgrad's own
    #: compiled call (RBF, float64, Y = X, 2 cores), factorised over compiled: d = 3 0.61,
    #: 0.79, 0.91 and 0.82 at n = 300, 600, 1000 and 1500; d = 8 0.45-0.80; d = 2 0.71 at
    #: n = 300, 1.22 at 600.
    lean_gaussian_grad_sum_max_pairs: tuple[int, int] = (1536 * 1536, 400 * 400)

    # ------------------------------------------------------------- size buckets, hot sizes
    #: Below this many points a dense problem is padded to it.
    min_bucket: int = 16
    #: From this many points on, padding waste costs more than compiling: buckets get finer
    #: (:func:`kernelgrad.execution.padding.dense_bucket`).
    fine_buckets_from: int = 512
    #: Tiled programs are compiled for sizes rounded up to one of this many steps per octave
    #: (:func:`kernelgrad.execution.padding.fine_bucket`): at most 1/32 of padding.
    tiled_buckets_per_octave: int = 32
    #: A host problem's exact sizes get their own program (no padding, specialised to the
    #: kernel's values) from this many calls on: a compile (tens of ms) is earned back.
    hot_calls: int = 64
    #: A hot program is compiled with and without XLA:CPU's YNNPACK fusions, and each takes
    #: this many timed turns on the real arguments (after one untimed call); the faster
    #: stays. Two turns, untimed call none, picked the 3x slower one on a shared machine.
    hot_timed_calls: int = 5
    #: Slices of concrete JAX results up to this size go through host memory: a copy this
    #: small costs less than compiling a slice program for every new n.
    host_slice_max_bytes: int = 1 << 24

    # ------------------------------------------------------------------ closed forms
    #: NumPy sums squared distances from per-dimension differences up to this many
    #: dimensions (exact); above it the expansion |x|^2 + |y|^2 - 2 x.y uses one matmul.
    difference_form_max_dims: int = 8
    #: XLA uses the expansion from this many dimensions on: XLA:CPU fuses its matrix
    #: product, the profile and the sum over j into one tiled kernel (the forum's
    #: vmap(jacfwd) gets its speed at d = 3 from the same fusion).
    xla_expansion_min_dims: int = 2
    #: A weighted grad map in more dimensions than this takes one reverse pass rather than
    #: d forward passes, when no closed form exists.
    forward_max_dims_for_sum: int = 2

    # ------------------------------------------------------------- matrix-free reductions
    #: grad_sum and gram_matvec switch from one dense program to the tiled one above this
    #: many (i, j) pairs (``benchmarks/scale.py --crossover``, RBF, d = 3: below n = m = 1536
    #: the two trade places within noise; from there the tiled program is 1.4-1.8x ahead in
    #: float64, as the dense program's n x m intermediates fall out of cache).
    tiled_min_pairs: int = 1536 * 1536
    #: The same for a closed-form grad map in one dimension on one device, whose dense
    #: program is one fused loop with no (n, m) buffer (RBF, float64, hot sizes, medians of
    #: 4): dense against tiled 3.4 against 4.0 ms at n = m = 3000, 13.9 against 14.8 at
    #: 6000, 24.9 against 26.8 at 8192, 40.4 both at 10000, 2.0 against 0.51 s at 24000.
    tiled_min_pairs_1d: int = 8192 * 8192
    #: The tiles' (rows, columns): from 512 x 2048 to 8 x 131072 ran within 20% on the CPU
    #: (``benchmarks/scale.py --blocks``, n = 2048, m = 131072), 512 x 2048 the fastest in
    #: both dtypes; its tile is 1M pairs (8 MB of float64 coefficients), near the cache.
    tile_blocks: tuple[int, int] = (512, 2048)
    #: The engine's own multi-device paths (tiled reductions, the gradient operator) use at
    #: most this many of this process's devices; None: all of them. 1 keeps every call on
    #: the default device (so does a process that has one).
    max_local_devices: int | None = None
    #: Y and the weights are streamed in column chunks when replicating them on every
    #: device would take more than this many bytes per device.
    replicated_columns_max_bytes: int = 1 << 30
    #: The symmetric (Y = X) grad map, each exp serving (i, j) and (j, i), in d > 1 from
    #: this many points (``benchmarks/crossover.py --sym-n``: 0.98, 0.93 and 0.90 of the
    #: unsymmetric time at 3072, 4096 and 8192 points in d = 3; in d = 1 the fused
    #: unsymmetric program stays faster, 1.08-1.12).
    symmetric_min_points: int = 4096
    #: The same in d >= 3 for a Gaussian profile (RBF) within range of the factorisation
    #: a_i a_j exp(z_i . z_j) (:mod:`kernelgrad.execution.gaussian`), which cuts a block to
    #: one matrix product and one exp (RBF, float64, hot sizes, interleaved medians of 60):
    #: symmetric over the default program 1.43, 1.26, 1.00 and 0.89 at n = 512, 768, 1000 and
    #: 1500 in d = 3, 1.10 and 0.78 at 1000 and 1500 in d = 5; 0.57 at 4096 in d = 3. In
    #: d = 2 the symmetric blocks lost to the factorised unsymmetric tiles (22.6 against
    #: 14.1 ms at 4096, 404 against 305 at 20,000; 73 against 84 at 8192), so an RBF in
    #: d = 2 never takes them.
    symmetric_gaussian_min_points: int = 1536
    #: ``stein.ksd_test`` multiplies the Stein tiles by at most this many (point, draw)
    #: entries of bootstrap signs per pass (128 MB of float64 for the pass's output).
    stein_bootstrap_entries: int = 1 << 24
    #: Rows per symmetric block: a block x block float64 coefficient matrix (512 KiB) stays
    #: in L2 cache.
    symmetric_block: int = 256

    # -------------------------------------------------------------- gradient operator, GP
    #: (rows, columns) of the AD gradient-kernel matvec: its tape holds rows x cols x d
    #: numbers, 256 x 256 x 100 float64 = 52 MB.
    gradient_ad_blocks: tuple[int, int] = (256, 256)
    #: (rows, columns) of the closed-form gradient-kernel matvec, whose tiles are matmuls
    #: with an inner dimension of d: at n = 1000, d = 100 on 2 cores, medians of 7 runs gave
    #: 74 ms for 16 x 65536, 61 ms for 256 x 1024, 60 ms for 512 x 2048 and 131 ms for
    #: 1024 x 1024.
    gradient_closed_blocks: tuple[int, int] = (256, 2048)
    #: A product with many right-hand sides takes them this many at a time: each tile's
    #: batched intermediates hold rows x cols x chunk numbers (256 x 2048 x 4 float64 =
    #: 16 MB), where all 1100 columns of a GPyTorch predictive solve at n = 1000, d = 10
    #: at once asked for over 24 GB. On 2 cores 4 was fastest of 1-17 for an RBF in every
    #: case timed: 17 columns at n = 5000, d = 20 (an iterative fit's data and probes) took
    #: 2.3 s against 4.9 s in chunks of 16; 64 columns at n = 2000, d = 20 1.2 s against
    #: 1.8 s; 17 columns at n = 3000, d = 3 0.52 s against 1.7 s.
    gradient_rhs_chunk: int = 4
    #: (rows, columns) and vectors at a time of the shared-coefficient tile (an RBF's
    #: closed-form product, ``gradient_kernel.shared_tile``), whose (rows, chunk, cols)
    #: array is 32 MB here. Against the per-vector tile's defaults above, interleaved on 2
    #: cores (RBF, float64): 256 x 512 with all 17 vectors at once took 0.63, 0.66, 0.34 and
    #: 0.53 of its time at (n, d, vectors) = (2048, 20, 17), (5000, 20, 17), (2000, 10, 4)
    #: and (3000, 3, 17), and 0.94-1.2 at (1000, 100, 17) (noisy); 256 x 2048 did best at
    #: n = 5000 (0.55) and worse elsewhere. Chunks of 16, 32 and 64 ran within noise of
    #: each other (0.61-0.71 at n = 2000, d = 20). One vector keeps the per-vector tile.
    gradient_shared_blocks: tuple[int, int] = (256, 512)
    gradient_shared_rhs_chunk: int = 32
    #: A CG solve for one right-hand side works out the closed-form tile of the whole
    #: covariance once, not on every product, when its coefficient arrays take at most this
    #: many bytes (an RBF's one n x n array: n = 4096 in float64). At n = 1000, d = 100 a
    #: product took 0.88-0.90 of the matrix-free one's time in float64 and 0.65-0.91 in
    #: float32 (three noisy runs each).
    cached_coefficients_max_bytes: int = 1 << 27
    #: ``GradientGP.condition(method="auto")`` factorises the dense covariance up to this
    #: many observations: 4000^2 float64 is 128 MB and a second of work.
    cholesky_max: int = 4000
    #: ``method="auto"`` takes the Woodbury solve (values and full gradients, d >= n) up to
    #: this many points: its n^2 x n^2 capacity matrix is then 134 MB and n^6 = 7e10 flops.
    woodbury_max_points: int = 64
    #: Rank of the pivoted-Cholesky preconditioner of ``fit(method="iterative")``'s
    #: conjugate gradients (0: Jacobi). ``benchmarks/iterative_fit.py`` at n = 2000, d = 20
    #: (17 right-hand sides, tol 1e-5): 80-88 iterations a step with Jacobi, 48-51 with 100.
    preconditioner_rank: int = 100

    def __hash__(self) -> int:
        # Every repeat call's cache key holds the policy, and hashing some 30 fields took
        # 0.5 us of a hot call's 4 us of Python; the fields are frozen, so once is enough.
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = hash(dataclasses.astuple(self))
            object.__setattr__(self, "_hash", value)
            return value

    def __getstate__(self) -> dict:
        # The cached hash stays in its process: hash(None) differs from one to the next.
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


#: Measured on 2-core x86 CPUs (see each field).
CPU = Policy()

#: GPUs want bigger tiles to fill the device: 1024 x 8192 is 8M pairs per step
#: (``benchmarks/gpu_scale.py`` sweeps others), and more right-hand sides at a time (the
#: CPU's earlier 16, not measured on a GPU; the shared tile's (rows, chunk, cols) array is
#: then 256 MB of float64). Everything else is the CPU's until measured.
GPU = dataclasses.replace(
    CPU,
    tile_blocks=(1024, 8192),
    gradient_closed_blocks=(1024, 8192),
    gradient_rhs_chunk=16,
    gradient_shared_blocks=(1024, 2048),
    gradient_shared_rhs_chunk=16,
)

_chosen: contextvars.ContextVar[Policy | None] = contextvars.ContextVar(
    "kernelgrad_policy", default=None
)


def for_platform(platform: str) -> Policy:
    """The built-in policy for a JAX platform name ("cpu", "gpu", "cuda", "rocm", ...)."""
    return GPU if platform in ("gpu", "cuda", "rocm") else CPU


@functools.cache
def _default() -> Policy:
    # JAX fixes its default backend when it first starts one.
    return for_platform(jax.default_backend())


def current() -> Policy:
    """The policy in force: the innermost :func:`use`, else the default backend's."""
    chosen = _chosen.get()
    return _default() if chosen is None else chosen


@contextlib.contextmanager
def use(policy: Policy):
    """Run the enclosed calls under ``policy`` (this thread or task only)."""
    if not isinstance(policy, Policy):
        raise TypeError(
            f"use() takes a kernelgrad.policy.Policy, got {type(policy).__name__}; build one "
            "with dataclasses.replace(kernelgrad.policy.current(), field=value)."
        )
    token = _chosen.set(policy)
    try:
        yield policy
    finally:
        _chosen.reset(token)


__all__ = ["CPU", "GPU", "Policy", "current", "for_platform", "use"]
