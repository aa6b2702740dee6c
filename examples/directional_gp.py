"""Directional derivatives as GP observations in d = 50: test error against the number of
observations, beside values only and full gradients.

An adjoint solver or a forward-mode AD pass returns one directional derivative v . grad f(x)
a run for the price of about one function value, where the full gradient in d = 50 costs 50
forward passes. This script asks what such observations are worth.

The targets are ``--draws`` draws from the prior (errors pooled over them; one draw alone
varies a lot): f(x) = sqrt(2 / M) sum_m cos(w_m . x + b_m), a
random-Fourier-feature sample of an RBF GP (M = 2048 features, lengthscale sqrt(d),
variance 1), with exact gradients. Training and test points are standard normal in d = 50.
Three ways to spend the observations, each with the true kernel (the comparison is of the
information in the observations, not of hyperparameter fitting) and noise variance 1e-6:

* **values**: f at n points, n observations;
* **directional**: one derivative a point along a random unit direction, nothing else, n
  observations (``GradientGP.condition(X, None, directions=V, D=...)``);
* **values + directional**: the value and that one directional derivative at n points,
  2 n observations (what a forward-mode AD pass returns with the value);
* **full gradients**: values and gradients at n points, n (d + 1) observations.

Printed and plotted: the relative RMSE of the posterior mean, RMSE / RMS(f) (1 for the
prior mean 0), on 500 test points, against the number of observations (left) and of points
(right): an observation's cost differs between the arms, a full gradient's d + 1 numbers
coming from one adjoint run, or d forward passes.

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


def relative_rmse(posteriors, Xs, truths):
    """RMSE over the RMS of f, pooled over the draws: 1 for the prior mean, 0 for a
    perfect fit."""
    pairs = zip(posteriors, truths, strict=True)
    errors = [np.mean((post.mean(Xs) - truth) ** 2) for post, truth in pairs]
    return float(np.sqrt(np.sum(errors) / np.sum([np.mean(t**2) for t in truths])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--counts", default="8,16,32,64,128,256,512,1024",
                        help="observation counts for the values and directional arms")  # fmt: skip
    parser.add_argument("--gradient-points", default="1,2,4,8,16,32",
                        help="point counts for the full-gradient arm")  # fmt: skip
    parser.add_argument("--test-points", type=int, default=500)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="directional-gp.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    d = args.d
    lengthscale = float(np.sqrt(d))
    draws = [prior_draw(d, lengthscale, 2048, args.seed + 1 + k) for k in range(args.draws)]
    rng = np.random.default_rng(args.seed)
    Xs = rng.normal(size=(args.test_points, d))
    truths = [f(Xs) for f, _ in draws]
    gp = kg.GradientGP(kg.RBF(variance=1.0, lengthscale=lengthscale), 1e-6, 1e-6)
    counts = [int(c) for c in args.counts.split(",")]
    pool = rng.normal(size=(max(counts), d))  # nested designs: the first n points
    directions = rng.normal(size=(max(counts), 1, d))
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    values = [f(pool) for f, _ in draws]
    gradients = [grad(pool) for _, grad in draws]
    derivatives = [np.einsum("nrd,nd->nr", directions, G) for G in gradients]

    def observe(arm, n, y, G, D):
        """The posterior of one arm from the first n points of one draw."""
        X, V = pool[:n], directions[:n]
        if arm == "values":
            return gp.condition(X, y[:n])
        if arm == "directional":
            return gp.condition(X, None, directions=V, D=D[:n])
        if arm == "values + directional":
            return gp.condition(X, y[:n], directions=V, D=D[:n])
        return gp.condition(X, y[:n], G[:n])

    observations_per_point = {"values": 1, "directional": 1, "values + directional": 2,
                              "full gradients": d + 1}  # fmt: skip
    sizes = {arm: counts for arm in observations_per_point}
    sizes["full gradients"] = [int(c) for c in args.gradient_points.split(",")]
    results = {}  # per arm: (points, observations, relative test RMSE)
    for arm, per_point in observations_per_point.items():
        results[arm] = []
        for n in sizes[arm]:
            data = zip(values, gradients, derivatives, strict=True)
            error = relative_rmse([observe(arm, n, *one) for one in data], Xs, truths)
            results[arm].append((n, n * per_point, error))

    print(
        f"d = {d}, RBF lengthscale {lengthscale:.2f}, {args.draws} prior draws: relative test "
        "RMSE (points/observations)"
    )
    for arm, rows in results.items():
        print(f"{arm:21s}" + "  ".join(f"{p}/{m}: {e:.3f}" for p, m, e in rows))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for (arm, rows), marker in zip(results.items(), "osD^", strict=True):
        p, m, e = zip(*rows, strict=True)
        axes[0].plot(m, e, marker=marker, label=arm)
        axes[1].plot(p, e, marker=marker, label=arm)
    for ax, what in zip(axes, ("observations", "points (function evaluations)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative test RMSE of the posterior mean")
    axes[0].legend()
    fig.suptitle(f"{args.draws} GP prior draws in d = {d}: what each kind of observation is worth")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as fh:
            rows = {k: [dict(zip(("points", "observations", "error"), r, strict=True)) for r in v]
                    for k, v in results.items()}  # fmt: skip
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
