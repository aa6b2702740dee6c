"""Covariance functions as immutable pytrees.

Every kernel knows its value on one pair of points, ``k(x, y)`` for ``x`` and ``y`` of
shape ``(d,)``. Hyperparameters are array leaves, so ``jax.grad`` of a loss over a kernel
works. They are stored as NumPy arrays so that building a kernel never starts JAX's runtime:
small problems then run eagerly in NumPy with no compile at all.

Each kernel family also states its closed form, once, in the one vocabulary of
:mod:`kernelgrad.derivatives.terms`: :meth:`AbstractKernel.tile` gives its values and derivative
terms on a block of points. Stationary kernels derive theirs from a *profile* ``f`` on the scaled
squared distance ``s = sum_a (x_a - y_a)^2 / l_a^2`` and its derivatives ``f'`` and ``f''``;
dot-product kernels from ``g(x . y)``, ``g'`` and ``g''``; sums, products and scaling from
their parts (:func:`kernelgrad.derivatives.terms.add`, ``multiply``, ``scale``). Pair functions have
no rules and are differentiated by AD. A new family is one class here.

The classes follow equinox's abstract/final pattern: a class is either abstract (its name
starts with ``Abstract``; it declares abstract methods and may implement methods that no
subclass overrides) or final (it implements what is left abstract). All of a kernel's fields
and its ``__init__`` are defined in one class: the final one, except for the combinations,
whose two parts are owned by :class:`AbstractCombination`.
"""

from .base import AbstractKernel, positive
from .combinations import AbstractCombination, Product, Scaled, Sum
from .dot_product import AbstractDotProductKernel, Linear, Polynomial
from .pair_function import PairFunction, kernel
from .stationary import (
    RBF,
    AbstractStationaryKernel,
    InverseMultiquadric,
    Matern12,
    Matern32,
    Matern52,
    Periodic,
    RationalQuadratic,
)

__all__ = [
    "AbstractKernel",
    "AbstractStationaryKernel",
    "AbstractDotProductKernel",
    "RBF",
    "Matern12",
    "Matern32",
    "Matern52",
    "RationalQuadratic",
    "InverseMultiquadric",
    "Periodic",
    "Linear",
    "Polynomial",
    "AbstractCombination",
    "Sum",
    "Product",
    "Scaled",
    "PairFunction",
    "kernel",
    "positive",
]
