"""kernelgrad.gpytorch: the lazy derivative kernel against GPyTorch's own RBFKernelGrad and
Matern52KernelGrad, in GPyTorch's layout, inside an ExactGP, and in its training loop."""

from __future__ import annotations

import pytest

gpytorch = pytest.importorskip("gpytorch")
torch = pytest.importorskip("torch")

import kernelgrad as kg  # noqa: E402
from kernelgrad.gpytorch import GradientKernel, GradientLinearOperator  # noqa: E402

F64 = torch.float64
THEIRS = {
    "rbf": (kg.RBF, gpytorch.kernels.RBFKernelGrad),
    "matern52": (kg.Matern52, gpytorch.kernels.Matern52KernelGrad),
}


def _pair(name, ard=None):
    family, theirs = THEIRS[name]
    ours = GradientKernel(family, ard_num_dims=ard).double()
    other = theirs(ard_num_dims=ard).double()
    value = 0.7 if ard is None else torch.tensor([0.6, 0.9, 1.4], dtype=F64)
    ours.lengthscale, other.lengthscale = value, value
    return ours, other


def _points(n, seed):
    return torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ard", [None, 3], ids=["scalar", "ard"])
@pytest.mark.parametrize("name", list(THEIRS))
def test_dense_products_and_diagonal_equal_gpytorchs_kernels(name, ard):
    ours, theirs = _pair(name, ard)
    X, Y = _points(7, 1), _points(5, 2)
    expected = theirs(X, Y).to_dense()
    op = ours(X, Y)
    assert op.shape == expected.shape == (28, 20)
    assert (op.to_dense() - expected).abs().max() < 1e-10
    V = torch.randn(20, 2, dtype=F64)
    assert (op @ V - expected @ V).abs().max() < 1e-10
    assert (op.mT.to_dense() - expected.mT).abs().max() < 1e-10
    assert (ours(X, X, diag=True) - theirs(X, X, diag=True)).abs().max() < 1e-10


# linear_operator's interpolation (an unaligned slice) builds a sparse tensor, and torch warns.
@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")
def test_batched_points_give_gpytorchs_batched_covariance():
    """Inputs of shape (2, 3, n, d), as BoTorch's acquisition functions pass them, against
    RBFKernelGrad on the same batch: dense, products, batch indexing, diagonal, gradients."""
    ours, theirs = _pair("rbf", 3)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(2, 3, 4, 3, dtype=F64, generator=g)
    Y = torch.randn(3, 5, 3, dtype=F64, generator=g)  # broadcast against X's batch
    expected = theirs(X, Y.expand(2, 3, 5, 3)).to_dense()  # RBFKernelGrad does not broadcast
    op = ours(X, Y).evaluate_kernel()
    assert op.shape == expected.shape == (2, 3, 16, 20)
    assert (op.to_dense() - expected).abs().max() < 1e-10
    V = torch.randn(20, 2, dtype=F64, generator=g)
    assert (op @ V - expected @ V).abs().max() < 1e-10
    assert (op[1, 2].to_dense() - expected[1, 2]).abs().max() < 1e-10
    for rows, cols in [(slice(4, 12), slice(8, None)), (slice(3, 9), slice(2, 7))]:
        # Point-aligned blocks (of 4 entries per point) are sub-operators; others interpolate.
        part = op[:, 1, rows, cols]
        assert isinstance(part, GradientLinearOperator) == (rows.start % 4 == 0)
        assert (part.to_dense() - expected[:, 1, rows, cols]).abs().max() < 1e-10
    assert (ours(X, X, diag=True) - theirs(X, X, diag=True)).abs().max() < 1e-10
    ((op @ V) ** 2).sum().backward()
    ((expected @ V) ** 2).sum().backward()
    assert torch.allclose(ours.raw_lengthscale.grad, theirs.raw_lengthscale.grad, rtol=1e-9)


def test_batch_mode_lengthscales_are_refused_clearly():
    kernel = GradientKernel(kg.RBF, batch_shape=torch.Size([2])).double()
    with pytest.raises(NotImplementedError, match="one set of lengthscales"):
        kernel(_points(3, 1), _points(3, 2)).to_dense()


