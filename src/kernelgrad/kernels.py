"""Covariance functions as immutable pytrees.

Every kernel knows its value on one pair of points, ``k(x, y)`` for ``x`` and ``y`` of
shape ``(d,)``. Hyperparameters are array leaves, so ``jax.grad`` of a loss over a kernel
works. They are stored as NumPy arrays so that building a kernel never starts JAX's runtime:
small problems then run eagerly in NumPy with no compile at all.

Each kernel family also states its closed form, once, in the one vocabulary of
:mod:`kernelgrad.terms`: :meth:`AbstractKernel.tile` gives its values and derivative terms on
a block of points. Stationary kernels derive theirs from a *profile* ``f`` on the scaled
squared distance ``s = sum_a (x_a - y_a)^2 / l_a^2`` and its derivatives ``f'`` and ``f''``;
dot-product kernels from ``g(x . y)``, ``g'`` and ``g''``; sums, products and scaling from
their parts (:func:`kernelgrad.terms.add`, ``multiply``, ``scale``). Pair functions have no
rules and are differentiated by AD. A new family is one class here.

The classes follow equinox's abstract/final pattern: a class is either abstract (its name
starts with ``Abstract``; it declares abstract methods and may implement methods that no
subclass overrides) or final (it implements what is left abstract). All of a kernel's fields
and its ``__init__`` are defined in one class: the final one, except for the combinations,
whose two parts are owned by :class:`AbstractCombination`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import terms

__all__ = [
    "AbstractKernel",
    "AbstractStationaryKernel",
    "AbstractDotProductKernel",
    "RBF",
    "Matern12",
    "Matern32",
    "Matern52",
    "RationalQuadratic",
    "Periodic",
    "Linear",
    "Polynomial",
    "AbstractCombination",
    "Sum",
    "Product",
    "Scaled",
    "PairFunction",
    "kernel",
]


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


def _check_pair(kernel, x, y) -> None:
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

    def __add__(self, other):
        if not isinstance(other, AbstractKernel):
            return NotImplemented
        return Sum(self, other)

    def __mul__(self, other):
        if isinstance(other, AbstractKernel):
            return Product(self, other)
        if isinstance(other, (int, float, np.ndarray, jax.Array, np.generic)):
            return Scaled(other, self)
        return NotImplemented

    __rmul__ = __mul__


# --------------------------------------------------------------------------- stationary


class AbstractStationaryKernel(AbstractKernel):
    """k(x, y) = variance * f(s), with s = sum_a w_a (x_a - y_a)^2 (w = 1 / lengthscale^2).

    A final subclass owns ``variance`` and ``lengthscale`` and defines the profile ``f`` and
    its derivatives ``df`` and ``d2f`` in closed form, against an array namespace ``xp``
    (NumPy or jax.numpy), finite at s = 0 wherever the kernel is differentiable there; its
    profile's own hyperparameters (:meth:`profile_params`); and the squared distance's weights
    (:meth:`inverse_sq_scale`). Everything else, the pair call and the rules to second order,
    follows here.
    """

    variance: eqx.AbstractVar[Any]
    lengthscale: eqx.AbstractVar[Any]

    #: Whether the kernel is differentiable at r = 0 (Matern 1/2 has a kink there).
    differentiable_at_zero: ClassVar[bool] = True

    #: Whether d2f is finite at s = 0, i.e. the kernel is twice differentiable at r = 0.
    twice_differentiable_at_zero: ClassVar[bool] = True

    @staticmethod
    @abc.abstractmethod
    def f(xp, s, params):
        """The profile: k = variance * f(s)."""

    @staticmethod
    @abc.abstractmethod
    def df(xp, s, params):
        """f'(s)."""

    @staticmethod
    @abc.abstractmethod
    def d2f(xp, s, params):
        """f''(s)."""

    #: Names of the hyperparameters that enter the profile itself (RQ's alpha, ...), in the
    #: order ``f``, ``df`` and ``d2f`` receive them.
    profile_fields: ClassVar[tuple[str, ...]] = ()

    #: Whether the lengthscale scales the distance (Periodic's scales its sine instead).
    lengthscale_scales_distance: ClassVar[bool] = True

    def profile_params(self, xp, dtype) -> tuple:
        """The hyperparameters named in ``profile_fields``, as ``xp`` arrays."""
        return tuple(xp.asarray(getattr(self, name), dtype=dtype) for name in self.profile_fields)

    def inverse_sq_scale(self, xp, dtype):
        """Per-dimension weights w of the squared distance: 1 / lengthscale^2, or 1."""
        if not self.lengthscale_scales_distance:
            return xp.asarray(1.0, dtype=dtype)
        return 1.0 / xp.asarray(self.lengthscale, dtype=dtype) ** 2

    @property
    def ard_dims(self):
        shape = np.shape(self.lengthscale)
        return shape[0] if len(shape) == 1 else None

    @property
    def has_closed_form(self):
        return True

    def without_second_derivative(self):
        return [] if self.twice_differentiable_at_zero else [type(self).__name__]

    def __call__(self, x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        _check_pair(self, x, y)
        dtype = jnp.result_type(x, y)
        diff = x - y
        s = jnp.sum(diff * diff * self.inverse_sq_scale(jnp, dtype))
        profile = _differentiable_profile(type(self))
        return jnp.asarray(self.variance, dtype) * profile(s, self.profile_params(jnp, dtype))

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        """``v f``; ``dk/dx = 2 v f' w (x - y)``; ``d2k/dx dy = -4 v f'' w (x - y) w (x - y)^T
        - 2 v f' diag(w)`` (see :mod:`kernelgrad.terms`)."""
        dtype = X.dtype
        w = self.inverse_sq_scale(xp, dtype)
        params = self.profile_params(xp, dtype)
        # A kernel with a kink at r = 0 (Matern 1/2) must tell near-duplicates from
        # duplicates at any d: the expansion's noise floor would blur them. Second-order
        # terms take the difference form up to NumPy's limit in every namespace.
        expand = self.differentiable_at_zero and terms.expands(np if order == 2 else xp, X.shape[1])
        s = terms.squared_distance(xp, X, Y, Xc, Yc, w, expand=expand)
        v = xp.asarray(self.variance, dtype=dtype)
        value = v * self.f(xp, s, params) if need_value or order != 1 else None
        if order == 0:
            return terms.Tile(value)
        slope = v * self.df(xp, s, params)
        diff = terms.Field("diff", w)
        dx = (terms.Vec(2.0 * slope, diff),)
        if order == 1:
            return terms.Tile(value, dx)
        return terms.Tile(
            value,
            dx,
            (terms.Vec(-2.0 * slope, diff),),
            (terms.Outer(-4.0 * v * self.d2f(xp, s, params), diff, diff),),
            (terms.Diagonal(-2.0 * slope, w),),
        )


def _differentiable_profile(cls) -> Callable:
    """f(s, params) with a JVP through the closed-form f' and f'' rather than AD of sqrt.

    Plain AD of sqrt(s) at s = 0 gives inf * 0 = NaN for Matern kernels whose gradient is
    finite there; routing tangents through f' and f'' keeps every order finite where the
    maths is.
    """
    cached = _PROFILE_CACHE.get(cls)
    if cached is not None:
        return cached

    def with_derivative(fn, dfn):
        @jax.custom_jvp
        def g(s, params):
            return fn(jnp, s, params)

        @g.defjvp
        def g_jvp(primals, tangents):
            s, params = primals
            ds, dparams = tangents
            # Tangents of hyperparameters inside f (RQ's alpha, the period) go through plain
            # AD at fixed s, which never differentiates sqrt(s).
            value, dvalue = jax.jvp(lambda p: fn(jnp, s, p), (params,), (dparams,))
            return value, dvalue + dfn(s, params) * ds

        return g

    # Third derivatives (needed only by finite-difference checks of second-order quantities)
    # come from plain AD of the closed-form f'', exact away from s = 0.
    d1 = with_derivative(cls.df, lambda s, params: cls.d2f(jnp, s, params))
    profile = with_derivative(cls.f, d1)
    _PROFILE_CACHE[cls] = profile
    return profile


_PROFILE_CACHE: dict[type, Callable] = {}


def _safe_sqrt(xp, s):
    """sqrt(s) that is 0 at s <= 0 and never produces NaN gradients there."""
    positive = s > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, s, 1.0)), 0.0)


