"""Rows of X over several devices, Y replicated or streamed: the same numbers as one device.

JAX fixes its device count when it starts, so the multi-device checks run in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (4 CPU devices), and the
multi-host check in two processes joined by ``jax.distributed.initialize()``. Each script
prints one JSON line, and the assertions are made here.
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

import kernelgrad as kg
from kernelgrad.execution import sharding

DEVICES = 4

_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import reductions, sharding

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    rng = np.random.default_rng(7)
    n, m, d = 203, 517, 3  # n not a multiple of 4 devices, m not of any block
    X, Y = rng.uniform(-1.5, 1.5, (n, d)), rng.uniform(-1.5, 1.5, (m, d))
    w, W = rng.normal(size=m), rng.normal(size=(m, 2))
    blocks = dict(row_block=16, col_block=64)
    rbf_pair = kg.kernel(lambda x, y: jnp.exp(-0.5 * jnp.sum((x - y) ** 2)))
    out = {"devices": jax.device_count()}
    with jax.enable_x64(True):
        for name, op, method, kernel, weights in [
            ("grad_sum_closed", "grad_sum", "closed", kg.Matern52(lengthscale=0.7), w),
            ("grad_sum_forward_pair", "grad_sum", "forward", rbf_pair, w),
            ("gram_matvec_closed", "gram_matvec", "closed", kg.RBF() + kg.Linear(), W),
        ]:
            one = sharding.one_device(kernel, X, Y, weights, op=op, method=method, **blocks)
            many = sharding.reduce(op, method, kernel, X, Y, weights, **blocks)
            # About 150 columns per chunk: Y and W streamed in 4 chunks, with padding.
            column_bytes = (d + np.asarray(weights[0]).size) * 8
            streamed = sharding.reduce(
                op, method, kernel, X, Y, weights, max_replicated_bytes=150 * column_bytes,
                **blocks,
            )
            out[name] = {
                "shape": list(many.shape),
                "one_device_devices": len(one.devices()),
                "sharded_vs_one": rel(many, one),
                "streamed_vs_one": rel(streamed, one),
                "chunks": sharding._column_chunks(m, column_bytes, 150 * column_bytes)[0],
            }
        # The sharded program itself spreads its rows over every device.
        mesh = sharding.row_mesh()
        Xp = jax.device_put(X[:200], jax.sharding.NamedSharding(mesh, sharding.P("rows")))
        raw = sharding._sharded(
            kg.RBF(), Xp, Y, w, op="grad_sum", method="closed", mesh=mesh, **blocks
        )
        out["raw_output_devices"] = len(raw.sharding.device_set)
        # The public call routes a large problem to the sharded path over local devices.
        meshes = []
        original = sharding.reduce
        def spy(*args, **kwargs):
            meshes.append(kwargs["mesh"].devices.size)
            return original(*args, **kwargs)
        sharding.reduce = spy
        dense = kg.grad_sum(kg.Matern32(), X, Y, w)
        import dataclasses
        lowered = dataclasses.replace(kg.policy.current(), tiled_min_pairs=1000)
        with kg.policy.use(lowered):
            public = kg.grad_sum(kg.Matern32(), X, Y, w)
        out["public"] = {
            "mesh_sizes": meshes,
            "type": type(public).__name__,
            "vs_dense": rel(public, dense),
        }
        sharding.reduce = original
        # X sharded by the caller: the result comes back sharded the same way over rows.
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        line = Mesh(np.asarray(jax.devices()), ("rows",))
        grid = Mesh(np.asarray(jax.devices()).reshape(2, 2), ("a", "b"))
        Xn, Xs2 = X[:200], rng.uniform(-1.5, 1.5, (200, 2))
        W200 = rng.normal(size=(200, 2))
        cases = [
            ("grad_sum", line, P("rows"), Xn, lambda X: kg.grad_sum(kg.RBF(), X),
             lambda X: kg.grad_sum(kg.RBF(), np.asarray(X))),
            ("grad_sum_Y_weights_forward", line, P("rows"), Xn,
             lambda X: kg.grad_sum(rbf_pair, X, Y, w, mode="forward"),
             lambda X: kg.grad_sum(kg.RBF(), np.asarray(X), Y, w)),
            ("gram_matvec", line, P("rows"), Xn,
             lambda X: kg.gram_matvec(kg.Matern52(), X, X, W200),
             lambda X: kg.gram_matvec(kg.Matern52(), np.asarray(X), np.asarray(X), W200)),
            ("grad_sum_two_axes", grid, P(("a", "b")), Xn, lambda X: kg.grad_sum(kg.RBF(), X),
             lambda X: kg.grad_sum(kg.RBF(), np.asarray(X))),
            ("grad_sum_columns_sharded_too", grid, P("a", "b"), Xs2,
             lambda X: kg.grad_sum(kg.RBF(), X), lambda X: kg.grad_sum(kg.RBF(), np.asarray(X))),
            ("grad_sum_1d", line, P("rows"), Xn[:, 0], lambda X: kg.grad_sum(kg.RBF(), X),
             lambda X: kg.grad_sum(kg.RBF(), np.asarray(X))),
        ]
        for name, mesh, spec, points, call, reference in cases:
            Xc = jax.device_put(points, NamedSharding(mesh, spec))
            got = call(Xc)
            out["caller_sharded_" + name] = {
                "in_rows_spec": str(Xc.sharding.spec[0]),
                "out_rows_spec": str(got.sharding.spec[0]),
                "out_devices": len(got.sharding.device_set),
                "shard_rows": sorted({s.data.shape[0] for s in got.addressable_shards}),
                "row_starts": sorted({s.index[0].start or 0 for s in got.addressable_shards}),
                "plan": kg.explain("grad_sum", kg.RBF(), Xc).engine,  # the route for X
                "vs_one": rel(got, reference(Xc)),
            }
    print(json.dumps(out))
    """
)


