"""A GPyTorch kernel for values and gradients jointly, lazy and O(n m d) per product.

:class:`GradientKernel` drops in where GPyTorch's ``RBFKernelGrad`` or ``Matern52KernelGrad``
is used (with ``ConstantMeanGrad`` and ``MultitaskGaussianLikelihood(num_tasks=d + 1)``),
for any kernelgrad stationary family. Its covariance is a ``linear_operator``
:class:`GradientLinearOperator` in GPyTorch's layout: point-major, each point's value
followed by its partial derivatives. Products with it run through kernelgrad's matrix-free
joint covariance (:func:`kernelgrad.torch.joint_matvec`), so the n (d + 1) x m (d + 1)
matrix is never built unless GPyTorch asks for it densely (small problems, where it factorises
it); gradients reach the points and the lengthscales through ``torch.autograd``.

``dims=`` observes only some partial derivatives (GPyTorch issue 2525): each point then
carries its value and the derivatives along ``dims``, in that order.
"""

from __future__ import annotations

try:
    import gpytorch
    import torch
    from linear_operator.operators import LinearOperator
except ImportError as error:  # pragma: no cover - exercised in an environment without it
    raise ImportError(
        "kernelgrad.gpytorch needs GPyTorch: pip install 'kernelgrad[gpytorch]'."
    ) from error

from . import kernels as K
from . import torch as kgt
from .execution import padding


def _padded(x: torch.Tensor) -> torch.Tensor:
    """x with its points padded to kernelgrad's size bucket by copies of its first point, so
    that a growing training set (a BO loop) compiles a few programs, not one per size."""
    n = x.shape[-2]
    bucket = padding.dense_bucket(n) if n else 0
    if bucket == n:
        return x
    return torch.cat([x, x[..., :1, :].expand(*x.shape[:-2], bucket - n, x.shape[-1])], dim=-2)


def _layout(n: int, padded: int, d: int, dims: tuple[int, ...]) -> torch.Tensor:
    """For each entry of GPyTorch's layout (point i: value, then d/dx_a for a in dims), its
    index in kernelgrad's block-major one over the padded points (values 0..padded-1, then
    point i's gradient at padded + i d)."""
    i = torch.arange(n)[:, None]
    grads = padded + i * d + torch.tensor(dims, dtype=torch.long)[None, :]
    return torch.cat([i, grads], dim=1).reshape(-1)


