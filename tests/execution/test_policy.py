"""The engine's thresholds come from one policy object, which a caller can replace per call.

Each check changes one field with ``kernelgrad.execution.policy.use`` and observes the engine's
choice change through ``kg.explain`` (or the result stay the same), then change back on leaving.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading

import numpy as np
import pytest
from kernel_table import BY_ID

import kernelgrad as kg
from kernelgrad.execution import reductions, sharding


def _changed(**fields) -> kg.policy.Policy:
    return dataclasses.replace(kg.policy.current(), **fields)


def test_default_is_the_cpu_policy_here_and_gpus_get_bigger_tiles():
    # The suite runs on the CPU, under the CPU's policy kept to one device (conftest.py).
    assert kg.policy.current() == dataclasses.replace(kg.policy.CPU, max_local_devices=1)
    assert kg.policy.CPU.max_local_devices is None  # a user's default: every local device
    assert kg.policy.for_platform("cuda") is kg.policy.GPU
    assert kg.policy.GPU.tile_blocks[0] * kg.policy.GPU.tile_blocks[1] > (
        kg.policy.CPU.tile_blocks[0] * kg.policy.CPU.tile_blocks[1]
    )
    assert reductions.default_blocks("gpu") == kg.policy.GPU.tile_blocks


def test_a_policy_moves_the_engines_choice_and_is_undone_on_leaving(rng):
    X = rng.uniform(-1.0, 1.0, (300, 3))
    k = BY_ID["matern52"].kernel  # (an RBF's grad map would run eagerly at this size)
    assert kg.explain("grad_sum", k, X).engine == "dense"
    with kg.policy.use(_changed(tiled_min_pairs=1000)):
        assert kg.explain("grad_sum", k, X).engine == "tiled"
        tiled = kg.grad_sum(k, X)
    assert kg.explain("grad_sum", k, X).engine == "dense"
    np.testing.assert_allclose(tiled, kg.grad_sum(k, X), rtol=1e-12, atol=1e-12)
    small = rng.uniform(-1.0, 1.0, (50, 3))
    assert kg.explain("gram", k, small).engine == "eager"
    with kg.policy.use(_changed(lean_gram_max_work=0, eager_max_pairs=0)):
        assert kg.explain("gram", k, small).engine == "dense"


def test_a_one_dimensional_closed_grad_map_stays_dense_up_to_its_own_threshold(rng, policy_with):
    # Its dense program is one fused loop with no (n, m) buffer, so it has a later threshold.
    policy_with(
        tiled_min_pairs=1000, tiled_min_pairs_1d=300 * 300, lean_gaussian_grad_sum_max_pairs=(0, 0)
    )
    k = BY_ID["rbf"].kernel
    X = rng.uniform(-1.0, 1.0, 300)
    assert kg.explain("grad_sum", k, X).engine == "dense"
    assert kg.explain("grad_sum", k, rng.uniform(-1.0, 1.0, 301)).engine == "tiled"
    assert kg.explain("grad_sum", k, X, mode="forward").engine == "tiled"  # not the closed form
    assert kg.explain("grad_sum", k, rng.uniform(-1.0, 1.0, (300, 2))).engine == "tiled"
    assert kg.explain("gram_matvec", k, X, X, np.ones(300)).engine == "tiled"
    np.testing.assert_allclose(kg.grad_sum(k, X), kg.grad_sum(k, X, mode="forward"), atol=1e-12)


def test_programs_traced_under_one_policy_are_not_reused_under_another(rng):
    """The tile shape is read while tracing: under a second policy the same jitted function
    must trace anew (a shared trace cache would hand back the first policy's tiles)."""
    X = rng.uniform(-1.0, 1.0, (400, 2))
    k = BY_ID["matern52"].kernel
    reference = kg.grad_sum(k, X, mode="forward")
    texts = {}
    for rows, cols in [(64, 128), (16, 32)]:
        with kg.policy.use(_changed(tiled_min_pairs=1000, tile_blocks=(rows, cols))):
            lowered = sharding.one_device.lower(
                k, X, X, np.ones(400), op="grad_sum", method="closed"
            )
            texts[rows] = lowered.as_text()
            np.testing.assert_allclose(kg.grad_sum(k, X), reference, rtol=1e-11, atol=1e-12)
    # Each program holds tiles of its own policy's shape: 64 rows by 104 columns (400
    # columns in 4 equal blocks), or 16 rows by 32 columns.
    assert "tensor<64x104x" in texts[64] and "tensor<64x104x" not in texts[16]
    assert "tensor<16x32x" in texts[16] and "tensor<16x32x" not in texts[64]


def test_use_is_local_to_its_thread_and_refuses_non_policies():
    inside = {}
    with kg.policy.use(_changed(hot_calls=5)):
        thread = threading.Thread(target=lambda: inside.setdefault("hot", kg.policy.current()))
        thread.start()
        thread.join()
        assert kg.policy.current().hot_calls == 5
    assert inside["hot"] is kg.policy.CPU
    with pytest.raises(TypeError, match=r"dataclasses\.replace"):
        with kg.policy.use({"hot_calls": 5}):
            pass


def test_equal_policies_hash_alike_and_a_copy_does_not_carry_the_cached_hash():
    first, second = _changed(hot_calls=5), _changed(hot_calls=5)
    hash(first)  # caches it on the object
    assert first == second and hash(first) == hash(second)
    assert {first: "kept"}[second] == "kept"
    assert first != _changed(hot_calls=6)
    for twin in (pickle.loads(pickle.dumps(first)), copy.copy(first), copy.deepcopy(first)):
        assert "_hash" not in vars(twin)
        assert twin == first and hash(twin) == hash(first)
