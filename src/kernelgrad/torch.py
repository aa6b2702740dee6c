"""kernelgrad for PyTorch users: the transforms on torch tensors, with autograd.

Every transform of :mod:`kernelgrad` is here with the same signature, taking and returning
torch tensors (float32 or float64, on the CPU, or CUDA where JAX has a GPU): the result
comes back on the inputs' device in their dtype. Tensors cross to JAX and back through
DLPack, without a copy on the CPU.

Gradients flow through ``torch.autograd``: a custom :class:`torch.autograd.Function` runs the
forward pass in kernelgrad (one compiled JAX program per kernel structure and shapes) and
the backward pass through JAX's VJP of that program, with respect to the points, the
weights, and a kernel's hyperparameters given as torch tensors:

    >>> import torch, kernelgrad.torch as kgt
    >>> k = kgt.RBF(lengthscale=torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64)))
    >>> X = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    >>> kgt.grad_sum(k, X).pow(2).sum().backward()  # X.grad and the lengthscale's .grad

A kernel here is a :class:`Kernel` (a ``torch.nn.Module``, so an optimiser finds its
parameters), or any kernelgrad kernel or pair function, whose hyperparameters then stay
constants. Torch is an optional dependency: ``import kernelgrad`` never imports it.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import numpy as np

try:
    import torch
except ImportError as error:  # pragma: no cover - exercised in an environment without torch
    raise ImportError(
        "kernelgrad.torch needs PyTorch: pip install 'kernelgrad[torch]' (torch==2.13.0, "
        "the CPU build)."
    ) from error

from . import kernels as K
from . import transforms
from .execution import compile_cache
from .execution.inputs import local_x64
from .gp import gradient_kernel

_FLOATS = (torch.float32, torch.float64)


# --------------------------------------------------------------------------- kernels


class Kernel(torch.nn.Module):
    """A kernelgrad kernel family with hyperparameters held as torch tensors.

    Args:
        family: a kernelgrad kernel class (``kernelgrad.RBF``, ...).
        **hyperparameters: its constructor's arguments. Torch tensors (``nn.Parameter`` for
            trainable ones) receive gradients; anything else is passed on as a constant.
    """

    def __init__(self, family: type, **hyperparameters):
        super().__init__()
        if not (isinstance(family, type) and issubclass(family, K.AbstractKernel)):
            raise TypeError(f"Kernel needs a kernelgrad kernel class, got {family!r}.")
        self.family = family
        self.constants = {}
        self.tensor_names = []
        for name, value in hyperparameters.items():
            if isinstance(value, torch.nn.Parameter):
                self.register_parameter(name, value)
                self.tensor_names.append(name)
            elif isinstance(value, torch.Tensor):
                self.register_buffer(name, value)
                self.tensor_names.append(name)
            else:
                self.constants[name] = value
        family(**self.constants, **{n: _host(getattr(self, n)) for n in self.tensor_names})

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.tensor_names]

    def kernelgrad_kernel(self) -> K.AbstractKernel:
        """The kernelgrad kernel with the tensors' current values, built once per version of
        them (an optimiser's in-place step bumps a tensor's version), so that kernelgrad's
        per-kernel caches keep serving repeated calls."""
        tensors = self.tensors()
        versions = tuple((t.data_ptr(), t._version) for t in tensors)
        cached = getattr(self, "_built", None)
        if cached is None or cached[0] != versions:
            arrays = [t.detach().cpu().numpy() for t in tensors]
            cached = (versions, self.spec().build(arrays))
            self._built = cached
        return cached[1]

    def spec(self) -> _Spec:
        """What builds this kernel from arrays, hashable: one compiled program serves every
        kernel with the same family, constants and tensor names."""
        constants = tuple((name, _hashable(value)) for name, value in self.constants.items())
        return _Spec(self.family, constants, tuple(self.tensor_names))

    def extra_repr(self) -> str:
        return self.family.__name__


class _Spec(NamedTuple):
    family: type
    constants: tuple
    tensor_names: tuple

    def build(self, arrays) -> K.AbstractKernel:
        """The kernelgrad kernel with these arrays (one per torch hyperparameter)."""
        named = dict(zip(self.tensor_names, arrays, strict=True))
        return self.family(**{name: np.asarray(v) for name, v in self.constants}, **named)


def _hashable(value):
    if isinstance(value, np.ndarray | list | tuple):
        return tuple(np.asarray(value, np.float64).ravel().tolist())
    return value


def _family(cls):
    @functools.wraps(cls, assigned=("__name__", "__qualname__"), updated=())
    def make(**hyperparameters) -> Kernel:
        return Kernel(cls, **hyperparameters)

    make.__doc__ = (
        f"``Kernel(kernelgrad.{cls.__name__}, **hyperparameters)``: "
        + (cls.__doc__ or "").split("\n")[0]
    )
    return make


RBF = _family(K.RBF)
Matern12 = _family(K.Matern12)
Matern32 = _family(K.Matern32)
Matern52 = _family(K.Matern52)
RationalQuadratic = _family(K.RationalQuadratic)
Periodic = _family(K.Periodic)
InverseMultiquadric = _family(K.InverseMultiquadric)
Linear = _family(K.Linear)
Polynomial = _family(K.Polynomial)


def _host(t: torch.Tensor):
    """A tensor as NumPy (detached), for checks that need concrete values."""
    return t.detach().cpu().numpy()


# --------------------------------------------------------------------------- tensors


def _to_jax(t: torch.Tensor):
    """A torch tensor as a JAX array on the same device, through DLPack (no copy on the CPU
    for a contiguous tensor)."""
    return jax.dlpack.from_dlpack(t.detach().contiguous())


def _to_torch(a) -> torch.Tensor:
    return torch.from_dlpack(a)


def _check(name: str, t, *, device, dtype) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}.")
    if t.device != device:
        raise ValueError(
            f"{name} is on {t.device} but the points are on {device}; put every tensor on "
            "one device."
        )
    if t.dtype != dtype:
        raise ValueError(
            f"{name} has dtype {t.dtype} but the points have {dtype}; give every tensor the "
            "same floating dtype."
        )


def _validate(named: dict[str, Any], kernel_tensors: list[torch.Tensor]):
    """(device, dtype) of the points, after checking every tensor against them."""
    points = named["X"]
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"X must be a torch tensor, got {type(points).__name__}.")
    if points.dtype not in _FLOATS:
        hint = " (an integer tensor cannot require grad)" if not points.is_floating_point() else ""
        raise ValueError(f"X has dtype {points.dtype}; expected float32 or float64{hint}.")
    for name, t in named.items():
        if t is not None:
            _check(name, t, device=points.device, dtype=points.dtype)
    for t in kernel_tensors:
        if t.device != points.device:
            raise ValueError(
                f"a kernel hyperparameter is on {t.device} but the points are on "
                f"{points.device}; move the kernel with .to(device)."
            )
        if not t.is_floating_point():
            raise ValueError(f"kernel hyperparameters must be floating tensors, got {t.dtype}.")
    return points.device, points.dtype


# --------------------------------------------------------------------------- autograd


@functools.cache
def _program(name: str, spec, treedef, present: tuple[bool, ...], options: tuple):
    """The jitted JAX function of (points, weights, hyperparameters) that ``name`` computes:
    the kernel comes from ``spec`` (a :class:`Kernel`'s) or from ``treedef`` and its leaves."""
    transform = _JOINT.get(name) or getattr(transforms, name)

    def fn(args, leaves):
        kernel = spec.build(leaves) if spec is not None else jax.tree.unflatten(treedef, leaves)
        full = iter(args)
        positional = [next(full) if here else None for here in present]
        return transform(kernel, *positional, **dict(options))

    # The VJP's function is a pytree (jax.tree_util.Partial), so both halves compile once:
    # tracing jax.vjp anew on every call cost half a millisecond.
    # compile_cache.jit: traced anew under each policy, with rank promotion allowed.
    forward = compile_cache.jit(lambda args, leaves: jax.vjp(fn, args, leaves))
    backward = compile_cache.jit(lambda vjp, grad: vjp(grad))
    # Without a gradient to take, the VJP's residuals are only memory: a GPyTorch predictive
    # solve at n = 1000, d = 10 held 21 GB of them.
    return forward, backward, compile_cache.jit(fn)


class _Through(torch.autograd.Function):
    """Forward in kernelgrad, backward through JAX's VJP of the same program."""

    # Tensors cross inside the x64 context: outside it JAX would take float64 as float32.
    @staticmethod
    def forward(ctx, program, dtype, count, *tensors):
        forward, backward, _ = program
        with _precision(dtype):
            arrays = [_to_jax(t) for t in tensors]
            out, vjp = forward(arrays[:count], arrays[count:])
        ctx.vjp, ctx.backward, ctx.dtype = vjp, backward, dtype
        return _to_torch(out)

    @staticmethod
    def backward(ctx, grad):
        with _precision(ctx.dtype):
            args, leaves = ctx.backward(ctx.vjp, _to_jax(grad.contiguous()))
        grads = [_to_torch(g) for g in (*args, *leaves)]
        return (None, None, None, *grads)


def _precision(dtype: torch.dtype):
    return local_x64(np.float64 if dtype == torch.float64 else np.float32)


def _call(name: str, k, named: dict[str, Any], **options) -> torch.Tensor:
    own = k.tensors() if isinstance(k, Kernel) else []
    _, dtype = _validate(named, own)
    args = [t for t in named.values() if t is not None]
    differentiated = torch.is_grad_enabled() and any(t.requires_grad for t in (*args, *own))
    if not differentiated and named["X"].device.type == "cpu" and name not in _JOINT:
        return _on_numpy(name, k, named, options)
    if isinstance(k, Kernel):
        kernel_tensors, spec, treedef = [t.to(dtype=dtype) for t in own], k.spec(), None
    else:
        base = K.kernel(k)  # raises a TypeError for anything that is not a kernel
        leaves, treedef = jax.tree.flatten(base)
        device = named["X"].device
        kernel_tensors = [torch.tensor(np.array(x), dtype=dtype, device=device) for x in leaves]
        spec = None
    present = tuple(t is not None for t in named.values())
    program = _program(name, spec, treedef, present, tuple(sorted(options.items())))
    if not differentiated:
        with _precision(dtype):
            arrays = [_to_jax(t) for t in args], [_to_jax(t) for t in kernel_tensors]
            return _to_torch(program[2](*arrays))
    return _Through.apply(program, dtype, len(args), *args, *kernel_tensors)


def _on_numpy(name: str, k, named: dict[str, Any], options) -> torch.Tensor:
    """Nothing to differentiate, on the CPU: the tensors as NumPy views through the public
    transform, with everything it has for NumPy (eager NumPy for small problems, exact-size
    programs for sizes called often)."""
    kernel = k.kernelgrad_kernel() if isinstance(k, Kernel) else K.kernel(k)
    values = [None if t is None else t.detach().numpy() for t in named.values()]
    out = getattr(transforms, name)(kernel, *values, **options)
    # A result viewing a JAX buffer is read-only, which torch cannot wrap: copy it.
    return torch.from_numpy(out if out.flags.writeable else out.copy())


# --------------------------------------------------------------------------- the joint covariance


def _method(kernel) -> str:
    return "closed" if kernel.has_closed_form else "forward"


def _batched(fn, *arrays):
    """fn over a leading batch axis, when the points have one (shared by every array)."""
    return jax.vmap(fn)(*arrays) if arrays[0].ndim == 3 else fn(*arrays)


def _joint_matvec(kernel, X, Y, V, *, mode):
    def one(X, Y, V):
        return gradient_kernel.joint_matvec(kernel, X, Y, V, method=_method(kernel))

    return _batched(one, X, Y, V)


def _joint_dense(kernel, X, Y, *, mode):
    return _batched(
        lambda X, Y: gradient_kernel.joint_dense(kernel, X, Y, method=_method(kernel)), X, Y
    )


def _joint_diagonal(kernel, X, *, mode):
    return _batched(
        lambda X: gradient_kernel.joint_diagonal(kernel, X, X, method=_method(kernel)), X
    )


#: The joint covariance of values and gradients (block-major, see
#: :mod:`kernelgrad.gp.gradient_kernel`), on torch tensors through the same autograd path.
_JOINT = {
    "joint_matvec": _joint_matvec,
    "joint_dense": _joint_dense,
    "joint_diagonal": _joint_diagonal,
}


def _call_joint(name: str, k, named: dict[str, Any]) -> torch.Tensor:
    """A joint-covariance program, with any leading batch dimensions (the same on every
    tensor) folded into one and mapped over."""
    X = named["X"]
    batch = X.shape[:-2] if isinstance(X, torch.Tensor) else ()
    if not batch:
        return _call(name, k, named, mode="auto")
    for key, t in named.items():
        if not isinstance(t, torch.Tensor) or t.ndim != X.ndim or t.shape[:-2] != batch:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"{key} must have X's batch shape {tuple(batch)} and two more dimensions; "
                f"got {got}. Expand the tensors to one batch shape."
            )
    folded = {key: t.reshape(-1, *t.shape[-2:]) for key, t in named.items()}
    out = _call(name, k, folded, mode="auto")
    return out.reshape(*batch, *out.shape[1:])