def _point_slice(index, points: int, width: int) -> slice | None:
    """The slice of points that an entry index covers, when it is a unit-step slice from one
    point's first entry to another's; else None."""
    if not isinstance(index, slice):
        return None
    start, stop, step = index.indices(points * width)
    if step != 1 or start % width or stop % width:
        return None
    return slice(start // width, max(start, stop) // width)


class GradientLinearOperator(LinearOperator):
    """The joint covariance of [f(x1_i), d f(x1_i) / dx_a for a in dims] and the same at x2,
    in GPyTorch's point-major layout. Matrix-free products; dense only on request.

    x1 (..., n, d) and x2 (..., m, d) share their batch shape, and so does the lengthscale
    (..., L), a broadcast of one lengthscale (GPyTorch's batch operations then index, permute
    and unsqueeze all three alike)."""

    def __init__(self, x1, x2, lengthscale, *, family, dims):
        super().__init__(x1, x2, lengthscale, family=family, dims=dims)
        self.x1, self.x2, self.lengthscale = x1, x2, lengthscale
        self.family, self.dims = family, tuple(dims)
        d = x1.shape[-1]
        self._x1, self._x2 = _padded(x1), _padded(x2)
        self._rows = _layout(x1.shape[-2], self._x1.shape[-2], d, self.dims).to(x1.device)
        self._cols = _layout(x2.shape[-2], self._x2.shape[-2], d, self.dims).to(x1.device)

    def _kernel(self):
        lengthscale = self.lengthscale[(0,) * (self.lengthscale.ndim - 1)]  # a view: autograd
        lengthscale = lengthscale[0] if lengthscale.numel() == 1 else lengthscale
        return kgt.Kernel(self.family, lengthscale=lengthscale)

    def _size(self):
        return torch.Size([*self.x1.shape[:-2], self._rows.numel(), self._cols.numel()])

    def _transpose_nonbatch(self):
        return GradientLinearOperator(
            self.x2, self.x1, self.lengthscale, family=self.family, dims=self.dims
        )

    def _expand_batch(self, batch_shape):
        x1, x2, lengthscale = (
            t.expand(*batch_shape, *t.shape[len(self.batch_shape) :])
            for t in (self.x1, self.x2, self.lengthscale)
        )
        return GradientLinearOperator(x1, x2, lengthscale, family=self.family, dims=self.dims)

    def _getitem(self, row_index, col_index, *batch_indices):
        """A slice that starts and ends at point boundaries (GPyTorch's train and test blocks)
        is the operator of those points; anything else goes through linear_operator's
        interpolation."""
        rows = _point_slice(row_index, self.x1.shape[-2], 1 + len(self.dims))
        cols = _point_slice(col_index, self.x2.shape[-2], 1 + len(self.dims))
        if rows is None or cols is None:
            return super()._getitem(row_index, col_index, *batch_indices)
        x1, x2, lengthscale = (
            t[batch_indices] if batch_indices else t for t in (self.x1, self.x2, self.lengthscale)
        )
        return GradientLinearOperator(
            x1[..., rows, :], x2[..., cols, :], lengthscale, family=self.family, dims=self.dims
        )

    def _matmul(self, rhs):
        vector = rhs.ndim == 1
        rhs = rhs[:, None] if vector else rhs
        batch = torch.broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        x1, x2 = (x.expand(*batch, *x.shape[-2:]) for x in (self._x1, self._x2))
        rhs = rhs.expand(*batch, *rhs.shape[-2:])
        d = x2.shape[-1]
        full = rhs.new_zeros((*batch, x2.shape[-2] * (d + 1), rhs.shape[-1]))
        full = full.index_copy(-2, self._cols, rhs)  # unobserved derivatives get weight 0
        out = kgt.joint_matvec(self._kernel(), x1, x2, full)[..., self._rows, :]
        return out[..., 0] if vector else out

    def to_dense(self):
        dense = kgt.joint_dense(self._kernel(), self._x1, self._x2)
        return dense[..., self._rows, :][..., self._cols]

    def _get_indices(self, row_index, col_index, *batch_indices):
        """Entries [row_index, col_index] (broadcast together), from the dense joint block of
        only the points they touch: GPyTorch's pivoted-Cholesky preconditioner reads a few
        rows this way. With batch dimensions, from the dense batch (small problems)."""
        if batch_indices:
            return self.to_dense()[(*batch_indices, row_index, col_index)]
        width = 1 + len(self.dims)
        rows, row_parts = torch.unique(row_index // width, return_inverse=True)
        cols, col_parts = torch.unique(col_index // width, return_inverse=True)
        block = GradientLinearOperator(
            self.x1[rows], self.x2[cols], self.lengthscale, family=self.family, dims=self.dims
        ).to_dense()
        return block[row_parts * width + row_index % width, col_parts * width + col_index % width]

    def _diagonal(self):
        if self.x1 is self.x2 or torch.equal(self.x1, self.x2):
            return kgt.joint_diagonal(self._kernel(), self._x1)[..., self._rows]
        return self.to_dense().diagonal(dim1=-2, dim2=-1)


class GradientKernel(gpytorch.kernels.Kernel):
    """GPyTorch kernel of values and gradients for a kernelgrad stationary family.

    Args:
        family: a kernelgrad stationary kernel class with unit variance
            (``kernelgrad.RBF``, ``kernelgrad.Matern52``, ...); wrap this kernel in
            ``gpytorch.kernels.ScaleKernel`` for an output scale, as with ``RBFKernelGrad``.
        dims: the input dimensions whose partial derivatives are observed (default: all).
        **kwargs: GPyTorch's kernel arguments (``ard_num_dims``, ``lengthscale_prior``, ...).
    """

    has_lengthscale = True

    def __init__(self, family: type = K.RBF, *, dims=None, **kwargs):
        if not (isinstance(family, type) and issubclass(family, K.AbstractStationaryKernel)):
            raise TypeError(f"GradientKernel needs a kernelgrad stationary family, got {family!r}.")
        super().__init__(**kwargs)
        self.family = family
        self.dims = None if dims is None else tuple(int(a) for a in dims)
        if self.dims is not None and (
            len(set(self.dims)) != len(self.dims) or min(self.dims, default=0) < 0
        ):
            raise ValueError(f"dims must be distinct non-negative dimensions, got {self.dims}.")

    def _dims(self, d: int) -> tuple[int, ...]:
        if self.dims is None:
            return tuple(range(d))
        if len(set(self.dims)) != len(self.dims) or not all(0 <= a < d for a in self.dims):
            raise ValueError(f"dims must be distinct dimensions in 0..{d - 1}, got {self.dims}.")
        return self.dims

    def forward(self, x1, x2, diag=False, **params):
        if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
            raise ValueError(
                f"GradientKernel takes points of shape (..., n, d) and (..., m, d); got "
                f"{tuple(x1.shape)} and {tuple(x2.shape)}."
            )
        if self.lengthscale.shape[:-2].numel() != 1:
            raise NotImplementedError(
                "GradientKernel has one set of lengthscales; a kernel with batch_shape "
                f"{tuple(self.batch_shape)} (a lengthscale of shape "
                f"{tuple(self.lengthscale.shape)}) is not supported yet."
            )
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
        x1, x2 = (x.expand(*batch, *x.shape[-2:]) for x in (x1, x2))
        lengthscale = self.lengthscale.reshape(-1)
        lengthscale = lengthscale.expand(*batch, lengthscale.numel())
        op = GradientLinearOperator(
            x1, x2, lengthscale, family=self.family, dims=self._dims(x1.shape[-1])
        )
        return op.diagonal(dim1=-2, dim2=-1) if diag else op

    def num_outputs_per_input(self, x1, x2):
        return 1 + len(self._dims(x1.shape[-1]))


__all__ = ["GradientKernel", "GradientLinearOperator"]
