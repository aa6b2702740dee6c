"""Dot-product kernels: k(x, y) = g(x . y), with g' and g''."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import terms
from .base import AbstractKernel, check_pair, positive


class AbstractDotProductKernel(AbstractKernel):
    """k(x, y) = g(x . y). A final subclass defines ``g``, ``dg`` and ``d2g`` against ``xp``."""

    @abc.abstractmethod
    def g(self, xp, t, dtype):
        """The kernel as a function of t = x . y."""

    @abc.abstractmethod
    def dg(self, xp, t, dtype):
        """g'(t)."""

    @abc.abstractmethod
    def d2g(self, xp, t, dtype):
        """g''(t)."""

    @property
    def ard_dims(self):
        return None

    @property
    def has_closed_form(self):
        return True

    def without_second_derivative(self):
        return []

    def __call__(self, x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        check_pair(self, x, y)
        return self.g(jnp, jnp.dot(x, y), jnp.result_type(x, y))

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        """``g``; ``dk/dx = g' y``; ``d2k/dx dy = g'' y x^T + g' I``."""
        dtype = X.dtype
        t = terms.matmul(xp, X, Y.T)
        value = self.g(xp, t, dtype) if need_value or order != 1 else None
        if order == 0:
            return terms.Tile(value)
        one = xp.asarray(1.0, dtype=dtype)
        slope = self.dg(xp, t, dtype)
        dx = (terms.Vec(slope, terms.Field("y", one)),)
        if order == 1:
            return terms.Tile(value, dx)
        return terms.Tile(
            value,
            dx,
            (terms.Vec(slope, terms.Field("x", one)),),
            (terms.Outer(self.d2g(xp, t, dtype), terms.Field("y", one), terms.Field("x", one)),),
            (terms.Diagonal(slope, one),),
        )


class Linear(AbstractDotProductKernel):
    """Linear: k(x, y) = variance * x . y."""

    variance: Any

    def __init__(self, variance=1.0):
        self.variance = positive("variance", variance)

    def g(self, xp, t, dtype):
        return xp.asarray(self.variance, dtype=dtype) * t

    def dg(self, xp, t, dtype):
        return xp.asarray(self.variance, dtype=dtype) * xp.ones_like(t)

    def d2g(self, xp, t, dtype):
        return xp.zeros_like(t)


class Polynomial(AbstractDotProductKernel):
    """Polynomial: k(x, y) = (x . y + offset)^degree, as in GPyTorch's ``PolynomialKernel``."""

    offset: Any
    degree: int = eqx.field(static=True)

    def __init__(self, degree=2, offset=1.0):
        try:
            valid = not isinstance(degree, bool) and float(degree).is_integer() and degree >= 0
        except (TypeError, ValueError):  # a string, an array of several values, ...
            valid = False
        if not valid:
            raise ValueError(f"degree must be a non-negative integer, got {degree!r}.")
        self.degree = int(degree)
        if isinstance(offset, jax.core.Tracer):
            self.offset = offset
        else:
            offset = np.asarray(offset, dtype=np.float64)
            if offset.ndim != 0 or not np.isfinite(offset) or offset < 0:
                raise ValueError(f"offset must be a finite scalar >= 0, got {offset.tolist()}.")
            self.offset = offset

    def g(self, xp, t, dtype):
        return (t + xp.asarray(self.offset, dtype=dtype)) ** self.degree

    def dg(self, xp, t, dtype):
        if self.degree == 0:
            return xp.zeros_like(t)
        return self.degree * (t + xp.asarray(self.offset, dtype=dtype)) ** (self.degree - 1)

    def d2g(self, xp, t, dtype):
        if self.degree < 2:
            return xp.zeros_like(t)
        p = self.degree
        return p * (p - 1) * (t + xp.asarray(self.offset, dtype=dtype)) ** (p - 2)
