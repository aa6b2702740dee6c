"""Repeat calls (:mod:`kernelgrad.execution.repeat`): once a NumPy call's size is hot, the next
calls of the same layout go straight to its compiled program. They must give what the
general path gives (values from the textbook RBF formula in NumPy, shapes, dtypes), read the
points afresh on every call, and leave every error to the general path.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from references import assert_close, rbf_closed_form

import kernelgrad as kg
from kernelgrad.execution import repeat


def rbf_pair(x, y):
    """The RBF kernel as a user pair function: AD paths, compiled at any size."""
    return jnp.exp(-0.5 * jnp.sum((x - y) ** 2))


def _calls(policy_with):
    policy_with(hot_calls=2)
    return kg.policy.current().hot_calls + 2  # the hot call itself leaves the entry


def _has_entry(k) -> bool:
    return bool(repeat._TABLES.peek(k))


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_repeat_calls_match_the_textbook_formula(d, dtype, rng, policy_with):
    k = kg.kernel(rbf_pair)
    calls = _calls(policy_with)
    X = rng.normal(size=(40, d)).astype(dtype)
    Y = rng.normal(size=(25, d)).astype(dtype)
    w = rng.normal(size=25).astype(dtype)
    if d == 1:
        X, Y = X[:, 0], Y[:, 0]
    X2, Y2 = X.reshape(40, d), Y.reshape(25, d)
    K, J, G = rbf_closed_form(X2, Y2, w, 1.0, 1.0)
    KXX, _, GXX = rbf_closed_form(X2, X2, np.ones(40), 1.0, 1.0)
    squeeze = (lambda a: a[..., 0]) if d == 1 else (lambda a: a)
    expected = {
        "gram X Y": (lambda: kg.gram(k, X, Y), K),
        "gram X": (lambda: kg.gram(k, X), KXX),
        "gram X X": (lambda: kg.gram(k, X, X), KXX),
        "jacobian": (lambda: kg.jacobian(k, X, Y), squeeze(J)),
        "grad": (lambda: kg.grad(k, X[3], Y), squeeze(J[3])),
        "grad Y=x": (lambda: kg.grad(k, X[3]), squeeze(np.zeros((1, d)))),
        "grad_sum": (lambda: kg.grad_sum(k, X), squeeze(GXX)),
        "grad_sum X X": (lambda: kg.grad_sum(k, X, X), squeeze(GXX)),
        "grad_sum weighted": (lambda: kg.grad_sum(k, X, Y, w), squeeze(G)),
    }
    for name, (call, reference) in expected.items():
        outs = [call() for _ in range(calls)]
        for out in (outs[0], outs[-1]):
            assert type(out) is np.ndarray and out.dtype == dtype, name
            assert out.shape == reference.shape, name
            assert_close(out, reference, err_msg=name)
    assert len(repeat._TABLES.peek(k)) == len(expected)  # each layout has its own entry


def test_repeat_calls_read_the_points_afresh(rng, policy_with):
    k = kg.kernel(rbf_pair)
    calls = _calls(policy_with)
    X = rng.normal(size=(30, 2))
    for _ in range(calls):
        kg.grad_sum(k, X)
    assert _has_entry(k)
    X[:] = rng.normal(size=(30, 2))  # the same array, new values
    _, _, G = rbf_closed_form(X, X, np.ones(30), 1.0, 1.0)
    assert_close(kg.grad_sum(k, X), G)
    fresh = rng.normal(size=(30, 2))  # another array of the same layout
    assert_close(kg.grad_sum(k, fresh), rbf_closed_form(fresh, fresh, np.ones(30), 1, 1)[2])


def test_other_layouts_and_kernels_miss(rng, policy_with):
    k = kg.kernel(rbf_pair)
    calls = _calls(policy_with)
    X = rng.normal(size=(30, 2))
    for _ in range(calls):
        kg.gram(k, X)
    assert repeat.call("gram", k, "auto", True, X) is not None
    assert repeat.call("gram", k, "auto", True, X[:20]) is None  # another n
    assert repeat.call("gram", k, "auto", True, X.astype(np.float32)) is None
    assert repeat.call("gram", k, "forward", True, X) is None  # another mode
    assert repeat.call("gram", k, "auto", False, X) is None  # the check skipped
    assert repeat.call("gram", k, "auto", True, jnp.asarray(X)) is None  # JAX in
    assert repeat.call("gram", k, "auto", True, X.tolist()) is None
    assert repeat.call("gram", kg.kernel(rbf_pair), "auto", True, X) is None  # another kernel
    assert repeat.call("jacobian", k, "auto", True, X) is None
    with kg.policy.use(kg.policy.CPU):  # another policy
        assert repeat.call("gram", k, "auto", True, X) is None


def test_non_finite_points_still_raise_after_the_size_is_hot(rng, policy_with):
    k = kg.kernel(rbf_pair)
    calls = _calls(policy_with)
    X = rng.normal(size=(30, 2))
    for _ in range(calls):
        kg.grad_sum(k, X)
        kg.grad(k, X[0], X)
    assert _has_entry(k)
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="X"):
        kg.grad_sum(k, bad)
    with pytest.raises(ValueError, match="Y"):
        kg.grad(k, X[0], bad)
    x = X[0].copy()
    x[0] = np.inf
    with pytest.raises(ValueError, match="x"):
        kg.grad(k, x, X)
    # Unchecked, as asked: the NaN row's gradient is NaN, and the call still runs.
    for _ in range(calls):
        out = kg.grad_sum(k, bad, check_finite=False)
    assert np.isnan(out[4]).all()
