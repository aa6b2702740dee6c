"""Bayesian optimisation with gradient observations in BoTorch, on kernelgrad's lazy kernel.

Each evaluation of the objective returns its value and, by ``torch.autograd``, its gradient.
The surrogate is a GPyTorch ``ExactGP`` wrapped as a BoTorch model, whose covariance is
``kernelgrad.gpytorch.GradientKernel``: the joint covariance of values and partial
derivatives in GPyTorch's point-major layout. The acquisition is BoTorch's analytic
``LogExpectedImprovement`` on the value alone (a ``ScalarizedPosteriorTransform`` that picks
output 0), maximised with ``optimize_acqf``.

Without gradients the model is the same one with ``dims=()``: GradientKernel then observes
no partial derivatives, so the two runs differ in the gradients alone (same kernel, mean,
priors, fitting and acquisition).

Problems (minimised, on the unit cube; the script rescales the inputs and standardises
values and gradients alike): Branin in 2-D (minimum 0.397887) and Hartmann in 6-D
(minimum -3.32237). Every seed starts both runs from the same Sobol design.

Run: ``python examples/botorch_gradient_bo.py --seeds 5 --output bo.png``
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import gpytorch
import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.exceptions import InputDataWarning, ModelFittingError, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models.gpytorch import GPyTorchModel
from botorch.optim import optimize_acqf
from botorch.optim.fit import fit_gpytorch_mll_torch
from botorch.test_functions import Branin, Hartmann
from botorch.utils.sampling import draw_sobol_samples

import kernelgrad as kg
from kernelgrad.gpytorch import GradientKernel

torch.set_default_dtype(torch.float64)

#: name: (test function, initial design size, evaluations in all)
PROBLEMS = {
    "branin": (Branin(), 4, 25),
    "hartmann6": (Hartmann(dim=6), 8, 40),
}


class ValueMean(gpytorch.means.Mean):
    """A constant mean for the value, zero for its derivatives (the derivatives of a
    constant): ``ConstantMeanGrad`` for any number of observed partials."""

    def __init__(self, outputs: int):
        super().__init__()
        self.outputs = outputs
        self.constant = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        value = self.constant.expand(*x.shape[:-1], 1)
        return torch.cat([value, x.new_zeros(*x.shape[:-1], self.outputs - 1)], dim=-1)


class GradientGP(gpytorch.models.ExactGP, GPyTorchModel):
    """An exact GP on values and the partial derivatives along ``dims``: train_y holds, per
    point, the value and then those partials."""

    def __init__(self, train_x, train_y, dims):
        outputs = 1 + len(dims)
        likelihood = gpytorch.likelihoods.MultitaskGaussianLikelihood(
            num_tasks=outputs,
            has_global_noise=False,  # one noise per output, none shared
            noise_constraint=gpytorch.constraints.GreaterThan(1e-6),
        )
        super().__init__(train_x, train_y, likelihood)
        self._num_outputs = outputs
        self.mean_module = ValueMean(outputs)
        d = train_x.shape[-1]
        # BoTorch's default lengthscale prior (SingleTaskGP's, scaled with the dimension),
        # and bounds that keep a fit on near-duplicate points from running off to 0.
        prior = gpytorch.priors.LogNormalPrior(math.sqrt(2) + math.log(d) / 2, math.sqrt(3))
        base = GradientKernel(
            kg.Matern52,
            dims=dims,
            ard_num_dims=d,
            lengthscale_prior=prior,
            lengthscale_constraint=gpytorch.constraints.Interval(1e-2, 1e2),
        )
        self.covar_module = gpytorch.kernels.ScaleKernel(base)

    def forward(self, x):
        return gpytorch.distributions.MultitaskMultivariateNormal(
            self.mean_module(x), self.covar_module(x)
        )


def evaluate(problem, u):
    """Values and gradients (with respect to the unit-cube input u) of the objective to
    minimise: (n,), (n, d)."""
    lower, upper = problem.bounds
    u = u.detach().requires_grad_(True)
    f = problem.evaluate_true(lower + (upper - lower) * u)
    (g,) = torch.autograd.grad(f.sum(), u)
    return f.detach(), g


def fit_model(U, f, G, dims):
    """The GP of BoTorch's maximisation on standardised data: -(f - mean) / std, and the
    gradients along dims scaled alike."""
    mean, std = f.mean(), f.std().clamp_min(1e-9)
    y = torch.cat([-(f[:, None] - mean), -G[:, list(dims)]], dim=1) / std
    model = GradientGP(U, y, dims)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizationWarning)
        try:
            fit_gpytorch_mll(mll)
        except ModelFittingError:
            # L-BFGS's line search can stop ABNORMAL on a flat likelihood (the gradients are
            # right: they match finite differences); Adam then takes over from the start.
            fit_gpytorch_mll(mll, optimizer=fit_gpytorch_mll_torch)
    return model, y[:, 0].max()


def optimise(problem, init, evaluations, *, gradients: bool, seed: int):
    """One BO run; returns the best (lowest) value after each evaluation."""
    d = problem.dim
    dims = tuple(range(d)) if gradients else ()
    bounds = torch.stack([torch.zeros(d), torch.ones(d)])
    U = draw_sobol_samples(bounds, n=init, q=1, seed=seed).squeeze(1)
    f, G = evaluate(problem, U)
    torch.manual_seed(seed)
    while len(f) < evaluations:
        model, best = fit_model(U, f, G, dims)
        weights = torch.zeros(1 + len(dims))
        weights[0] = 1.0
        acquisition = LogExpectedImprovement(
            model, best_f=best, posterior_transform=ScalarizedPosteriorTransform(weights)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizationWarning)
            u, _ = optimize_acqf(acquisition, bounds, q=1, num_restarts=4, raw_samples=128)
        fu, gu = evaluate(problem, u)
        U, f, G = torch.cat([U, u]), torch.cat([f, fu]), torch.cat([G, gu])
    return torch.cummin(f, dim=0).values.tolist()


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], results.items(), strict=True):
        optimum = PROBLEMS[name][0].optimal_value
        for label, colour in (("values and gradients", "C0"), ("values only", "C1")):
            regret = torch.tensor(runs[label]) - optimum  # (seeds, evaluations)
            x = torch.arange(1, regret.shape[1] + 1)
            median = regret.median(dim=0).values
            ax.plot(x, median, color=colour, label=f"{label} (median)")
            ax.fill_between(x, regret.min(0).values, regret.max(0).values, color=colour, alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best value found - minimum")
        ax.set_title(f"{name}: {regret.shape[0]} seeds (band: min to max)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="branin,hartmann6")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--evaluations", type=int, default=None, help="per run (default: 25 Branin, 40 Hartmann)"
    )
    parser.add_argument("--output", default="botorch_gradient_bo.png")
    parser.add_argument("--json", default=None, help="write the best-value curves here")
    args = parser.parse_args(argv)
    names = args.problems.split(",")
    unknown = [name for name in names if name not in PROBLEMS]
    if unknown:
        parser.error(f"unknown problem {unknown[0]!r}; choose from {', '.join(PROBLEMS)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    warnings.filterwarnings("ignore", category=InputDataWarning)
    results = {}
    for name in names:
        problem, init, evaluations = PROBLEMS[name]
        evaluations = args.evaluations or evaluations
        if evaluations <= init:
            parser.error(f"--evaluations must exceed {name}'s initial design of {init}")
        runs = {"values and gradients": [], "values only": []}
        for seed in range(args.seeds):
            for label in runs:
                start = time.perf_counter()
                best = optimise(
                    problem, init, evaluations, gradients=label != "values only", seed=seed
                )
                runs[label].append(best)
                print(
                    f"{name} seed {seed} {label:21s}: best {best[-1]:.5f} after {evaluations} "
                    f"evaluations ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        results[name] = runs
        print(f"{name}: optimum {problem.optimal_value}; best after {evaluations} evaluations,")
        for label, curves in runs.items():
            final = torch.tensor([c[-1] for c in curves])
            print(f"  {label:21s}: median {final.median():.5f}, worst {final.max():.5f}")
    plot(results, args.output)
    print(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
