"""Hot sizes and unit weights: the programs a loop at fixed n ends up running agree with the
first calls' programs and with forward-mode AD, on every kernel of the shared table.

A size called the policy's ``hot_calls`` times runs unpadded, specialised to the kernel's values,
and ``grad_sum`` with no weights skips the weights there; inside a user's ``jax.jit`` it
never has weights either. These are the paths a short test would otherwise never reach.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_table import CASES, sample_points

import kernelgrad as kg


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("d", [1, 3])
def test_hot_and_traced_grad_sums_match_forward_mode(case, d, rng, policy_with):
    if not case.accepts(d):
        pytest.skip("the kernel fixes d")
    policy_with(hot_calls=3)
    X = np.concatenate([sample_points(rng, 37, d)] * 5)  # 185 points: compiled in every d
    X[7] = X[3]  # duplicates: r = 0 is in the result
    reference = kg.grad_sum(case.kernel, X, mode="forward")
    calls = [kg.grad_sum(case.kernel, X) for _ in range(kg.policy.current().hot_calls + 1)]
    assert kg.explain("grad_sum", case.kernel, X).padded in (None, (len(X), len(X)))
    with jax.enable_x64(True):
        traced = np.asarray(jax.jit(lambda A: kg.grad_sum(case.kernel, A))(jnp.asarray(X)))
    scale = max(float(np.max(np.abs(reference))), 1.0)
    for out in (calls[0], calls[-1], traced):
        assert out.shape == reference.shape
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-11 * scale)