def test_indexed_entries_are_the_dense_ones():
    # GPyTorch's pivoted-Cholesky preconditioner reads rows through _get_indices.
    ours, _ = _pair("rbf")
    X = _points(9, 1)
    op = ours(X, X).evaluate_kernel()
    dense = op.to_dense()
    rows = torch.tensor([[3], [17], [35]])
    cols = torch.arange(36)[None, :]
    assert (op._get_indices(rows, cols) - dense[rows, cols]).abs().max() < 1e-12


def test_dims_observes_only_those_partial_derivatives():
    ours, _ = _pair("rbf")
    X = _points(6, 3)
    full = ours(X, X).to_dense()  # point-major: value, d/dx0, d/dx1, d/dx2 per point
    part = GradientKernel(kg.RBF, dims=[2, 0]).double()
    part.lengthscale = 0.7
    keep = torch.tensor([4 * i + j for i in range(6) for j in (0, 3, 1)])
    op = part(X, X)
    assert op.shape == (18, 18)
    assert (op.to_dense() - full[keep][:, keep]).abs().max() < 1e-12
    V = torch.randn(18, dtype=F64)
    assert (op @ V - full[keep][:, keep] @ V).abs().max() < 1e-12
    with pytest.raises(ValueError, match="dims"):
        GradientKernel(kg.RBF, dims=[0, 3])(X, X).to_dense()  # GPyTorch evaluates lazily
    with pytest.raises(ValueError, match="dims"):
        GradientKernel(kg.RBF, dims=[1, 1])


class _Model(gpytorch.models.ExactGP):
    def __init__(self, X, y, likelihood, kernel):
        super().__init__(X, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMeanGrad()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultitaskMultivariateNormal(
            self.mean_module(x), self.covar_module(x)
        )


def _data(n=15):
    X = _points(n, 4)
    f = torch.sin(X).sum(1)
    return X, torch.cat([f[:, None], torch.cos(X)], dim=1)  # values and gradients


def _models(name):
    X, y = _data()
    models = []
    for kernel in _pair(name):
        likelihood = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=4).double()
        model = _Model(X, y, likelihood, kernel).double()
        model.covar_module.outputscale = 1.3
        likelihood.noise = 1e-3
        models.append(model)
    return X, y, models


@pytest.mark.parametrize("name", list(THEIRS))
def test_an_exact_gp_predicts_as_with_gpytorchs_kernel(name):
    _, _, models = _models(name)
    Xs = _points(4, 5)
    preds = []
    for model in models:
        model.eval()
        with torch.no_grad():
            preds.append(model.likelihood(model(Xs)))
    assert (preds[0].mean - preds[1].mean).abs().max() < 1e-8
    assert (preds[0].variance - preds[1].variance).abs().max() < 1e-8


def test_the_marginal_likelihood_and_its_gradients_match_and_training_moves_them():
    X, y, models = _models("rbf")
    grads, values = [], []
    for model in models:
        model.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        loss = -mll(model(X), y)
        loss.backward()
        values.append(loss.item())
        grads.append(model.covar_module.base_kernel.raw_lengthscale.grad.clone())
    assert abs(values[0] - values[1]) < 1e-8
    assert (grads[0] - grads[1]).abs().max() < 1e-7
    model = models[0]
    before = model.covar_module.base_kernel.lengthscale.item()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    first = None
    for _ in range(20):
        optimiser.zero_grad()
        loss = -mll(model(X), y)
        first = loss.item() if first is None else first
        loss.backward()
        optimiser.step()
    assert model.covar_module.base_kernel.lengthscale.item() != before
    assert loss.item() < first


def test_iterative_inference_agrees_with_the_factorisation():
    X, y, models = _models("rbf")
    model = models[0]
    model.likelihood.noise = 0.1  # CG converges in a few dozen steps
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    exact = mll(model(X), y).item()
    # GPyTorch's own CG and stochastic Lanczos quadrature, through the operator's products.
    with gpytorch.settings.max_cholesky_size(0), gpytorch.settings.num_trace_samples(200):
        iterative = mll(model(X), y).item()
    assert abs(iterative - exact) < 0.05 * abs(exact)
