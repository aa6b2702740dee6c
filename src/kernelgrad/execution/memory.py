"""A guard for dense results that cannot fit, raised before anything is allocated.

``gram`` returns an n x m matrix and ``jacobian`` an n x m x d tensor. At n = m = 10^6 in
float64 those are 8 TB and 24 TB: JAX would fail deep inside XLA's allocator, or the
operating system would start swapping, long after the call began. :func:`check_dense`
compares the size of the requested result with the memory that could hold it and raises
:class:`DenseTooLargeError` (a ``MemoryError``) naming the matrix-free call that gives what
such users almost always want: ``gram_matvec`` for K @ W, ``grad_sum`` for the grad map.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from . import ops, padding

#: Building a dense result takes about this many times its own size at the peak (the result
#: plus one intermediate of the same size, e.g. the coefficient tensor or a padded copy).
WORKSPACE_FACTOR = 2

#: Results below this many bytes are never checked, so small calls query no device.
ALWAYS_FITS_BYTES = 1 << 28


class DenseTooLargeError(MemoryError):
    """A dense result was requested that cannot fit in the memory available for it."""


def host_available_bytes() -> int:
    """Memory the operating system could give this process now (MemAvailable), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_available_bytes(device) -> int | None:
    """Free memory of an accelerator, or None where the runtime does not report it (CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _format_bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.1f} {unit}" if unit != "bytes" else f"{int(count)} bytes"
        count /= 1000
    raise AssertionError("unreachable")


def _compute_device(X):
    """The device a computation on X runs on: X's own when it is on one, else the default."""
    device = padding.single_device(X)
    return jax.devices()[0] if device is None else device


def check_dense(op: str, shape: tuple[int, ...], dtype, X, *, budget: int | None = None) -> None:
    """Raise :class:`DenseTooLargeError` if a dense ``op`` result of ``shape`` cannot fit.

    Args:
        op: the transform's name (``"gram"``, ``"jacobian"``, ...), used in the message.
        shape: the shape of the result.
        dtype: its dtype.
        X: the caller's points (a NumPy array means the result also lands in host memory).
        budget: bytes available; by default the free memory of the device that computes the
            result, and of the host too when the result is returned as NumPy.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if budget is None and size < ALWAYS_FITS_BYTES:
        return
    need = WORKSPACE_FACTOR * size
    if budget is None:
        device = _compute_device(X)
        budget = device_available_bytes(device)
        if budget is None or not isinstance(X, jax.Array):
            host = host_available_bytes()
            budget = host if budget is None else min(budget, host)
    if need <= budget:
        return
    record = ops.OPS.get(op)
    instead = (record and record.matrix_free) or (
        "a matrix-free reduction (kg.grad_sum or kg.gram_matvec)"
    )
    raise DenseTooLargeError(
        f"kg.{op} would return a dense array of shape {tuple(shape)} ({np.dtype(dtype).name}): "
        f"{_format_bytes(size)}, about {_format_bytes(need)} while it is built, but only "
        f"{_format_bytes(budget)} is available. Nothing was allocated. If you need a "
        f"reduction of it, call {instead}: it never holds an n x m buffer. Otherwise process "
        "X in row blocks small enough to fit."
    )


__all__ = ["DenseTooLargeError", "check_dense", "device_available_bytes", "host_available_bytes"]