def _run_on_devices(script: str, count: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def four_devices() -> dict:
    return _run_on_devices(_SCRIPT, DEVICES)


def test_subprocess_sees_four_devices(four_devices):
    assert four_devices["devices"] == DEVICES
    assert four_devices["raw_output_devices"] == DEVICES


@pytest.mark.parametrize("name", ["grad_sum_closed", "grad_sum_forward_pair", "gram_matvec_closed"])
def test_sharded_matches_one_device(four_devices, name):
    result = four_devices[name]
    assert result["shape"] == [203, 3 if name.startswith("grad_sum") else 2]
    assert result["one_device_devices"] == 1
    # Each row sees the same column blocks in the same order: round-off at most.
    assert result["sharded_vs_one"] <= 1e-12


@pytest.mark.parametrize("name", ["grad_sum_closed", "grad_sum_forward_pair", "gram_matvec_closed"])
def test_streamed_columns_match_one_device(four_devices, name):
    result = four_devices[name]
    assert result["chunks"] == 4  # ceil(517 / 150)
    # Chunks change where the column blocks start, so only round-off may differ.
    assert result["streamed_vs_one"] <= 1e-12


def test_public_call_shards_over_local_devices(four_devices):
    public = four_devices["public"]
    assert public["mesh_sizes"] == [DEVICES]
    assert public["type"] == "ndarray"  # NumPy in, NumPy out, also when sharded
    assert public["vs_dense"] <= 1e-12


_CALLER_SHARDED = [
    ("grad_sum", 4),
    ("grad_sum_Y_weights_forward", 4),
    ("gram_matvec", 4),
    ("grad_sum_two_axes", 4),
    ("grad_sum_columns_sharded_too", 2),  # rows over "a" only: 2 row blocks, each on 2 devices
    ("grad_sum_1d", 4),
]


@pytest.mark.parametrize(("name", "row_blocks"), _CALLER_SHARDED)
def test_result_is_sharded_like_the_callers_points(four_devices, name, row_blocks):
    result = four_devices["caller_sharded_" + name]
    # The rows keep the caller's mesh axes (a column sharding of X is dropped).
    expected_spec = "a" if name == "grad_sum_columns_sharded_too" else result["in_rows_spec"]
    assert result["out_rows_spec"] == expected_spec
    assert result["plan"] == "sharded"
    # No device holds the whole result: each holds its 200 / row_blocks rows.
    assert result["out_devices"] == DEVICES
    assert result["shard_rows"] == [200 // row_blocks]
    assert result["row_starts"] == [i * 200 // row_blocks for i in range(row_blocks)]
    assert result["vs_one"] <= 1e-12


def test_one_device_mesh_matches_the_unsharded_program(rng):
    # In this process (one device): sharding.reduce on a 1-device mesh, with streaming.
    X, Y, w = rng.uniform(-1, 1, (45, 2)), rng.uniform(-1, 1, (77, 2)), rng.normal(size=77)
    k = kg.RationalQuadratic(alpha=0.8)
    with jax.enable_x64(True):
        one = sharding.one_device(k, X, Y, w, op="grad_sum", method="closed", col_block=16)
        many = sharding.reduce(
            "grad_sum", "closed", k, X, Y, w, col_block=16, max_replicated_bytes=30 * 3 * 8
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