def joint_matvec(k, X, Y, V) -> torch.Tensor:
    """The (n (d + 1), m (d + 1)) joint covariance of [f(X), grad f(X)] and [f(Y), grad
    f(Y)] times V (m (d + 1), p), matrix-free in O(n m d): block-major rows and columns.
    Leading batch dimensions, the same on X, Y and V, are mapped over."""
    return _call_joint("joint_matvec", k, {"X": X, "Y": Y, "V": V})


def joint_dense(k, X, Y) -> torch.Tensor:
    """The joint covariance as a dense (n (d + 1), m (d + 1)) tensor, block-major (leading
    batch dimensions mapped over)."""
    return _call_joint("joint_dense", k, {"X": X, "Y": Y})


def joint_diagonal(k, X) -> torch.Tensor:
    """The diagonal of the square joint covariance of X with itself: (n (d + 1),) (leading
    batch dimensions mapped over)."""
    return _call_joint("joint_diagonal", k, {"X": X})


# --------------------------------------------------------------------------- transforms


def gram(k, X, Y=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.gram` on torch tensors: K[i, j] = k(x_i, y_j)."""
    return _call("gram", k, {"X": X, "Y": Y}, mode=mode)


def grad(k, x, Y=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.grad` on torch tensors: d/dx k(x, y_j) for one point x."""
    return _call("grad", k, {"X": x, "Y": Y}, mode=mode)


def jacobian(k, X, Y=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.jacobian` on torch tensors: J[i, j] = d/dx_i k(x_i, y_j)."""
    return _call("jacobian", k, {"X": X, "Y": Y}, mode=mode)


def grad_sum(k, X, Y=None, weights=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.grad_sum` on torch tensors: sum_j w_j d/dx_i k(x_i, y_j)."""
    return _call("grad_sum", k, {"X": X, "Y": Y, "weights": weights}, mode=mode)


def gram_matvec(k, X, Y=None, W=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.gram_matvec` on torch tensors: K @ W, matrix-free for large n."""
    return _call("gram_matvec", k, {"X": X, "Y": Y, "W": W}, mode=mode)


def cross_hessian(k, X, Y=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.cross_hessian` on torch tensors: d^2 k(x_i, y_j) / dx dy."""
    return _call("cross_hessian", k, {"X": X, "Y": Y}, mode=mode)


def laplacian_sum(k, X, Y=None, weights=None, *, mode: str = "auto") -> torch.Tensor:
    """:func:`kernelgrad.laplacian_sum` on torch tensors: sum_j w_j trace(d^2 k / dx dy)."""
    return _call("laplacian_sum", k, {"X": X, "Y": Y, "weights": weights}, mode=mode)


__all__ = [
    "RBF",
    "InverseMultiquadric",
    "Kernel",
    "Linear",
    "Matern12",
    "Matern32",
    "Matern52",
    "Periodic",
    "Polynomial",
    "RationalQuadratic",
    "cross_hessian",
    "grad",
    "grad_sum",
    "gram",
    "gram_matvec",
    "jacobian",
    "joint_dense",
    "joint_diagonal",
    "joint_matvec",
    "laplacian_sum",
]
