"""Kernels from any user function of a pair of points, differentiated by AD."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .base import AbstractKernel


class PairFunction(AbstractKernel):
    """Any user function ``fn(x, y) -> scalar`` written with jax.numpy, differentiated by AD.

    It has no closed-form rules: only the ``forward`` and ``reverse`` modes apply (``auto``
    picks between them).
    """

    fn: Callable = eqx.field(static=True)

    def __call__(self, x, y):
        try:
            value = self.fn(x, y)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            name = getattr(self.fn, "__name__", self.fn)
            raise TypeError(
                f"The pair function {name!r} turned its traced points into NumPy arrays or "
                "Python numbers (with numpy or math functions, or float()/if on them). "
                "kernelgrad differentiates it with JAX: write it with jax.numpy, e.g. "
                "jnp.exp(-0.5 * jnp.sum((x - y) ** 2)), and jnp.where for branches."
            ) from None
        # Shapes are static, so this check also runs (once, at trace time) under jit and vmap.
        if jnp.shape(value) == (1,) and jnp.shape(x) == (1,):
            # A 1-D kernel written elementwise, exp(-(x - y)^2 / 2), as in the forum.
            return value[0]
        if jnp.shape(value) != ():
            raise ValueError(
                f"The pair function {getattr(self.fn, '__name__', self.fn)!r} returned shape "
                f"{jnp.shape(value)} for points of shape {jnp.shape(x)}; a kernel must return "
                "a scalar (reduce over the coordinates, e.g. with jnp.sum)."
            )
        return value

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        raise TypeError(
            f"{type(self).__name__} has no closed-form rules (it is differentiated by AD)."
        )

    @property
    def has_closed_form(self):
        return False

    @property
    def ard_dims(self):
        return None

    def without_second_derivative(self):
        return []  # AD decides; a user's function is taken as smooth


def kernel(fn: Callable) -> PairFunction:
    """Make a kernel from a pair function ``fn(x, y) -> scalar`` on points of shape ``(d,)``.

    Example:
        >>> import jax.numpy as jnp, kernelgrad as kg
        >>> k = kg.kernel(lambda x, y: jnp.exp(-0.5 * jnp.sum((x - y) ** 2)))
        >>> kg.grad_sum(k, [0.0, 1.0]).shape
        (2,)
    """
    if isinstance(fn, AbstractKernel):
        return fn
    if not callable(fn):
        raise TypeError(f"kernel(fn) needs a callable fn(x, y) -> scalar, got {type(fn).__name__}.")
    return PairFunction(fn)
