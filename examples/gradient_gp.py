"""Gradient-enhanced GP regression: test error against training size, with and without gradients.

Two standard test functions, rescaled to the unit cube [0, 1]^d:

* **Branin** (d = 2) on its usual domain [-5, 10] x [0, 15];
* **Rosenbrock** (d = 10) on [-2, 2]^10.

For each number n of training points (uniform, seeded) the script fits a GP to the values
alone and to the values and gradients together (``kg.GradientGP`` with a Matern 5/2 ARD
kernel, hyperparameters by ``kg.fit``), then reports the relative RMSE of the posterior mean,
RMSE / std(f), on held-out test points. Values are standardised by the training values'
mean and standard deviation; gradients are divided by the same standard deviation.

Run: ``python examples/gradient_gp.py --sizes 5,10,20,40 --output gradient_gp.png``
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg


def branin(x):
    """Branin on [0, 1]^2, mapped to [-5, 10] x [0, 15]: one point x (2,) -> scalar."""
    x1, x2 = 15.0 * x[0] - 5.0, 15.0 * x[1]
    b, c, t = 5.1 / (4.0 * jnp.pi**2), 5.0 / jnp.pi, 1.0 / (8.0 * jnp.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * jnp.cos(x1) + 10.0


def rosenbrock(x):
    """Rosenbrock on [0, 1]^d, mapped to [-2, 2]^d: one point x (d,) -> scalar."""
    z = 4.0 * x - 2.0
    return jnp.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)


FUNCTIONS = {"branin": (branin, 2), "rosenbrock": (rosenbrock, 10)}


def evaluate(fn, X):
    """Values (n,) and gradients (n, d) of ``fn`` at X, by JAX AD in float64."""
    with jax.enable_x64(True):
        value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(fn)))
        y, G = value_and_grad(jnp.asarray(X))
        return np.asarray(y), np.asarray(G)


def relative_rmse(fn, d, n, with_gradients, X_test, y_test, steps, seed) -> float:
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, d))
    y, G = evaluate(fn, X)
    centre, scale = y.mean(), y.std() if n > 1 else 1.0
    y, G = (y - centre) / scale, G / scale
    kernel = kg.Matern52(variance=1.0, lengthscale=np.full(d, 0.3 * np.sqrt(d)))
    start = kg.GradientGP(kernel, value_noise=1e-4, gradient_noise=1e-4)
    G_obs = G if with_gradients else None
    fitted = kg.fit(start, X, y, G_obs, steps=steps, learning_rate=0.05).gp
    mean = fitted.condition(X, y, G_obs).mean(X_test) * scale + centre
    return float(np.sqrt(np.mean((mean - y_test) ** 2)) / np.std(y_test))


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items(), strict=True):
        sizes = [r["n"] for r in rows]
        ax.plot(sizes, [r["values"] for r in rows], "o-", label="values only")
        ax.plot(sizes, [r["values_and_gradients"] for r in rows], "s-", label="values + gradients")
        d = FUNCTIONS[name][1]
        ax.set(xscale="log", yscale="log", xlabel="training points n", title=f"{name}, d = {d}")
        ax.set_ylabel("test RMSE / std(f)")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,10,20,40", help="comma-separated n")
    parser.add_argument("--functions", default="branin,rosenbrock")
    parser.add_argument("--test-points", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="gradient_gp.png", help="PNG path")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for name in args.functions.split(","):
        fn, d = FUNCTIONS[name]
        X_test = np.random.default_rng(args.seed + 1).uniform(size=(args.test_points, d))
        y_test, _ = evaluate(fn, X_test)
        rows = []
        for n in sizes:
            start = time.perf_counter()
            row = {"n": n}
            for key, with_gradients in (("values", False), ("values_and_gradients", True)):
                row[key] = relative_rmse(
                    fn, d, n, with_gradients, X_test, y_test, args.steps, args.seed
                )
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(
                f"{name:10s} d={d:2d} n={n:4d}  values only {row['values']:.3e}   "
                f"values+gradients {row['values_and_gradients']:.3e}   ({row['seconds']:.1f} s)"
            )
        results[name] = rows
    plot(results, args.output)
    print(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
