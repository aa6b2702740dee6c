"""Sums, products and scalings of kernels: their rules come from their parts
(:func:`kernelgrad.derivatives.terms.add`, ``multiply`` and ``scale``)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ..derivatives import terms
from .base import AbstractKernel, positive


def _combined_ard(*kernels) -> int | None:
    dims = {k.ard_dims for k in kernels} - {None}
    if len(dims) > 1:
        raise ValueError(f"Cannot combine kernels with ARD lengthscales of lengths {sorted(dims)}.")
    return dims.pop() if dims else None


class AbstractCombination(AbstractKernel):
    """Two kernels combined pointwise: closed form, ARD dimension and smoothness come from
    both parts. A final subclass states the combination's value and rule."""

    # Both combinations have exactly these fields and this __init__, so they live here
    # (the pattern's one rule for them: all fields and __init__ in one class).
    k1: AbstractKernel
    k2: AbstractKernel

    def __init__(self, k1, k2):
        _combined_ard(k1, k2)
        self.k1, self.k2 = k1, k2

    @property
    def has_closed_form(self):
        return self.k1.has_closed_form and self.k2.has_closed_form

    @property
    def ard_dims(self):
        return _combined_ard(self.k1, self.k2)

    def without_second_derivative(self):
        return self.k1.without_second_derivative() + self.k2.without_second_derivative()


class Sum(AbstractCombination):
    """k(x, y) = k1(x, y) + k2(x, y)."""

    def __call__(self, x, y):
        return self.k1(x, y) + self.k2(x, y)

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        flags = {"order": order, "need_value": need_value}
        a = self.k1.tile(xp, X, Y, Xc, Yc, **flags)
        return terms.add(a, self.k2.tile(xp, X, Y, Xc, Yc, **flags))


class Product(AbstractCombination):
    """k(x, y) = k1(x, y) * k2(x, y)."""

    def __call__(self, x, y):
        return self.k1(x, y) * self.k2(x, y)

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        # The product rule needs both factors' values whatever the caller asked for.
        a = self.k1.tile(xp, X, Y, Xc, Yc, order=order)
        return terms.multiply(a, self.k2.tile(xp, X, Y, Xc, Yc, order=order))


class Scaled(AbstractKernel):
    """k(x, y) = scale * base(x, y), with a positive scale."""

    scale: Any
    base: AbstractKernel

    def __init__(self, scale, base):
        self.scale = positive("scale", scale)
        self.base = base

    def __call__(self, x, y):
        value = self.base(x, y)
        return jnp.asarray(self.scale, value.dtype) * value

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        base = self.base.tile(xp, X, Y, Xc, Yc, order=order, need_value=need_value)
        return terms.scale(xp.asarray(self.scale, dtype=X.dtype), base)

    @property
    def has_closed_form(self):
        return self.base.has_closed_form

    @property
    def ard_dims(self):
        return self.base.ard_dims

    def without_second_derivative(self):
        return self.base.without_second_derivative()
