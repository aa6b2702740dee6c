"""Shared fixtures: a guard on JAX's global config, strict rank promotion, a seeded generator.

Nothing here turns on JAX's x64 mode globally. The library promises float64-accurate results
for NumPy float64 inputs *without* it, so the suite runs with the default (x64 off) and an
autouse fixture fails any test that leaves the global setting changed.

The suite is strict, as a careful user is: ``jax_numpy_rank_promotion="raise"`` for the whole
run (the library's own code must pass under it), and every warning is an error except those
listed in ``pyproject.toml`` with a reason.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import settings

import kernelgrad as kg

# Hypothesis: few examples (the suite shares 2 cores) and no per-example deadline, since the
# first example of a new shape pays for a JAX compile.
settings.register_profile("kernelgrad", max_examples=15, deadline=None, print_blob=True)
settings.load_profile("kernelgrad")

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def x64_unchanged():
    """Fail any test that leaves JAX's global x64 setting other than it found it."""
    before = jax.config.jax_enable_x64
    yield
    assert jax.config.jax_enable_x64 == before, "a test changed JAX's global x64 setting"


@pytest.fixture
def policy_with():
    """``policy_with(field=value, ...)`` runs the rest of the test under the current policy
    with those fields changed (``kernelgrad.execution.policy.use``), instead of patching globals."""
    stack = contextlib.ExitStack()

    def change(**fields):
        changed = dataclasses.replace(kg.policy.current(), **fields)
        return stack.enter_context(kg.policy.use(changed))

    yield change
    stack.close()


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """Each floating dtype the library supports."""
    return np.dtype(request.param)