def _stationary_scales(variance, lengthscale) -> tuple[Any, Any]:
    """A stationary kernel's (variance, lengthscale), checked (the lengthscale may be ARD)."""
    return positive("variance", variance), positive("lengthscale", lengthscale, vector=True)


class RBF(AbstractStationaryKernel):
    """Squared exponential: k(x, y) = variance * exp(-r^2 / (2 lengthscale^2)).

    ``f(s) = exp(-s / 2)``, ``f' = -f / 2``, ``f'' = f / 4``.
    """

    variance: Any
    lengthscale: Any

    def __init__(self, variance=1.0, lengthscale=1.0):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)

    @staticmethod
    def f(xp, s, params):
        return xp.exp(-0.5 * s)

    @staticmethod
    def df(xp, s, params):
        return -0.5 * xp.exp(-0.5 * s)

    @staticmethod
    def d2f(xp, s, params):
        return 0.25 * xp.exp(-0.5 * s)


class Matern12(AbstractStationaryKernel):
    """Matern 1/2 (exponential): k(x, y) = variance * exp(-r / lengthscale).

    Not differentiable at r = 0. By convention the gradient there is the zero subgradient
    (the midpoint of the one-sided slopes, by symmetry), in every mode. Second derivatives
    are refused.
    """

    differentiable_at_zero: ClassVar[bool] = False
    twice_differentiable_at_zero: ClassVar[bool] = False

    variance: Any
    lengthscale: Any

    def __init__(self, variance=1.0, lengthscale=1.0):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)

    @staticmethod
    def f(xp, s, params):
        return xp.exp(-_safe_sqrt(xp, s))

    @staticmethod
    def df(xp, s, params):
        r = _safe_sqrt(xp, s)
        # f'(s) = -exp(-r) / (2 r): infinite at r = 0, where the zero subgradient applies.
        return xp.where(r > 0, -0.5 * xp.exp(-r) / xp.where(r > 0, r, 1.0), 0.0)

    @staticmethod
    def d2f(xp, s, params):
        r = _safe_sqrt(xp, s)
        safe_r = xp.where(r > 0, r, 1.0)
        return xp.where(r > 0, 0.25 * xp.exp(-r) * (1.0 + r) / safe_r**3, 0.0)


