"""Fitting a GP on values and gradients without a factorisation: ``fit(method="iterative")``.

Run: ``python benchmarks/iterative_fit.py [--n 5000] [--d 20] [--steps 50] [--json out.json]``

Synthetic data with a known lengthscale: f is a random-Fourier-feature draw from an RBF GP
(1024 features, lengthscale ``--lengthscale`` = 0.5 sqrt(d), variance 1), observed with its
exact gradient at n uniform points in [0, 1]^d (scaled by sqrt(d)), noise sd 0.05 on both.
At d = 20 the default lengthscale leaves the points nearly uncorrelated and the signal /
noise split poorly identified; ``--lengthscale`` sqrt(d) recovers it (docs/gp.md).
The fit starts at lengthscale 2x the truth, variance 0.5 and noises 0.1, and runs
``--steps`` Adam steps (learning rate 0.05) with 16 probes and fit's default CG tolerance
unless ``--tol`` is given. Printed: seconds per step, the
whole fit, this process's peak RSS (VmHWM), the CG iterations of every step's solve and
the recovered hyperparameters against the known ones.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import numpy as np

import kernelgrad as kg


def draw(n: int, d: int, lengthscale: float, seed: int = 0):
    """Values and gradients of an RFF sample f(x) = sqrt(2 / M) sum cos(w.x + b)."""
    rng = np.random.default_rng(seed)
    M = 1024
    W = rng.normal(size=(M, d)) / lengthscale
    b = rng.uniform(0, 2 * np.pi, M)
    X = rng.uniform(size=(n, d)) * np.sqrt(d)
    phase = X @ W.T + b
    scale = np.sqrt(2.0 / M)
    y = scale * np.cos(phase).sum(1)
    G = -scale * np.sin(phase) @ W
    return X, y + 0.05 * rng.normal(size=n), G + 0.05 * rng.normal(size=(n, d))


def peak_rss_gib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lengthscale", type=float, default=None)
    parser.add_argument(
        "--rank",
        type=int,
        default=None,
        help="preconditioner rank (default the policy's; 0: Jacobi)",
    )
    parser.add_argument("--tol", type=float, default=None, help="CG tolerance (fit's default)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    n, d = args.n, args.d
    truth = args.lengthscale or 0.5 * np.sqrt(d)
    X, y, G = draw(n, d, truth)
    start = kg.GradientGP(kg.RBF(variance=0.5, lengthscale=2 * truth), 0.1, 0.1)
    began = time.perf_counter()
    last = [began]

    def on_step(i, loss):
        now = time.perf_counter()
        print(f"step {i + 1}/{args.steps}: loss {loss:.4f}, {now - last[0]:.1f} s", flush=True)
        last[0] = now

    tol = inspect.signature(kg.fit).parameters["tol"].default if args.tol is None else args.tol
    result = kg.fit(
        start, X, y, G, steps=args.steps, method="iterative", probes=16, tol=tol,
        preconditioner_rank=args.rank, on_step=on_step,
    )  # fmt: skip
    total = time.perf_counter() - began
    gp = result.gp
    row = {
        "n": n,
        "d": d,
        "observations": n * (d + 1),
        "steps": args.steps,
        "preconditioner_rank": args.rank,
        "tol": tol,
        "cg_iterations": result.cg_iterations.tolist(),
        "seconds": total,
        "seconds_per_step": total / args.steps,
        "peak_rss_gib": peak_rss_gib(),
        "lengthscale": float(gp.kernel.lengthscale),
        "true_lengthscale": truth,
        "variance": float(gp.kernel.variance),
        "noises": [float(gp.value_noise), float(gp.gradient_noise)],
        "losses": result.losses.tolist(),
    }
    print(
        f"n={n} d={d} ({n * (d + 1)} observations): {args.steps} steps in {total:.1f} s "
        f"({total / args.steps:.2f} s a step, the first compiling), peak RSS "
        f"{row['peak_rss_gib']:.2f} GiB; lengthscale {row['lengthscale']:.3f} (true {truth:.3f}, "
        f"start {2 * truth:.3f}), variance {row['variance']:.3f} (true 1), noise variances "
        f"{row['noises'][0]:.4f}, {row['noises'][1]:.4f} (true 0.0025); CG iterations per "
        f"step {row['cg_iterations']}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(row, fh, indent=2)


if __name__ == "__main__":
    main()
