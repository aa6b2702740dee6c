"""Shared fixtures: a guard on JAX's global config, strict rank promotion, a seeded generator.

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


@pytest.fixture(autouse=True)
def x64_unchanged():
    """Fail any test that leaves JAX's global x64 setting other than it found it."""
    before = jax.config.jax_enable_x64
    yield
    assert jax.config.jax_enable_x64 == before, "a test changed JAX's global x64 setting"


@pytest.fixture
def strict_rank_promotion():
    """Run a test with ``jax_numpy_rank_promotion="raise"``, as a strict user would.

    Opt-in rather than autouse: the library's own closed-form code broadcasts NumPy-style, so
    whether it runs under a user's strict setting is checked by the tests that request this.
    """
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """Each floating dtype the library supports."""
    return np.dtype(request.param)