class Matern32(AbstractStationaryKernel):
    """Matern 3/2: k = variance * (1 + sqrt(3) r / l) exp(-sqrt(3) r / l).

    ``f'(s) = -(3/2) exp(-sqrt(3 s))`` is finite at s = 0, so first derivatives exist
    everywhere; ``f''`` is not, so second derivatives at r = 0 are refused.
    """

    twice_differentiable_at_zero: ClassVar[bool] = False

    variance: Any
    lengthscale: Any

    def __init__(self, variance=1.0, lengthscale=1.0):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)

    @staticmethod
    def f(xp, s, params):
        u = _safe_sqrt(xp, 3.0 * s)
        return (1.0 + u) * xp.exp(-u)

    @staticmethod
    def df(xp, s, params):
        return -1.5 * xp.exp(-_safe_sqrt(xp, 3.0 * s))

    @staticmethod
    def d2f(xp, s, params):
        u = _safe_sqrt(xp, 3.0 * s)
        return xp.where(u > 0, 2.25 * xp.exp(-u) / xp.where(u > 0, u, 1.0), 0.0)


class Matern52(AbstractStationaryKernel):
    """Matern 5/2: k = variance * (1 + sqrt(5) r / l + 5 r^2 / (3 l^2)) exp(-sqrt(5) r / l).

    ``f'(s) = -(5/6)(1 + sqrt(5 s)) exp(-sqrt(5 s))`` and ``f''(s) = (25/12) exp(-sqrt(5 s))``.
    """

    variance: Any
    lengthscale: Any

    def __init__(self, variance=1.0, lengthscale=1.0):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)

    @staticmethod
    def f(xp, s, params):
        u = _safe_sqrt(xp, 5.0 * s)
        return (1.0 + u + u * u / 3.0) * xp.exp(-u)

    @staticmethod
    def df(xp, s, params):
        u = _safe_sqrt(xp, 5.0 * s)
        return -(5.0 / 6.0) * (1.0 + u) * xp.exp(-u)

    @staticmethod
    def d2f(xp, s, params):
        return (25.0 / 12.0) * xp.exp(-_safe_sqrt(xp, 5.0 * s))


