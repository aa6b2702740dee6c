"""A dense result that cannot fit is refused before anything is allocated, naming the
matrix-free call that would serve."""

from __future__ import annotations

import math
import resource
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelgrad as kg
from kernelgrad.execution import engine, memory

MILLION = 1_000_000


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if any computation starts: the guard must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the engine ran: the guard did not stop the call first")

    monkeypatch.setattr(engine, "run", refuse)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


@pytest.mark.parametrize("as_jax", [False, True], ids=["numpy", "jax"])
def test_jacobian_at_a_million_points_names_grad_sum(no_engine, as_jax, rng):
    X = rng.uniform(size=(MILLION, 3)).astype(np.float32)  # 12 MB of points
    X = jax.device_put(X) if as_jax else X
    before = _peak_rss_bytes()
    with pytest.raises(MemoryError) as info:
        kg.jacobian(kg.RBF(), X)
    assert isinstance(info.value, memory.DenseTooLargeError)
    message = str(info.value)
    # 10^6 * 10^6 * 3 float32 = 1.2e13 bytes = 12.0 TB.
    assert "(1000000, 1000000, 3)" in message and "12.0 TB" in message
    assert "kg.grad_sum(k, X, Y, weights)" in message
    assert "Nothing was allocated" in message
    # Well under the result's size was touched (the peak can only have grown by the call).
    assert _peak_rss_bytes() - before < 200 * 2**20


def test_gram_at_a_million_points_names_gram_matvec(no_engine, rng):
    X = rng.uniform(size=MILLION)  # 1-D points, float64
    with pytest.raises(MemoryError, match=r"kg\.gram_matvec\(k, X, Y, W\)") as info:
        kg.gram(kg.Matern32(), X)
    assert "(1000000, 1000000)" in str(info.value)
    assert "8.0 TB" in str(info.value)  # 10^12 float64 entries


_SERVES_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    import kernelgrad as kg
    n, m = 8000, 30000
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(n, 3)).astype(np.float32)
    Y = rng.uniform(size=(m, 3)).astype(np.float32)
    w = rng.uniform(size=m).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    G = kg.grad_sum(kg.RBF(), X, Y, w)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert G.shape == (n, 3) and np.all(np.isfinite(G))
    print((after - before) * 1024)  # ru_maxrss is in kB on Linux
    """
)


def test_the_named_call_serves_where_dense_would_not():
    # grad_sum at n = 8000, m = 30000 in a fresh process: the dense path's (n, m) float32
    # coefficient matrix alone is 960 MB; the tiled path's peak, compilation included,
    # stays well below it.
    proc = subprocess.run(
        [sys.executable, "-c", _SERVES_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    growth = int(proc.stdout.strip().splitlines()[-1])
    dense_coefficients = 8000 * 30000 * 4
    assert growth < dense_coefficients / 3


def test_budget_decides_exactly():
    shape, dtype = (1000, 2000, 3), np.float64
    size = math.prod(shape) * 8  # 48 MB result
    need = memory.WORKSPACE_FACTOR * size
    memory.check_dense("jacobian", shape, dtype, None, budget=need)  # fits exactly
    with pytest.raises(memory.DenseTooLargeError, match=r"kg\.jacobian would return"):
        memory.check_dense("jacobian", shape, dtype, None, budget=need - 1)


def test_small_results_query_no_device(monkeypatch):
    def boom():
        raise AssertionError("queried the host's memory for a small result")

    monkeypatch.setattr(memory, "host_available_bytes", boom)
    memory.check_dense("gram", (1000, 1000), np.float64, np.zeros((1000, 1)))  # 8 MB
    assert kg.gram(kg.RBF(), np.zeros((50, 2))).shape == (50, 50)


def test_budget_is_the_smaller_of_host_and_device(monkeypatch):
    # NumPy input lands in host memory too: the host's free memory bounds it.
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**30)
    shape = (12_000, 12_000)  # 1.15 GB float64, 2.3 GB while built
    with pytest.raises(memory.DenseTooLargeError, match=r"1\.1 GB"):  # 2^30 bytes, in GB
        memory.check_dense("gram", shape, np.float64, np.zeros((12_000, 1)))
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**40)
    memory.check_dense("gram", shape, np.float64, np.zeros((12_000, 1)))
    memory.check_dense("gram", shape, jnp.float32, jnp.zeros((4, 1)))
