"""The tiled reductions over many devices: rows of X sharded, Y replicated or streamed.

This is JAX's own distributed engine, not a scheduler of ours. A 1-D device mesh (axis
``"rows"``) splits the rows of X evenly; every device runs the same tiled reduction
(:func:`kernelgrad.execution.ops.tiled`) on its rows against all of Y, under ``shard_map``.
Row i of a grad map or of K @ W depends only on x_i, so the devices never talk to each
other: the result is just the concatenation of their rows.

Y (and the weights) are replicated on every device, which costs O(m d) memory per device.
When that exceeds the policy's ``replicated_columns_max_bytes``, Y is streamed instead: the columns
are cut into equal chunks, each chunk is one sharded call, and the chunks' results are added
with compensated (Kahan) summation. Both reductions are sums over columns, so this is exact.

The engine's automatic path (:func:`tiled`) uses the devices of this process only, so that
its result is an ordinary local array. Multi-host runs call :func:`reduce` in every process,
after ``jax.distributed.initialize()``, with the same X, Y and W: its default mesh
(:func:`row_mesh`) then spans every device of every host, each host computes its share of
the rows, and every process gets all n rows back (see ``docs/scale.md``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import compile_cache, ops, padding, policy

#: Name of the mesh axis that the rows of X are split over.
AXIS = "rows"


def row_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of the default backend, on every
    host once ``jax.distributed.initialize()`` has run)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def local_devices() -> list:
    """The devices of this process that the engine spreads its own work over: all of them,
    or the first ``max_local_devices`` of the policy."""
    devices = jax.local_devices()
    return devices[: policy.current().max_local_devices]


def local_mesh() -> Mesh | None:
    """A row mesh over :func:`local_devices` when there are several, else None."""
    devices = local_devices()
    return row_mesh(devices) if len(devices) > 1 else None


@compile_cache.jit(static_argnames=("op", "method", "row_block", "col_block"))
def one_device(kernel, X, Y, W, *, op, method, row_block=None, col_block=None):
    """Op ``op``'s tiled reduction (:func:`kernelgrad.execution.ops.tiled`) as one jitted
    program."""
    return ops.tiled(op, method, kernel, X, Y, W, row_block=row_block, col_block=col_block)


@compile_cache.jit(static_argnames=("op", "method", "mesh", "rows", "row_block", "col_block"))
def _sharded(kernel, X, Y, W, *, op, method, mesh, rows=AXIS, row_block=None, col_block=None):
    """The reduction with X's rows split over mesh axis (or axes) ``rows``, the rest
    replicated: every device reduces its rows against all of Y."""
    local = functools.partial(ops.tiled, op, method, row_block=row_block, col_block=col_block)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(rows), P(), P()), out_specs=P(rows))
    return fn(kernel, X, Y, W)


def row_sharding(X):
    """(mesh, rows) when X is a concrete JAX array whose rows are split over several devices
    by a ``NamedSharding`` (``rows``: the mesh axis or axes of its first dimension), else
    None."""
    sharding = getattr(X, "sharding", None)
    if isinstance(X, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
        return None
    rows = sharding.spec[0] if len(sharding.spec) else None
    if rows is None or len(sharding.device_set) == 1:
        return None
    return sharding.mesh, rows


def along_rows(op: str, method: str, kernel, X, Y, W):
    """``grad_sum`` or ``gram_matvec`` for X whose rows the caller sharded (see
    :func:`row_sharding`): computed where X's rows are, and returned sharded the same way.

    X stays in place (a sharding of its columns too is undone: each device needs whole
    points); Y and W are replicated, as in :func:`reduce`. Row i of the result depends only
    on x_i, so nothing is gathered to one device.
    """
    mesh, rows = row_sharding(X)
    X = jax.device_put(X, NamedSharding(mesh, P(rows)))
    replicated = NamedSharding(mesh, P())
    Y, W = jax.device_put((Y, W), replicated)
    return _sharded(kernel, X, Y, W, op=op, method=method, mesh=mesh, rows=rows)


def _column_chunks(m: int, row_bytes: int, max_bytes: int) -> tuple[int, int]:
    """(count, size) of equal column chunks of at most ``max_bytes`` each."""
    per_chunk = max(1, max_bytes // max(row_bytes, 1))
    count = -(-m // per_chunk)
    return count, -(-m // count)


def _first_rows(out, n: int):
    """Rows [:n] of a row-sharded result, as a local array on every process.

    A mesh spanning several hosts gives a global array that no process can slice alone:
    gather it (O(n p) bytes, small next to the O(n m) work) so every process gets all rows.
    """
    if out.is_fully_addressable:
        return out[:n]
    return multihost_utils.process_allgather(out, tiled=True)[:n]


def reduce(
    op: str,
    method: str,
    kernel,
    X,
    Y,
    W,
    *,
    mesh: Mesh | None = None,
    row_block: int | None = None,
    col_block: int | None = None,
    max_replicated_bytes: int | None = None,
):
    """``grad_sum`` or ``gram_matvec`` (by name ``op``) with the rows of X over a mesh.

    Args:
        op: ``"grad_sum"`` (W of shape (m,)) or ``"gram_matvec"`` (W of shape (m, p)).
        method: ``"closed"``, ``"forward"`` or ``"reverse"``.
        kernel: the kernel.
        X: (n, d) points, split by rows over the mesh.
        Y: (m, d) points and W the weights, replicated (or streamed in column chunks).
        mesh: a 1-D mesh with axis :data:`AXIS`; default :func:`row_mesh` of all devices.
        row_block, col_block: the tile shape on each device (see
            :func:`kernelgrad.execution.reductions.tiled_row_reduce`).
        max_replicated_bytes: stream Y in chunks when Y and W together take more than this
            (default: the policy's ``replicated_columns_max_bytes``).

    Returns:
        (n, d) for ``grad_sum``, (n, p) for ``gram_matvec``: a JAX array on the mesh, or,
        when the mesh spans several processes, a NumPy array with all rows in every process.
    """
    mesh = row_mesh() if mesh is None else mesh
    n, m = X.shape[0], Y.shape[0]
    devices = mesh.devices.size
    rows = -(-n // devices) * devices
    X = jax.device_put(padding.pad_rows(X, rows, True), NamedSharding(mesh, P(AXIS)))
    # Replicated explicitly, one chunk at a time: a mesh over several hosts accepts only
    # placed (global) arrays, and a streamed Y must never sit whole on every device.
    replicated = NamedSharding(mesh, P())
    call = functools.partial(
        _sharded, op=op, method=method, mesh=mesh, row_block=row_block, col_block=col_block
    )
    column_bytes = (Y[0].size + W[0].size) * np.dtype(Y.dtype).itemsize
    limit = max_replicated_bytes or policy.current().replicated_columns_max_bytes
    count, size = _column_chunks(m, column_bytes, limit)
    if count == 1:
        return _first_rows(call(kernel, X, *jax.device_put((Y, W), replicated)), n)
    Y = padding.pad_rows(Y, count * size, True)
    W = padding.pad_rows(W, count * size, False)
    total = lost = None
    for c in range(count):
        chunk = (Y[c * size : (c + 1) * size], W[c * size : (c + 1) * size])
        part = call(kernel, X, *jax.device_put(chunk, replicated))
        if total is None:
            total, lost = part, jnp.zeros_like(part)
        else:  # compensated across chunks, as across column blocks inside each chunk
            total, lost = padding.kahan_add(total, lost, part)
    return _first_rows(total - lost, n)


def tiled(op: str, method: str, kernel, X, Y, W, *, pad: bool = True):
    """The engine's entry for large reductions: (N, p) for X of n <= N rows.

    With ``pad``, pads n and m to :func:`kernelgrad.execution.padding.fine_bucket` sizes (a growing
    n compiles a handful of programs); without, runs the exact sizes (the engine's choice for
    sizes called often). Then runs sharded over :func:`local_devices` when there are several
    (and the inputs are concrete), else the one-device program. The padded rows are
    left on the result for the caller to crop.
    """
    n, m = X.shape[0], Y.shape[0]
    if pad:
        X = padding.pad_rows(X, padding.fine_bucket(n), True)
        Y = padding.pad_rows(Y, padding.fine_bucket(m), True)
        W = padding.pad_rows(W, padding.fine_bucket(m), False)
    mesh = local_mesh()
    if mesh is not None and not isinstance(X, jax.core.Tracer):
        return reduce(op, method, kernel, X, Y, W, mesh=mesh)
    return one_device(kernel, X, Y, W, op=op, method=method)


__all__ = [
    "AXIS",
    "along_rows",
    "local_devices",
    "local_mesh",
    "one_device",
    "reduce",
    "row_mesh",
    "row_sharding",
    "tiled",
]
