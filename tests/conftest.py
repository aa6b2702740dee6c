"""Shared fixtures: strict JAX, a seeded generator and per-dtype tolerances.

Nothing here turns on JAX's x64 mode globally. The library promises float64-accurate results
for NumPy float64 inputs *without* it, so the suite runs with the default (x64 off) and an
autouse fixture fails any test that leaves the global setting changed.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import settings

# Hypothesis: few examples (the suite shares 2 cores) and no per-example deadline, since the
# first example of a new shape pays for a JAX compile.
settings.register_profile("kernelgrad", max_examples=15, deadline=None, print_blob=True)
settings.load_profile("kernelgrad")

#: Relative and absolute tolerances for comparing two correct computations that round
#: differently. float32 has 24 bits (6e-8 unit round-off); the derivatives here combine a few
#: dozen operations on values of order one, and exp amplifies relative error by its argument.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def tolerance(dtype) -> dict:
    """``rtol``/``atol`` keyword arguments for ``np.testing.assert_allclose`` at ``dtype``."""
    return TOLERANCES[np.dtype(dtype)]


@pytest.fixture(autouse=True)
def strict_jax():
    """Raise on implicit rank promotion, and check the global x64 flag is left as found."""
    before = jax.config.jax_enable_x64
    with jax.numpy_rank_promotion("raise"):
        yield
    assert jax.config.jax_enable_x64 == before, "a test changed JAX's global x64 setting"


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """Each floating dtype the library supports."""
    return np.dtype(request.param)
