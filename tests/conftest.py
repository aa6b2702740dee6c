"""Shared fixtures: a guard on JAX's global config, strict rank promotion, a seeded generator.

Nothing here turns on JAX's x64 mode globally. The library promises float64-accurate results
for NumPy float64 inputs *without* it, so the suite runs with the default (x64 off) and an
autouse fixture fails any test that leaves the global setting changed.

The suite is strict, as a careful user is: ``jax_numpy_rank_promotion="raise"`` for the whole
run (the library's own code must pass under it), and every warning is an error except those
listed in ``pyproject.toml`` with a reason.

The process has 4 CPU devices (``jax_num_cpu_devices``, set before JAX starts), so that the
multi-device paths run in-process. Every test runs under a policy that keeps the engine's
own work on one device (``max_local_devices=1``), as on a one-device machine; the
multi-device tests lift it with ``policy_with(max_local_devices=None)``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax

# Before anything starts JAX's backend (importing kernelgrad does not).
jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import kernelgrad as kg  # noqa: E402

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


@pytest.fixture(autouse=True, scope="session")
def one_local_device():
    """The engine's own work on one of the 4 devices, as on a one-device machine."""
    with kg.policy.use(dataclasses.replace(kg.policy.current(), max_local_devices=1)):
        yield


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
