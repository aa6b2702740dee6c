"""Padding, size buckets, cropping and compensated sums: what every engine shares.

A problem of n points runs on a program for N >= n points (a *bucket*), so that a growing n
compiles a handful of programs, not one per n. The padded points are copies of a real point
carrying weight 0, so they never make a NaN (a distance of 0/0, say) and add nothing; their
rows (and columns) are cropped off the result. Dense programs use :func:`dense_bucket`,
tiled ones the finer :func:`fine_bucket`. Sums over column blocks or chunks are compensated
(:func:`kahan_add`), so that tiling never costs accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import policy


def dense_bucket(n: int) -> int:
    """The padded size for n points: few buckets for small n, fine ones for large n.

    Below the policy's ``fine_buckets_from``, n rounds up to 4, 5, 6 or 7 times a power of
    two (at least ``min_bucket``): compiling dominates there, and a loop from n = 100 to 200
    compiles 5 programs. From it on, a call does enough work (a quarter of a million pairs)
    to amortise a compile, while 25% of padding would cost up to 56% more pairs: the buckets
    of :func:`fine_bucket` (at most 1/32 of padding) apply instead.
    """
    chosen = policy.current()
    if n <= chosen.min_bucket:
        return chosen.min_bucket
    if n >= chosen.fine_buckets_from:
        return fine_bucket(n)
    e = max(int(n - 1).bit_length() - 3, 0)
    step = 1 << e
    return -(-n // step) * step


def fine_bucket(n: int) -> int:
    """n rounded up to a multiple of 2^(floor(log2 n) - 5) (with the policy's 32 steps per
    octave): at most 1/32 of padding."""
    steps = policy.current().tiled_buckets_per_octave
    step = 1 << max(int(n).bit_length() - steps.bit_length(), 0)
    return -(-n // step) * step


def single_device(A):
    """The one device holding concrete JAX array ``A``, or None (tracer, or sharded)."""
    if isinstance(A, jax.core.Tracer) or not isinstance(A, jax.Array):
        return None
    devices = A.devices()
    return next(iter(devices)) if len(devices) == 1 else None


def on_one_cpu(A) -> bool:
    """Whether ``A`` is a concrete JAX array held by one CPU device (NumPy views are free)."""
    device = single_device(A)
    return device is not None and device.platform == "cpu"


def _to_device_like(host, A, device):
    """``host`` on ``device``, committed there only if ``A`` was: jit keys on commitment,
    so a mismatch would compile a second program for the same shapes."""
    return jax.device_put(host, device if A.committed else None)


def pad_rows(A, rows: int, copy_first: bool):
    """``A`` padded along axis 0 to ``rows``, with copies of its first row (or zeros).

    NumPy stays NumPy. A small concrete JAX array on one device is padded in host memory and
    put back on its device: an eager ``jnp.concatenate`` would compile a program for every
    new shape, which a loop growing n one point at a time would pay on every call. Large
    arrays are padded on their device, where one compile costs less than two transfers.
    """
    extra = rows - A.shape[0]
    if extra == 0:
        return A
    if type(A) is np.ndarray:
        # Filled in place: concatenating a broadcast row costs several times more, and this
        # runs before every padded call.
        padded = np.empty((rows, *A.shape[1:]), A.dtype)
        padded[: A.shape[0]] = A
        padded[A.shape[0] :] = A[0] if copy_first else 0
        return padded
    device = single_device(A)
    small = device is not None and A.nbytes <= policy.current().host_slice_max_bytes
    if isinstance(A, np.ndarray) or small:
        host = np.asarray(A)
        row = host[:1] if copy_first else np.zeros_like(host[:1])
        padded = np.concatenate([host, np.broadcast_to(row, (extra, *host.shape[1:]))])
        return padded if device is None else _to_device_like(padded, A, device)
    row = A[:1] if copy_first else jnp.zeros_like(A[:1])
    return jnp.concatenate([A, jnp.broadcast_to(row, (extra, *A.shape[1:]))], axis=0)


def pad_tree(tree, total: int, copy_first: bool):
    """Each leaf of ``tree`` padded along axis 0 to ``total`` (see :func:`pad_rows`)."""
    return jax.tree.map(lambda a: pad_rows(a, total, copy_first), tree)


def crop(A, n: int, m: int | None = None):
    """``A[:n]`` (or ``A[:n, :m]``), through host memory for small concrete JAX arrays.

    Like :func:`pad_rows`, this saves compiling one slice program per new n.
    """
    if A.shape[0] == n and (m is None or A.shape[1] == m):
        return A
    index = (slice(n),) if m is None else (slice(n), slice(m))
    device = single_device(A)
    if device is None or A.nbytes > policy.current().host_slice_max_bytes:
        return A[index]
    return _to_device_like(np.ascontiguousarray(np.asarray(A)[index]), A, device)


def kahan_add(total, lost, part):
    """(total + part, the low-order part that addition rounded away), compensated: ``lost``
    is what the previous addition lost, and is subtracted from ``part`` first. The sum is
    ``total - lost`` at the end."""
    part = part - lost
    new_total = total + part
    return new_total, (new_total - total) - part


__all__ = [
    "crop",
    "dense_bucket",
    "fine_bucket",
    "kahan_add",
    "on_one_cpu",
    "pad_rows",
    "pad_tree",
    "single_device",
]
