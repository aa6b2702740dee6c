"""Stationary kernels: k(x, y) = variance * f(s), s = sum_a (x_a - y_a)^2 / l_a^2, with the
family's profile f and its derivatives f' and f'' (from which every closed form follows)."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import terms
from .base import AbstractKernel, check_pair, positive


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

    #: Whether f(s) = exp(-s / 2), so that exp(-s / 2) factors as a(x) a(y) exp(z_x . z_y)
    #: with z = x / lengthscale and a = exp(-|z|^2 / 2) (:mod:`kernelgrad.execution.gaussian`).
    gaussian_profile: ClassVar[bool] = False

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
        check_pair(self, x, y)
        dtype = jnp.result_type(x, y)
        diff = x - y
        s = jnp.sum(diff * diff * self.inverse_sq_scale(jnp, dtype))
        profile = _differentiable_profile(type(self))
        return jnp.asarray(self.variance, dtype) * profile(s, self.profile_params(jnp, dtype))

    def tile(self, xp, X, Y, Xc, Yc, *, order=1, need_value=True):
        """``v f``; ``dk/dx = 2 v f' w (x - y)``; ``d2k/dx dy = -4 v f'' w (x - y) w (x - y)^T
        - 2 v f' diag(w)`` (see :mod:`kernelgrad.derivatives.terms`)."""
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
        if order == 2 and self.gaussian_profile:
            # f' = -f / 2 and f'' = f / 4: every term's coefficient is the value itself, its
            # factors in the fields' scales. Consumers that batch by coefficient array and
            # field (the gradient-kernel products) then read one (n, m) array, not four.
            plus, minus = terms.Field("diff", w), terms.Field("diff", -w)
            return terms.Tile(
                value,
                (terms.Vec(value, minus),),
                (terms.Vec(value, plus),),
                (terms.Outer(value, minus, plus),),
                (terms.Diagonal(value, w),),
            )
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
    """sqrt(s) that is 0 at s <= 0 and never produces NaN gradients there. A NaN s (a NaN
    coordinate) fails ``s > 0`` too, and stays NaN (0 * s) rather than passing for r = 0."""
    positive = s > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, s, 1.0)), 0.0 * s)


def _stationary_scales(variance, lengthscale) -> tuple[Any, Any]:
    """A stationary kernel's (variance, lengthscale), checked (the lengthscale may be ARD)."""
    return positive("variance", variance), positive("lengthscale", lengthscale, vector=True)


class RBF(AbstractStationaryKernel):
    """Squared exponential: k(x, y) = variance * exp(-r^2 / (2 lengthscale^2)).

    ``f(s) = exp(-s / 2)``, ``f' = -f / 2``, ``f'' = f / 4``.
    """

    gaussian_profile: ClassVar[bool] = True

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
        return xp.where(r > 0, -0.5 * xp.exp(-r) / xp.where(r > 0, r, 1.0), 0.0 * r)

    @staticmethod
    def d2f(xp, s, params):
        r = _safe_sqrt(xp, s)
        safe_r = xp.where(r > 0, r, 1.0)
        return xp.where(r > 0, 0.25 * xp.exp(-r) * (1.0 + r) / safe_r**3, 0.0 * r)


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
        return xp.where(u > 0, 2.25 * xp.exp(-u) / xp.where(u > 0, u, 1.0), 0.0 * u)


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


class InverseMultiquadric(AbstractStationaryKernel):
    """Inverse multiquadric (IMQ): k = variance * (c^2 + r^2 / l^2)^beta, beta in (-1, 0).

    The standard base kernel of kernel Stein discrepancies: with beta in (-1, 0) its KSD
    controls convergence in distribution (Gorham and Mackey, 2017); the common choice is
    c = 1, beta = -1/2. As in that literature k(x, x) = variance * c^(2 beta), 1 only for c = 1.
    ``f(s) = (c^2 + s)^beta``, ``f' = beta (c^2 + s)^(beta - 1)``,
    ``f'' = beta (beta - 1) (c^2 + s)^(beta - 2)``: smooth at s = 0.
    """

    variance: Any
    lengthscale: Any
    c: Any
    beta: Any

    def __init__(self, variance=1.0, lengthscale=1.0, c=1.0, beta=-0.5):
        self.variance, self.lengthscale = _stationary_scales(variance, lengthscale)
        self.c = positive("c", c)
        self.beta = _exponent_in_open_interval("beta", beta, -1.0, 0.0)

    profile_fields = ("c", "beta")

    # f' and f'' are written through f's own power, so that XLA computes one power per
    # pair for all three (a power is an exp and a log; three of them cost 5x an RBF tile).
    @staticmethod
    def f(xp, s, params):
        c, beta = params
        return (c * c + s) ** beta

    @staticmethod
    def df(xp, s, params):
        c, beta = params
        base = c * c + s
        return beta * base**beta / base

    @staticmethod
    def d2f(xp, s, params):
        c, beta = params
        base = c * c + s
        return beta * (beta - 1.0) * base**beta / (base * base)


def _exponent_in_open_interval(name: str, value, low: float, high: float):
    """A scalar hyperparameter checked to lie in (low, high) where concrete."""
    if isinstance(value, jax.core.Tracer):
        return value
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != 0 or not low < float(arr) < high:
        raise ValueError(f"{name} must be a scalar in ({low:g}, {high:g}), got {arr.tolist()}.")
    arr.flags.writeable = False
    return arr


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
