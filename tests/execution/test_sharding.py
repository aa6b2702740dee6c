"""Rows of X over several devices, Y replicated or streamed: the same numbers as one device.

The suite's process has 4 CPU devices (``tests/conftest.py``), so these checks run
in-process; the engine's own multi-device path is lifted for them with
``policy_with(max_local_devices=None)``. The multi-host check runs two processes joined by
``jax.distributed.initialize()``; each prints one JSON line, and the assertions are made here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import kernelgrad as kg
from kernelgrad.execution import sharding

DEVICES = 4
BLOCKS = dict(row_block=16, col_block=64)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(7)
    n, m, d = 203, 517, 3  # n not a multiple of 4 devices, m not of any block
    X, Y = rng.uniform(-1.5, 1.5, (n, d)), rng.uniform(-1.5, 1.5, (m, d))
    return X, Y, rng.normal(size=m), rng.normal(size=(m, 2))


_RBF_PAIR = kg.kernel(lambda x, y: jnp.exp(-0.5 * jnp.sum((x - y) ** 2)))
_REDUCTIONS = {
    "grad_sum_closed": ("grad_sum", "closed", kg.Matern52(lengthscale=0.7), False),
    "grad_sum_forward_pair": ("grad_sum", "forward", _RBF_PAIR, False),
    "gram_matvec_closed": ("gram_matvec", "closed", kg.RBF() + kg.Linear(), True),
}


def test_the_suite_has_four_devices_and_uses_one_by_default():
    assert jax.device_count() == DEVICES
    assert sharding.local_devices() == jax.local_devices()[:1]
    assert sharding.local_mesh() is None


@pytest.mark.parametrize("name", list(_REDUCTIONS))
def test_sharded_and_streamed_match_one_device(points, name):
    X, Y, w, W = points
    op, method, kernel, matrix = _REDUCTIONS[name]
    weights = W if matrix else w
    with jax.enable_x64(True):
        one = sharding.one_device(kernel, X, Y, weights, op=op, method=method, **BLOCKS)
        many = sharding.reduce(op, method, kernel, X, Y, weights, **BLOCKS)
        # About 150 columns per chunk: Y and the weights streamed in 4 chunks, with padding.
        column_bytes = (X.shape[1] + (2 if matrix else 1)) * 8
        streamed = sharding.reduce(
            op, method, kernel, X, Y, weights, max_replicated_bytes=150 * column_bytes, **BLOCKS
        )
    assert many.shape == (203, 2 if matrix else 3)
    assert len(one.devices()) == 1
    assert sharding._column_chunks(517, column_bytes, 150 * column_bytes)[0] == 4
    # Each row sees the same column blocks in the same order: round-off at most. Chunks
    # change where the column blocks start, so again only round-off may differ.
    assert rel(many, one) <= 1e-12
    assert rel(streamed, one) <= 1e-12


def test_the_sharded_program_spreads_rows_over_every_device(points):
    X, Y, w, _ = points
    mesh = sharding.row_mesh()
    Xp = jax.device_put(X[:200], NamedSharding(mesh, P("rows")))
    with jax.enable_x64(True):
        raw = sharding._sharded(
            kg.RBF(), Xp, Y, w, op="grad_sum", method="closed", mesh=mesh, **BLOCKS
        )
    assert len(raw.sharding.device_set) == DEVICES


def test_public_call_shards_over_local_devices(points, policy_with, monkeypatch):
    X, Y, w, _ = points
    dense = kg.grad_sum(kg.Matern32(), X, Y, w)
    meshes = []
    original = sharding.reduce

    def spy(*args, **kwargs):
        meshes.append(kwargs["mesh"].devices.size)
        return original(*args, **kwargs)

    monkeypatch.setattr(sharding, "reduce", spy)
    policy_with(max_local_devices=None, tiled_min_pairs=1000)
    assert kg.explain("grad_sum", kg.Matern32(), X, Y, w).devices == DEVICES
    public = kg.grad_sum(kg.Matern32(), X, Y, w)
    assert meshes == [DEVICES]
    assert isinstance(public, np.ndarray)  # NumPy in, NumPy out, also when sharded
    assert rel(public, dense) <= 1e-12


def test_a_device_limit_keeps_the_public_call_on_fewer_devices(points, policy_with):
    X, Y, w, _ = points
    policy_with(max_local_devices=2, tiled_min_pairs=1000)
    assert sharding.local_mesh().devices.size == 2
    assert kg.explain("grad_sum", kg.Matern32(), X, Y, w).devices == 2  # (an RBF's is eager)


def test_the_gradient_operator_matvec_over_four_devices_matches_dense(policy_with):
    # Rows split over the 4 devices (shard_map) when the operator may use them all.
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(13, 3)), rng.normal(size=(7, 3))
    policy_with(max_local_devices=None)
    assert sharding.local_mesh().devices.size == DEVICES
    for k in [kg.RBF() * kg.Linear(), kg.kernel(lambda x, y: (x @ y + 1.0) ** 2)]:
        op = kg.gradient_gram(k, X, Y, row_block=8, col_block=8)
        V = rng.normal(size=(op.shape[1], 2))
        assert np.abs(op.matvec(V) - op.to_dense() @ V).max() < 1e-12


def _line():
    return Mesh(np.asarray(jax.devices()), ("rows",))


def _grid():
    return Mesh(np.asarray(jax.devices()).reshape(2, 2), ("a", "b"))


_W200 = np.random.default_rng(8).normal(size=(200, 2))
# (name, mesh, row spec, 2-D points?, call, reference on NumPy points, row blocks)
_CALLER_SHARDED = [
    (
        "grad_sum",
        _line,
        P("rows"),
        True,
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        4,
    ),
    (
        "grad_sum_Y_weights_forward",
        _line,
        P("rows"),
        True,
        lambda X, Y, w: kg.grad_sum(_RBF_PAIR, X, Y, w, mode="forward"),
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X, Y, w),
        4,
    ),
    (
        "gram_matvec",
        _line,
        P("rows"),
        True,
        lambda X, Y, w: kg.gram_matvec(kg.Matern52(), X, X, _W200),
        lambda X, Y, w: kg.gram_matvec(kg.Matern52(), X, X, _W200),
        4,
    ),
    (
        "grad_sum_two_axes",
        _grid,
        P(("a", "b")),
        True,
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        4,
    ),
    # Rows over "a" only: 2 row blocks, each on 2 devices; the column sharding is dropped.
    (
        "grad_sum_columns_sharded_too",
        _grid,
        P("a", "b"),
        True,
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        2,
    ),
    (
        "grad_sum_1d",
        _line,
        P("rows"),
        False,
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        lambda X, Y, w: kg.grad_sum(kg.RBF(), X),
        4,
    ),
]


@pytest.mark.parametrize(
    ("name", "mesh", "spec", "two_d", "call", "reference", "row_blocks"),
    _CALLER_SHARDED,
    ids=[case[0] for case in _CALLER_SHARDED],
)
def test_result_is_sharded_like_the_callers_points(
    points, name, mesh, spec, two_d, call, reference, row_blocks
):
    X, Y, w, _ = points
    rng = np.random.default_rng(9)
    local = X[:200] if spec != P("a", "b") else rng.uniform(-1.5, 1.5, (200, 2))
    local = local if two_d else local[:, 0]
    with jax.enable_x64(True):  # float64 points on the devices
        Xc = jax.device_put(local, NamedSharding(mesh(), spec))
        got = call(Xc, Y, w)
    # The rows keep the caller's mesh axes (a column sharding of X is dropped).
    expected_spec = "a" if spec == P("a", "b") else str(Xc.sharding.spec[0])
    assert str(got.sharding.spec[0]) == expected_spec
    assert kg.explain("grad_sum", kg.RBF(), Xc).engine == "sharded"
    # No device holds the whole result: each holds its 200 / row_blocks rows.
    assert len(got.sharding.device_set) == DEVICES
    assert sorted({s.data.shape[0] for s in got.addressable_shards}) == [200 // row_blocks]
    starts = sorted({s.index[0].start or 0 for s in got.addressable_shards})
    assert starts == [i * 200 // row_blocks for i in range(row_blocks)]
    assert rel(got, reference(local, Y, w)) <= 1e-12


def test_one_device_mesh_matches_the_unsharded_program(rng):
    # sharding.reduce on a 1-device mesh, with streaming.
    X, Y, w = rng.uniform(-1, 1, (45, 2)), rng.uniform(-1, 1, (77, 2)), rng.normal(size=77)
    k = kg.RationalQuadratic(alpha=0.8)
    with jax.enable_x64(True):
        one = sharding.one_device(k, X, Y, w, op="grad_sum", method="closed", col_block=16)
        mesh = sharding.row_mesh(jax.devices()[:1])
        many = sharding.reduce(
            "grad_sum",
            "closed",
            k,
            X,
            Y,
            w,
            mesh=mesh,
            col_block=16,
            max_replicated_bytes=30 * 3 * 8,
        )
        assert many.dtype == jnp.float64
    assert np.max(np.abs(np.asarray(many) - np.asarray(one))) <= 1e-12 * np.max(np.abs(one))
    assert sharding._column_chunks(77, 24, 30 * 24) == (3, 26)


_MULTI_HOST_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU cross-process
    jax.distributed.initialize(
        coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[1])
    )
    import numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import reductions, sharding

    rng = np.random.default_rng(3)  # every process passes the same X, Y and w
    X, Y, w = rng.uniform(-1, 1, (101, 3)), rng.uniform(-1, 1, (203, 3)), rng.normal(size=203)
    blocks = dict(row_block=16, col_block=64)
    with jax.enable_x64(True):
        one = np.asarray(
            sharding.one_device(kg.RBF(), X, Y, w, op="grad_sum", method="closed", **blocks)
        )
        out = sharding.reduce("grad_sum", "closed", kg.RBF(), X, Y, w, **blocks)
        streamed = sharding.reduce(
            "grad_sum", "closed", kg.RBF(), X, Y, w, max_replicated_bytes=60 * 32, **blocks
        )
    scale = np.max(np.abs(one))
    print(json.dumps({
        "devices": jax.device_count(),
        "local": jax.local_device_count(),
        "shape": list(out.shape),
        "err": float(np.max(np.abs(np.asarray(out) - one)) / scale),
        "streamed_err": float(np.max(np.abs(np.asarray(streamed) - one)) / scale),
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_through_jax_distributed_match_one_device(tmp_path):
    # Two "hosts" (processes) of 2 CPU devices each, joined by jax.distributed.initialize():
    # the default mesh spans all 4 devices and every process gets all rows back.
    script = tmp_path / "host.py"
    script.write_text(_MULTI_HOST_SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), address],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("multi-process run timed out")
        assert proc.returncode == 0, stderr[-4000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    for result in results:
        assert result["devices"] == 4 and result["local"] == 2
        assert result["shape"] == [101, 3]
        assert result["err"] <= 1e-12
        assert result["streamed_err"] <= 1e-12
