"""The kernel interface every family implements, and the checks on hyperparameters and
point pairs that every family shares."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import terms


def positive(name: str, value: Any, *, vector: bool = False) -> np.ndarray:
    """A hyperparameter as a private, read-only float64 array, checked positive and finite
    where concrete (every positive leaf of a kernel or a GP is made by this)."""
    if isinstance(value, jax.core.Tracer):
        # Inside a transformation the value is abstract; the check ran when it was concrete.
        return value
    if isinstance(value, jax.Array):
        arr = value
    else:
        # A private, read-only copy: memos on the kernel (eager.py) can never go stale
        # through the caller editing their array in place.
        arr = np.array(value, dtype=np.float64)
        arr.flags.writeable = False
    if arr.ndim > (1 if vector else 0):
        expected = "a scalar or a 1-D array (one per dimension)" if vector else "a scalar"
        raise ValueError(f"{name} must be {expected}, got shape {arr.shape}.")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"{name} must not be empty.")
    if not np.all(np.isfinite(np.asarray(arr))) or not np.all(np.asarray(arr) > 0):
        raise ValueError(f"{name} must be positive and finite, got {np.asarray(arr).tolist()}.")
    return arr


def check_pair(kernel, x, y) -> None:
    """Raise a ValueError, in the caller's terms, for points that do not fit one another or
    the kernel's per-dimension lengthscales (shapes are static, so this also runs traced)."""
    xs, ys = jnp.shape(x), jnp.shape(y)
    ard = kernel.ard_dims
    if len(xs) > 1 or len(ys) > 1 or (xs and ys and xs != ys):
        raise ValueError(
            f"{type(kernel).__name__} takes one pair of points of shape (d,); got x of shape "
            f"{xs} and y of shape {ys}. Use kernelgrad.gram for many points."
        )
    d = (xs or ys or (1,))[0]
    if ard is not None and d != ard:
        raise ValueError(
            f"{type(kernel).__name__} has {ard} per-dimension lengthscales but the points have "
            f"shape {xs or ys}; expected points of shape ({ard},)."
        )


class AbstractKernel(eqx.Module):
    """A covariance function k(x, y) on points of shape (d,)."""

    @abc.abstractmethod
    def __call__(self, x, y):
        """Value on one pair of points ``x`` and ``y``, each of shape ``(d,)``: a scalar."""

    @abc.abstractmethod
    def tile(self, xp, X, Y, Xc, Yc, *, order: int = 1, need_value: bool = True) -> terms.Tile:
        """Values and derivative terms on X (n, d) against Y (m, d), to ``order`` (0, 1, 2).

        ``Xc`` and ``Yc`` are X and Y shifted by one common centre (stationary rules compute
        on them: differences are unchanged, and the squared-norm expansion loses far less
        precision). ``xp`` is NumPy or jax.numpy. With ``need_value=False`` an order-1 tile
        may leave its values out. A kernel without rules raises a TypeError.
        """

    @property
    @abc.abstractmethod
    def has_closed_form(self) -> bool:
        """Whether :meth:`tile` has analytic rules for this kernel."""

    @property
    @abc.abstractmethod
    def ard_dims(self) -> int | None:
        """Number of dimensions fixed by a per-dimension hyperparameter, or None."""

    @abc.abstractmethod
    def without_second_derivative(self) -> list[str]:
        """Names of the parts of this kernel that are not twice differentiable at r = 0."""

    # The combinations subclass this class, so their module is imported when first used.
    def __add__(self, other):
        from .combinations import Sum

        if not isinstance(other, AbstractKernel):
            return NotImplemented
        return Sum(self, other)

    def __mul__(self, other):
        from .combinations import Product, Scaled

        if isinstance(other, AbstractKernel):
            return Product(self, other)
        if isinstance(other, (int, float, np.ndarray, jax.Array, np.generic)):
            return Scaled(other, self)
        return NotImplemented

    __rmul__ = __mul__
