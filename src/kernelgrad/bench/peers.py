"""The competing implementations (peers), the inputs and the float64 reference they are checked on.

A *case* is one computation at one size: ``op`` is ``"kernel"`` (the Gram matrix), ``"grad"``
(d/dx k(x_1, y_j) for every j, the forum's ``grad_kernel``) or ``"grad_map"`` (the summed
``grad_kernel_map``, G_i = sum_j d/dx_i k(x_i, x_j)). ``kernel`` is ``"forum"`` (the posted
kernel, bug kept, d = 1 only) or ``"rbf"`` (exp(-0.5 |x - y|^2)).

A peer turns a case into a zero-argument callable that returns a *finished* result (JAX:
``block_until_ready``; torch on a GPU: ``cuda.synchronize``), so that timing it times the work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg
from kernelgrad.execution import reductions

from . import forum
from .hand import numpy_closed_form, xla_closed_form

OPS = ("kernel", "grad", "grad_map")
OP_LABELS = {"kernel": "kernel", "grad": "grad", "grad_map": "grad map"}


@dataclass(frozen=True)
class Case:
    """One computation at one size, dtype and device."""

    op: str
    n: int
    d: int
    dtype: str = "float64"
    kernel: str = "rbf"
    device: str = "cpu"

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


def points(case: Case) -> np.ndarray:
    """The inputs, in float64: the forum's ``linspace(-1, 1, n)`` for d = 1, else seeded uniform."""
    if case.d == 1:
        return np.linspace(-1.0, 1.0, case.n)
    return np.random.default_rng(0).uniform(-1.0, 1.0, (case.n, case.d))


