"""kernelgrad's GradientKernel against GPyTorch's RBFKernelGrad: training and prediction.

Run: ``python benchmarks/gpytorch_perf.py [--small]``

Each measurement runs in a fresh process (peak RSS is that process's VmHWM), capped at
``--memory-gib`` of address space so that a kernel that cannot fit fails instead of
exhausting a shared machine:

* n = 1000, d = 10 (11,000 x 11,000): an ExactGP with values and gradients, ``ScaleKernel``
  over each kernel, trained for ``--steps`` Adam steps on the exact marginal likelihood, then
  the posterior at 100 test points. Above ``max_cholesky_size`` (800) GPyTorch runs CG and
  Lanczos for both kernels; RBFKernelGrad builds its matrix densely for them, kernelgrad's
  operator multiplies without it.
* n = 1000, d = 100 (101,000 x 101,000, 76 GiB dense): training steps (a marginal
  likelihood evaluation, its gradient, an Adam step), kernelgrad's kernel only.

GPyTorch's pivoted-Cholesky preconditioner is off for both kernels. The posterior's
variance solves against all 1100 test columns at once; kernelgrad takes them 16 at a time
(policy ``gradient_rhs_chunk``) and, under ``torch.no_grad``, keeps no VJP residuals: before
both, that solve needed over 21 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
limit = int(float(sys.argv[4]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import torch, gpytorch
import kernelgrad as kg
from kernelgrad.gpytorch import GradientKernel

which, n, d, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
torch.manual_seed(0)
X = torch.rand(n, d, dtype=torch.float64)
f = torch.sin(3 * X).sum(1)
y = torch.cat([f[:, None], 3 * torch.cos(3 * X)], dim=1)

class Model(gpytorch.models.ExactGP):
    def __init__(self, kernel, likelihood):
        super().__init__(X, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMeanGrad()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultitaskMultivariateNormal(
            self.mean_module(x), self.covar_module(x))

kernel = GradientKernel(kg.RBF) if which == "kernelgrad" else gpytorch.kernels.RBFKernelGrad()
likelihood = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=d + 1).double()
model = Model(kernel.double(), likelihood).double()
model.covar_module.base_kernel.lengthscale = 0.5 * d ** 0.5
likelihood.noise = 1e-2
mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
out = {"which": which, "n": n, "d": d}
try:
    with gpytorch.settings.max_preconditioner_size(0):
        start = time.perf_counter()
        for _ in range(steps):
            optimiser.zero_grad()
            loss = -mll(model(X), y)
            loss.backward()
            optimiser.step()
        out["train_s_per_step"] = (time.perf_counter() - start) / steps
        out["loss"] = loss.item()
        if d <= 20:
            model.eval(); likelihood.eval()
            start = time.perf_counter()
            with torch.no_grad():
                pred = likelihood(model(torch.rand(100, d, dtype=torch.float64)))
                pred.mean, pred.variance
            out["predict_s"] = time.perf_counter() - start
except (MemoryError, RuntimeError) as error:
    out["error"] = f"{type(error).__name__}: {str(error)[:200]}"
with open("/proc/self/status") as fh:
    out["peak_rss_bytes"] = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps(out))
"""


def run(which: str, n: int, d: int, memory_gib: float, steps: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, which, str(n), str(d), str(memory_gib), str(steps)],
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"which": which, "n": n, "d": d, "error": proc.stderr.strip()[-300:]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="toy sizes, for a quick check")
    parser.add_argument("--memory-gib", type=float, default=16.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cases = [(100, 3), (50, 20)] if args.small else [(1000, 10), (1000, 100)]
    results = []
    for n, d in cases:
        for which in ("kernelgrad", "gpytorch") if d <= 20 else ("kernelgrad",):
            r = run(which, n, d, args.memory_gib, args.steps)
            results.append(r)
            line = f"{which:10s} n={n} d={d}: "
            if "error" in r:
                line += f"failed: {r['error']}"
            else:
                line += f"{r['train_s_per_step']:.2f} s per training step"
                if "predict_s" in r:
                    line += f", prediction {r['predict_s']:.2f} s"
            line += f"; peak RSS {r.get('peak_rss_bytes', 0) / 2**30:.2f} GiB"
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
