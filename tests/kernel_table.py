"""The one table of kernel instances that every test in the project draws from.

Each :class:`KernelCase` carries an id (for ``pytest.mark.parametrize``) and the facts a test
needs to decide what to expect of that kernel: whether closed-form rules apply, whether it is
differentiable at r = 0, whether it is stationary (so ``k(x, x)`` is its variance) and which
input dimension it requires (ARD lengthscales fix d; the forum's kernel is 1-D).

Import it as ``from kernel_table import CASES`` (``tests/`` is on ``sys.path`` under pytest's
default rootdir-based import mode) and select with :func:`select`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pytest

import kernelgrad as kg

#: Input dimension used for cases that accept any d. ARD cases below are built for it.
ARD_DIMS = 3


@dataclass(frozen=True)
class KernelCase:
    """One kernel under test and what to expect of it.

    Attributes:
        id: short, unique name used as the pytest id.
        kernel: the kernel instance.
        closed: whether ``mode="closed"`` applies (built-ins and their composites).
        smooth_at_zero: whether the kernel is differentiable at r = 0 (Matern 1/2 is not;
            kernelgrad returns its zero subgradient there).
        twice_smooth_at_zero: whether second input derivatives exist at r = 0.
        stationary: whether k(x, y) depends only on x - y.
        diag: k(x, x) for every x when the kernel is stationary (its variance), else None.
        dims: the one input dimension the kernel accepts, or None for any d.
    """

    id: str
    kernel: kg.AbstractKernel
    closed: bool = True
    smooth_at_zero: bool = True
    twice_smooth_at_zero: bool = True
    stationary: bool = True
    diag: float | None = None
    dims: int | None = None

    def __repr__(self) -> str:
        return self.id

    def accepts(self, d: int) -> bool:
        """Whether points of dimension ``d`` are valid for this kernel."""
        return self.dims is None or self.dims == d

    def dim(self, default: int = ARD_DIMS) -> int:
        """The dimension to test this kernel at: its required one, else ``default``."""
        return self.dims if self.dims is not None else default


def _rbf_pair(x, y):
    """RBF with unit variance and lengthscale 0.8, written as a plain pair function."""
    diff = x - y
    return jnp.exp(-0.5 * jnp.sum(diff * diff) / 0.64)


def _forum_pair(x, y):
    """The forum's kernel, bug included: exp(-0.5 (-2 x y + (x + y))), for d = 1.

    The post's ``r2 = (-2X * X2') + (X .+ X2')`` adds the points where it meant to add their
    squares. It is not a valid covariance (not stationary, not positive definite), but it is a
    smooth pair function, which is all the derivative transforms need.
    """
    return jnp.exp(-0.5 * (-2.0 * jnp.dot(x, y) + jnp.sum(x + y)))


_ARD = np.array([0.7, 1.3, 2.1])

CASES: tuple[KernelCase, ...] = (
    # Built-ins, scalar lengthscale.
    KernelCase("rbf", kg.RBF(variance=1.7, lengthscale=0.9), diag=1.7),
    KernelCase("rbf_unit", kg.RBF(), diag=1.0),
    KernelCase(
        "matern12",
        kg.Matern12(variance=1.2, lengthscale=1.1),
        smooth_at_zero=False,
        twice_smooth_at_zero=False,
        diag=1.2,
    ),
    KernelCase(
        "matern32",
        kg.Matern32(variance=0.8, lengthscale=1.4),
        twice_smooth_at_zero=False,
        diag=0.8,
    ),
    KernelCase("matern52", kg.Matern52(variance=1.5, lengthscale=0.6), diag=1.5),
    KernelCase("rq", kg.RationalQuadratic(variance=0.9, lengthscale=1.2, alpha=0.7), diag=0.9),
    KernelCase("periodic", kg.Periodic(variance=1.3, lengthscale=0.8, period=2.5), diag=1.3),
    # k(x, x) = variance * c^(2 beta): the literature's form, (c^2 + r^2)^beta.
    KernelCase(
        "imq",
        kg.InverseMultiquadric(variance=1.4, lengthscale=0.9, c=1.2, beta=-0.6),
        diag=1.4 * 1.44**-0.6,
    ),
    KernelCase("linear", kg.Linear(variance=0.6), stationary=False),
    KernelCase("poly3", kg.Polynomial(degree=3, offset=0.5), stationary=False),
    KernelCase("poly1", kg.Polynomial(degree=1, offset=0.0), stationary=False),
    # ARD variants: one lengthscale per dimension, so d is fixed.
    KernelCase("rbf_ard", kg.RBF(variance=1.1, lengthscale=_ARD), diag=1.1, dims=ARD_DIMS),
    KernelCase(
        "matern32_ard",
        kg.Matern32(variance=1.0, lengthscale=_ARD),
        twice_smooth_at_zero=False,
        diag=1.0,
        dims=ARD_DIMS,
    ),
    KernelCase(
        "matern52_ard", kg.Matern52(variance=0.7, lengthscale=_ARD), diag=0.7, dims=ARD_DIMS
    ),
    KernelCase(
        "rq_ard",
        kg.RationalQuadratic(variance=1.0, lengthscale=_ARD, alpha=2.5),
        diag=1.0,
        dims=ARD_DIMS,
    ),
    # Composites: sums, products and scaling, mixing stationary and dot-product kernels.
    KernelCase(
        "sum_rbf_matern52",
        kg.RBF(variance=1.0, lengthscale=0.7) + kg.Matern52(variance=0.5, lengthscale=2.0),
        diag=1.5,
    ),
    KernelCase(
        "product_rbf_periodic",
        kg.RBF(variance=2.0, lengthscale=1.5) * kg.Periodic(lengthscale=1.0, period=1.7),
        diag=2.0,
    ),
    KernelCase(
        "scaled_matern32", 2.5 * kg.Matern32(lengthscale=0.9), twice_smooth_at_zero=False, diag=2.5
    ),
    KernelCase(
        "sum_linear_rbf_ard",
        kg.Linear(variance=0.3) + kg.RBF(lengthscale=_ARD),
        stationary=False,
        dims=ARD_DIMS,
    ),
    KernelCase(
        "product_poly_rq",
        kg.Polynomial(degree=2, offset=1.0) * kg.RationalQuadratic(alpha=1.5),
        stationary=False,
    ),
    KernelCase(
        "nested",
        0.5 * (kg.RBF(lengthscale=1.2) * kg.Matern52()) + kg.Linear(variance=0.2),
        stationary=False,
    ),
    # Plain pair functions: no closed form, AD only.
    KernelCase("pair_rbf", kg.kernel(_rbf_pair), closed=False, diag=1.0),
    KernelCase("pair_forum", kg.kernel(_forum_pair), closed=False, stationary=False, dims=1),
)

BY_ID: dict[str, KernelCase] = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "kernel table ids must be unique"


def select(predicate: Callable[[KernelCase], bool] = lambda case: True) -> list:
    """Cases matching ``predicate``, wrapped in ``pytest.param`` with their ids."""
    return [pytest.param(case, id=case.id) for case in CASES if predicate(case)]


def sample_points(rng: np.random.Generator, n: int, d: int, dtype=np.float64) -> np.ndarray:
    """n distinct points in d dimensions, spread over about [-1.5, 1.5]^d: (n, d) NumPy."""
    return rng.uniform(-1.5, 1.5, size=(n, d)).astype(dtype)


def modes_for(case) -> list[str]:
    """Every mode that applies to ``case``: ``"closed"`` only where it has rules."""
    modes = ("closed", "forward", "reverse", "auto")
    return [mode for mode in modes if mode != "closed" or case.closed]


def points_with_a_duplicate(case, rng, n: int = 5, m: int = 4):
    """X (n, d) and Y (m, d) with x_1 = y_0, so that r = 0 is among the pairs."""
    d = case.dim()
    X, Y = sample_points(rng, n, d), sample_points(rng, m, d)
    X[1] = Y[0]
    return X, Y
