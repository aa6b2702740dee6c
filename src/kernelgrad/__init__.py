"""kernelgrad: exact, fast derivatives of covariance functions, with the right AD mode chosen."""

from .kernels import AbstractKernel
from .kernels import AbstractStationaryKernel
from .kernels import AbstractDotProductKernel
from .kernels import RBF
from .kernels import Matern12
from .kernels import Matern32
from .kernels import Matern52
from .kernels import RationalQuadratic
from .kernels import InverseMultiquadric
from .kernels import Periodic
from .kernels import Linear
from .kernels import Polynomial
from .kernels import Sum
from .kernels import Product
from .kernels import Scaled
from .kernels import PairFunction
from .kernels import kernel
from .transforms import MODES
from .transforms import gram
from .transforms import grad
from .transforms import jacobian
from .transforms import grad_sum
from .transforms import gram_matvec
from .transforms import cross_hessian
from .transforms import laplacian_sum
from .transforms import Plan
from .transforms import explain
from .execution import policy
from . import stein
from .execution import sharding
from .execution.memory import DenseTooLargeError

__version__ = "0.1.0"

# The persistent compilation cache is on by default; KERNELGRAD_NO_COMPILE_CACHE=1 turns it off.
from .execution import compile_cache


compile_cache.enable_default()
from .gp.gradient_kernel import GradientGram  # noqa: E402 (after the compile-cache call above)
from .gp.gradient_kernel import gradient_gram  # noqa: E402 (after the compile-cache call above)
from .gp.hyper import hyper_grad  # noqa: E402 (after the compile-cache call above)
from .gp.gradient_gp import GradientGP  # noqa: E402 (after the compile-cache call above)
from .gp.gradient_gp import Posterior  # noqa: E402 (after the compile-cache call above)
from .gp.gradient_gp import FitResult  # noqa: E402 (after the compile-cache call above)
from .gp.gradient_gp import fit  # noqa: E402 (after the compile-cache call above)
from .gp.observations import Observations  # noqa: E402 (after the compile-cache call above)
from .gp.observations import ObservedGram  # noqa: E402 (after the compile-cache call above)
from .gp.observations import observations  # noqa: E402 (after the compile-cache call above)
from .gp.observations import observe  # noqa: E402 (after the compile-cache call above)

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
    "Sum",
    "Product",
    "Scaled",
    "PairFunction",
    "kernel",
    "MODES",
    "gram",
    "grad",
    "jacobian",
    "grad_sum",
    "gram_matvec",
    "Plan",
    "explain",
    "policy",
    "stein",
    "sharding",
    "compile_cache",
    "DenseTooLargeError",
    "cross_hessian",
    "laplacian_sum",
    "GradientGram",
    "gradient_gram",
    "Observations",
    "ObservedGram",
    "observations",
    "observe",
    "hyper_grad",
    "GradientGP",
    "Posterior",
    "FitResult",
    "fit",
    "__version__",
]