class RationalQuadratic(AbstractStationaryKernel):
    """Rational quadratic: k = variance * (1 + r^2 / (2 alpha l^2))^(-alpha).

    ``f(s) = (1 + s / (2 alpha))^-alpha`` as in scikit-learn and GPyTorch.
    """

    variance: Any
    lengthscale: Any
    alpha: Any

    def __init__(self, variance=1.0, lengthscale=1.0, alpha=1.0):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)
        self.alpha = positive("alpha", alpha)

    profile_fields = ("alpha",)

    @staticmethod
    def f(xp, s, params):
        (alpha,) = params
        return (1.0 + s / (2.0 * alpha)) ** (-alpha)

    @staticmethod
    def df(xp, s, params):
        (alpha,) = params
        return -0.5 * (1.0 + s / (2.0 * alpha)) ** (-alpha - 1.0)

    @staticmethod
    def d2f(xp, s, params):
        (alpha,) = params
        return (alpha + 1.0) / (4.0 * alpha) * (1.0 + s / (2.0 * alpha)) ** (-alpha - 2.0)


class Periodic(AbstractStationaryKernel):
    """Periodic (exp-sine-squared): k = variance * exp(-2 sin^2(pi r / period) / l^2).

    ``r`` is the plain Euclidean distance, as in scikit-learn's ``ExpSineSquared``; the
    lengthscale is a scalar and scales the sine, not the distance. Here ``s = r^2`` and
    ``f'(s) = -(2 pi^2 / (period^2 l^2)) sinc(2 r / period) f(s)``, finite at r = 0.
    """

    variance: Any
    lengthscale: Any
    period: Any

    def __init__(self, variance=1.0, lengthscale=1.0, period=1.0):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)
        if np.ndim(self.lengthscale) != 0:
            raise ValueError(
                "Periodic takes a scalar lengthscale (it scales sin^2, not the distance); "
                f"got shape {np.shape(self.lengthscale)}."
            )
        self.period = positive("period", period)

    # The lengthscale scales sin^2 (it enters the profile), not the distance.
    profile_fields = ("lengthscale", "period")
    lengthscale_scales_distance = False

    @staticmethod
    def f(xp, s, params):
        lengthscale, period = params
        sine = xp.sin(math.pi * _safe_sqrt(xp, s) / period)
        return xp.exp(-2.0 * sine * sine / lengthscale**2)

    @staticmethod
    def df(xp, s, params):
        lengthscale, period = params
        r = _safe_sqrt(xp, s)
        c = -2.0 * (math.pi / period) ** 2 / lengthscale**2
        return c * xp.sinc(2.0 * r / period) * Periodic.f(xp, s, params)

    @staticmethod
    def d2f(xp, s, params):
        lengthscale, period = params
        r = _safe_sqrt(xp, s)
        c = -2.0 * (math.pi / period) ** 2 / lengthscale**2
        x = 2.0 * math.pi * r / period
        # d/ds sinc(2r/p) = (x cos x - sin x) / x^3 * (2 pi / p)^2 / 2, with limit -(2pi/p)^2/6.
        # Below x = 0.3 the direct form cancels badly in float32; its Taylor series to x^6 is
        # exact to 2e-11 there.
        small = x < 0.3
        xs = xp.where(small, 1.0, x)
        x2 = x * x
        series = -1.0 / 3.0 + x2 * (1.0 / 30.0 - x2 * (1.0 / 840.0 - x2 / 45360.0))
        ratio = xp.where(small, series, (xs * xp.cos(xs) - xp.sin(xs)) / xs**3)
        dsinc = 0.5 * (2.0 * math.pi / period) ** 2 * ratio
        sinc = xp.sinc(2.0 * r / period)
        return c * (dsinc + c * sinc * sinc) * Periodic.f(xp, s, params)


# --------------------------------------------------------------------------- dot product


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
        _check_pair(self, x, y)
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


# --------------------------------------------------------------------------- composites


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


# --------------------------------------------------------------------------- pair functions


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