def reference(case: Case, X: np.ndarray) -> np.ndarray:
    """The exact answer in float64, from the difference form (no cancellation), row block by block.

    Shapes follow the forum: (n, n) for the kernel; (n,) for grad and grad map when d = 1,
    else (n, d).
    """
    X2 = X.reshape(case.n, -1)
    if case.op == "grad":
        return _reference_rows(case, X2[:1], X2, grad=True)[0].reshape(X.shape)
    # Row blocks of at most 2^22 pairs x dimensions: 32 MiB per temporary at any n.
    block = max(1, min(256, (1 << 22) // (case.n * case.d)))
    rows = [
        _reference_rows(case, X2[i : i + block], X2, grad=case.op == "grad_map")
        for i in range(0, case.n, block)
    ]
    if case.op == "kernel":
        return np.concatenate(rows)
    return np.concatenate([r.sum(axis=1) for r in rows]).reshape(X.shape)


def _reference_rows(case: Case, A: np.ndarray, B: np.ndarray, grad: bool) -> np.ndarray:
    """k(a_i, b_j) as (r, m), or its gradient in a_i as (r, m, d)."""
    if case.kernel == "forum":
        # The posted kernel, k(x, y) = exp(-0.5 (x + y - 2 x y)), so dk/dx = k (y - 1/2).
        a, b = A[:, :1], B[:, 0][None, :]
        k = np.exp(-0.5 * (a + b - 2.0 * a * b))
        return (k * (b - 0.5))[:, :, None] if grad else k
    diff = A[:, None, :] - B[None, :, :]
    k = np.exp(-0.5 * np.sum(diff * diff, axis=2))
    return -k[:, :, None] * diff if grad else k


def forum_pair(x, y):
    """The posted kernel as a pair function on points of shape (1,), bug kept."""
    return jnp.exp(-0.5 * jnp.sum(-2.0 * x * y + (x + y)))


class Peer:
    """A competing implementation. Subclasses fill in :meth:`prepare` and the estimates."""

    name = ""
    label = ""
    #: The grad map builds n^3 intermediates (reverse-mode Jacobians of a tall output).
    cubic = False
    #: The computations it takes part in.
    ops: tuple[str, ...] = OPS
    #: It runs the forum's kernel as posted, so it has a column in the replica.
    replica = True

    def unavailable(self, device: str) -> str | None:
        """Why this peer cannot run on ``device`` here, or None."""
        return None

    def context(self, case: Case):
        """The context every call of this peer runs in."""
        return contextlib.nullcontext()

    def prepare(self, case: Case, X: np.ndarray) -> Callable[[], Any]:
        raise NotImplementedError

    def to_numpy(self, out) -> np.ndarray:
        return np.asarray(out)

    def path(self, case: Case) -> str | None:
        """How the peer computes the case, where it chooses (kernelgrad does)."""
        return None

    def estimate_bytes(self, case: Case) -> int:
        """A generous estimate of the peak working memory, used to skip before running."""
        n, d, b = case.n, case.d, case.itemsize
        if case.op == "grad":
            return 8 * n * d * b
        if case.op == "kernel":
            return 3 * n * n * b
        return (2 * n**3 + 4 * n * n * d) * b if self.cubic else 4 * n * n * d * b

    def measured_bytes(self, case: Case, X: np.ndarray, call) -> tuple[int | None, str]:
        """Peak working memory of one call and how it was measured; (None, why) if it cannot be."""
        return None, "not measurable"

    def planned_bytes(self, case: Case, X: np.ndarray) -> tuple[int, float] | None:
        """The memory a compiled program will use, known before it runs: (bytes, compile s).

        Only compiled peers know; the others return None and are judged by their estimate.
        """
        return None


def _tracemalloc_peak(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _xla_bytes(jitted, *args) -> tuple[int | None, str]:
    """Arguments + outputs + temporaries of XLA's buffer assignment for the compiled program."""
    return _compiled_bytes(jitted.lower(*args).compile())


def _compiled_bytes(compiled) -> tuple[int | None, str]:
    stats = compiled.memory_analysis()
    if stats is None:
        return None, "not reported by XLA"
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return int(total), "XLA buffer assignment"


def jax_device(device: str):
    return jax.devices("gpu" if device == "gpu" else "cpu")[0]


class ForumJax(Peer):
    """The forum's JAX code; ``reverse`` swaps jacfwd for jacrev, as the forum did."""

    def __init__(self, reverse: bool):
        self.reverse = reverse
        self.cubic = reverse
        self.name = "forum-jacrev" if reverse else "forum-jacfwd"
        self.label = "forum JAX jacrev" if reverse else "forum JAX jacfwd"

    def context(self, case):
        return jax.enable_x64(case.dtype == "float64")

    def _program(self, case: Case):
        kernel = forum.rbf_kernel if case.kernel == "forum" else forum.rbf_kernel_fixed
        if case.op == "kernel":
            return kernel, ()
        if case.op == "grad":
            return (forum.grad_kernel_rev if self.reverse else forum.grad_kernel), (kernel,)
        return (forum.grad_kernel_map_rev if self.reverse else forum.grad_kernel_map), (kernel,)

    def _inputs(self, case, X):
        return jax.device_put(jnp.asarray(X, dtype=case.dtype), jax_device(case.device))

    def prepare(self, case, X):
        fn, static = self._program(case)
        Xj = self._inputs(case, X)
        if case.op == "kernel":
            return lambda: fn(Xj, Xj).block_until_ready()
        return lambda: fn(Xj, *static).block_until_ready()

    def _args(self, case, X):
        fn, static = self._program(case)
        Xj = self._inputs(case, X)
        return fn, ((Xj, Xj) if case.op == "kernel" else (Xj, *static))

    def measured_bytes(self, case, X, call=None):
        fn, args = self._args(case, X)
        return _xla_bytes(fn, *args)

    def planned_bytes(self, case, X):
        # Compiling allocates none of the program's buffers, and a later call reuses the
        # executable, so the compile time is part of that call's cost.
        fn, args = self._args(case, X)
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        seconds = time.perf_counter() - t0
        nbytes, _ = _compiled_bytes(compiled)
        return None if nbytes is None else (nbytes, seconds)


class ForumLoop(ForumJax):
    """The forum's Julia broadcast in JAX: one jitted jacfwd call per point, rows stacked.

    Only the grad map is broadcast in the forum; the kernel and grad have nothing to loop over.
    """

    ops = ("grad_map",)
    replica = False

    def __init__(self):
        super().__init__(reverse=False)
        self.name = "loop-jacfwd"
        self.label = "jacfwd called per point (the forum's Julia broadcast, in JAX)"

    def prepare(self, case, X):
        Xj = self._inputs(case, X)
        # Host rows, so that each call pays what one broadcast element pays: its own dispatch.
        points = list(X.astype(case.dtype))
        # The result is a NumPy array: every row was finished before it was stacked.
        return lambda: forum.grad_kernel_map_broadcast(points, Xj, forum.rbf_kernel_fixed)

    def estimate_bytes(self, case):
        # The n rows of (n, d) derivatives, then their stack: two (n, n, d) arrays at the peak.
        return 2 * case.n * case.n * case.d * case.itemsize

    def measured_bytes(self, case, X, call=None):
        return None, "not measurable"  # n small programs and a NumPy stack: the estimate


class TorchFunc(Peer):
    """torch.func ``jacfwd`` / ``jacrev`` over the forum's kernel, ported line by line."""

    def __init__(self, reverse: bool):
        self.reverse = reverse
        self.cubic = reverse
        self.name = "torch-jacrev" if reverse else "torch-jacfwd"
        self.label = "torch.func jacrev" if reverse else "torch.func jacfwd"

    def unavailable(self, device):
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed (pip install torch==2.13.0)"
        if device == "gpu":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA device"
        return None

    def prepare(self, case, X):
        import torch
        from torch.func import jacfwd, jacrev, vmap

        dev = "cuda" if case.device == "gpu" else "cpu"
        Xt = torch.as_tensor(X, dtype=getattr(torch, case.dtype), device=dev)
        d = case.d

        def kernel(A, B):
            A, B = A.reshape(-1, d), B.reshape(-1, d)
            if case.kernel == "forum":
                sq = A + B.T  # the posted bug, as in the JAX replica
            else:
                sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :]
            return torch.exp(-0.5 * ((-2 * A @ B.T) + sq).squeeze())

        jac = jacrev if self.reverse else jacfwd
        if case.op == "kernel":
            fn = lambda: kernel(Xt, Xt)  # noqa: E731
        elif case.op == "grad":
            fn = lambda: jac(kernel)(Xt[:1], Xt)  # noqa: E731
        else:
            fn = lambda: vmap(jac(kernel), in_dims=(0, None))(Xt, Xt).sum(1)  # noqa: E731
        if dev == "cpu":
            return fn

        def synced():
            out = fn()
            torch.cuda.synchronize()
            return out

        return synced

    def to_numpy(self, out):
        return out.detach().cpu().numpy()

    def measured_bytes(self, case, X, call):
        if case.device != "gpu":
            return None, "not measured on CPU"
        import torch

        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        return torch.cuda.max_memory_allocated() - base, "torch.cuda peak"


class NumpyClosedForm(Peer):
    """:func:`numpy_closed_form`, eager NumPy on the CPU."""

    name = "numpy"
    label = "NumPy closed form"
    replica = False  # written for the RBF kernel

    def unavailable(self, device):
        return "NumPy runs on the CPU only" if device == "gpu" else None

    def prepare(self, case, X):
        if case.kernel != "rbf":
            raise ValueError("the NumPy closed form is written for the RBF kernel")
        Xd = X.astype(case.dtype)
        return lambda: numpy_closed_form(case.op, Xd)

    def measured_bytes(self, case, X, call):
        return _tracemalloc_peak(call), "tracemalloc"


class HandXla(Peer):
    """:func:`~kernelgrad.bench.hand.xla_closed_form`, jitted, on JAX arrays (as the forum's)."""

    replica = False  # written for the RBF kernel

    def __init__(self, form: str):
        self.form = form
        self.name = f"xla-{form}"
        self.label = f"XLA closed form, {'difference' if form == 'diff' else 'matmul'} form"

    def context(self, case):
        return jax.enable_x64(case.dtype == "float64")

    def prepare(self, case, X):
        if case.kernel != "rbf":
            raise ValueError("the XLA closed form is written for the RBF kernel")
        fn = xla_closed_form(case.op, self.form)
        Xj = jax.device_put(jnp.asarray(X, dtype=case.dtype), jax_device(case.device))
        return lambda: fn(Xj).block_until_ready()

    def measured_bytes(self, case, X, call=None):
        Xj = jnp.asarray(X, dtype=case.dtype)
        return _xla_bytes(xla_closed_form(case.op, self.form), Xj)


class Kernelgrad(Peer):
    """kernelgrad's public transforms; ``jax_arrays`` feeds JAX arrays instead of NumPy ones."""

    def __init__(self, jax_arrays: bool):
        self.jax_arrays = jax_arrays
        self.name = "kernelgrad-jax" if jax_arrays else "kernelgrad"
        self.label = "kernelgrad (JAX in)" if jax_arrays else "kernelgrad"

    def context(self, case):
        # NumPy float64 needs no x64 switch (kernelgrad scopes its own); JAX float64 arrays do.
        if self.jax_arrays or case.device == "gpu":
            return jax.enable_x64(case.dtype == "float64")
        return contextlib.nullcontext()

    @staticmethod
    def _kernel(case):
        return kg.kernel(forum_pair) if case.kernel == "forum" else kg.RBF()

    @staticmethod
    def _op(case, k):
        if case.op == "kernel":
            return lambda X: kg.gram(k, X)
        if case.op == "grad":
            return lambda X: kg.grad(k, X[0], X)
        return lambda X: kg.grad_sum(k, X)

    def _inputs(self, case, X):
        if self.jax_arrays or case.device == "gpu":
            return jax.device_put(jnp.asarray(X, dtype=case.dtype), jax_device(case.device))
        return X.astype(case.dtype)

    def prepare(self, case, X):
        op = self._op(case, self._kernel(case))
        Xin = self._inputs(case, X)
        if isinstance(Xin, jax.Array):
            return lambda: op(Xin).block_until_ready()
        return lambda: op(Xin)

    def path(self, case):
        """The engine's own plan for this call (:func:`kernelgrad.explain`)."""
        k = self._kernel(case)
        with self.context(case):
            X = self._inputs(case, points(case))
            op = {"kernel": "gram", "grad_map": "grad_sum"}.get(case.op, case.op)
            args = (X[0], X) if case.op == "grad" else (X,)
            return str(kg.explain(op, k, *args))

    def estimate_bytes(self, case):
        if "tiled" not in self.path(case):
            return super().estimate_bytes(case)
        # Matrix-free: the points, the output and a few row-by-column tiles, never n x n.
        rows, cols = reductions.default_blocks("gpu" if case.device == "gpu" else "cpu")
        return (8 * case.n * case.d + 4 * rows * cols) * case.itemsize

    def measured_bytes(self, case, X, call):
        if "eager NumPy" in self.path(case):
            return _tracemalloc_peak(call), "tracemalloc"
        # The same transform jitted whole: its buffers, without the padding of the real call.
        with jax.enable_x64(case.dtype == "float64"):
            Xj = jnp.asarray(X, dtype=case.dtype)
            return _xla_bytes(jax.jit(self._op(case, self._kernel(case))), Xj)


def all_peers() -> list[Peer]:
    """Every peer, in column order."""
    return [
        ForumJax(reverse=False),
        ForumJax(reverse=True),
        ForumLoop(),
        TorchFunc(reverse=False),
        TorchFunc(reverse=True),
        NumpyClosedForm(),
        HandXla("diff"),
        HandXla("matmul"),
        Kernelgrad(jax_arrays=False),
        Kernelgrad(jax_arrays=True),
    ]


PEER_NAMES = tuple(p.name for p in all_peers())
DEFAULT_PEERS = (
    "forum-jacfwd",
    "forum-jacrev",
    "loop-jacfwd",
    "torch-jacfwd",
    "torch-jacrev",
    "numpy",
    "xla-diff",
    "xla-matmul",
    "kernelgrad",
)


def get_peer(name: str) -> Peer:
    for p in all_peers():
        if p.name == name:
            return p
    raise KeyError(name)
