"""Directional derivatives as GP observations in d = 50: test error against the number of
observations, beside values only and full gradients.

An adjoint solver or a forward-mode AD pass returns one directional derivative v . grad f(x)
a run for the price of about one function value, where the full gradient in d = 50 costs 50
forward passes. This script asks what such observations are worth.

The target f is a draw from the prior: f(x) = sqrt(2 / M) sum_m cos(w_m . x + b_m), a
random-Fourier-feature sample of an RBF GP (M = 2048 features, lengthscale sqrt(d),
variance 1), with exact gradients. Training and test points are standard normal in d = 50.
Three ways to spend the observations, each with the true kernel (the comparison is of the
information in the observations, not of hyperparameter fitting) and noise variance 1e-6:

* **values**: f at n points, n observations;
* **directional**: one derivative a point along a random unit direction, nothing else, n
  observations (``GradientGP.condition(X, None, directions=V, D=...)``);
* **full gradients**: values and gradients at n points, n (d + 1) observations.

Printed and plotted: the relative RMSE of the posterior mean, RMSE / std(f), on 500 test
points, against the number of observations. (An observation's cost differs between the
arms: a full gradient's n (d + 1) observations come from n adjoint runs, n values from n
plain ones.)

Run: ``python examples/directional_gp.py --output docs/directional-gp.png``
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import kernelgrad as kg


def prior_draw(d: int, lengthscale: float, features: int, seed: int):
    """(f, grad f) of one random-Fourier-feature sample of an RBF GP, for points (n, d)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(features, d)) / lengthscale
    b = rng.uniform(0, 2 * np.pi, features)
    scale = np.sqrt(2.0 / features)

    def f(X):
        return scale * np.cos(X @ W.T + b).sum(1)

    def grad(X):
        return -scale * np.sin(X @ W.T + b) @ W

    return f, grad


def relative_rmse(post, Xs, truth):
    return float(np.sqrt(np.mean((post.mean(Xs) - truth) ** 2)) / truth.std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--counts", default="8,16,32,64,128,256,512,1024",
                        help="observation counts for the values and directional arms")  # fmt: skip
    parser.add_argument("--gradient-points", default="1,2,4,8,16,32",
                        help="point counts for the full-gradient arm")  # fmt: skip
    parser.add_argument("--test-points", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="directional-gp.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    d = args.d
    lengthscale = float(np.sqrt(d))
    f, grad = prior_draw(d, lengthscale, 2048, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    Xs = rng.normal(size=(args.test_points, d))
    truth = f(Xs)
    gp = kg.GradientGP(kg.RBF(variance=1.0, lengthscale=lengthscale), 1e-6, 1e-6)
    counts = [int(c) for c in args.counts.split(",")]
    pool = rng.normal(size=(max(counts), d))  # nested designs: the first n points
    directions = rng.normal(size=(max(counts), 1, d))
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    G_pool = grad(pool)
    D_pool = np.einsum("nrd,nd->nr", directions, G_pool)
    results = {"values": [], "directional": [], "full gradients": []}
    for n in counts:
        X = pool[:n]
        post = gp.condition(X, f(X))
        results["values"].append((n, relative_rmse(post, Xs, truth)))
        post = gp.condition(X, None, directions=directions[:n], D=D_pool[:n])
        results["directional"].append((n, relative_rmse(post, Xs, truth)))
    for n in (int(c) for c in args.gradient_points.split(",")):
        X = pool[:n]
        post = gp.condition(X, f(X), G_pool[:n])
        results["full gradients"].append((n * (d + 1), relative_rmse(post, Xs, truth)))

    print(f"d = {d}, RBF lengthscale {lengthscale:.2f}: relative test RMSE")
    for arm, rows in results.items():
        print(f"{arm:15s}" + "  ".join(f"{m}: {e:.3f}" for m, e in rows))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (arm, rows), marker in zip(results.items(), "os^", strict=True):
        m, e = zip(*rows, strict=True)
        ax.plot(m, e, marker=marker, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("observations")
    ax.set_ylabel("relative test RMSE of the posterior mean")
    ax.set_title(f"A GP prior draw in d = {d}: what each kind of observation is worth")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: [list(r) for r in v] for k, v in results.items()}, fh, indent=2)


if __name__ == "__main__":
    main()
