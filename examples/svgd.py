"""Stein variational gradient descent (SVGD) on a 2-D banana, built on ``kg.grad_sum``.

SVGD (Liu and Wang, 2016) moves n particles x_i along

    phi(x_i) = 1/n sum_j [ k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i) ],

an attraction towards high density, smoothed by the kernel, plus a repulsion that keeps the
particles apart. For a stationary kernel grad_{x_j} k(x_j, x_i) = -grad_{x_i} k(x_i, x_j), so
the repulsion is minus the summed grad map, ``-kg.grad_sum(k, X)``, and the attraction is
``kg.gram_matvec(k, X, W=scores)``: neither builds the (n, n, d) tensor of pairwise
gradients. The RBF bandwidth follows the median heuristic at every step.

The target is a banana: x1 ~ N(0, s^2), x2 | x1 ~ N(b (x1^2 - s^2), 1), whose mean is 0 and
whose marginal variances are s^2 and 1 + 2 b^2 s^4. The script prints the particles' moments
next to these and writes a PNG of the particles over the target's density.

Run: ``python examples/svgd.py --particles 300 --steps 1000 --output svgd.png``
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg

SCALE, BEND = 1.5, 0.4  # s and b above


def log_density(x):
    """Unnormalised log density of the banana at one point x (2,)."""
    x1, x2 = x[0], x[1]
    return -0.5 * (x1 / SCALE) ** 2 - 0.5 * (x2 - BEND * (x1**2 - SCALE**2)) ** 2


def exact_moments() -> tuple[np.ndarray, np.ndarray]:
    """Mean and marginal variances of the banana, derived in the module docstring."""
    return np.zeros(2), np.array([SCALE**2, 1.0 + 2.0 * BEND**2 * SCALE**4])


def svgd(particles: np.ndarray, steps: int, step_size: float) -> np.ndarray:
    """Run SVGD from ``particles`` (n, 2); returns the moved particles."""
    with jax.enable_x64(True):
        score = jax.jit(jax.vmap(jax.grad(log_density)))
        X = particles.copy()
        n = X.shape[0]
        for _ in range(steps):
            # Median heuristic (Liu and Wang): exp(-r^2 / h), h = med^2 / log n, so l^2 = h / 2.
            sq = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
            h = np.median(sq) / np.log(n + 1.0)
            k = kg.RBF(lengthscale=np.sqrt(max(h, 1e-8) / 2.0))
            attraction = kg.gram_matvec(k, X, W=np.asarray(score(jnp.asarray(X))))
            repulsion = -kg.grad_sum(k, X)
            X = X + step_size * (attraction + repulsion) / n
    return X


def plot(initial, final, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g1, g2 = np.meshgrid(np.linspace(-5, 5, 200), np.linspace(-4, 8, 200))
    grid = np.stack([g1.ravel(), g2.ravel()], axis=1)
    with jax.enable_x64(True):
        density = np.exp(np.asarray(jax.vmap(log_density)(jnp.asarray(grid)))).reshape(g1.shape)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contour(g1, g2, density, levels=8, cmap="Greys")
    ax.scatter(*initial.T, s=6, c="tab:orange", label="start")
    ax.scatter(*final.T, s=6, c="tab:blue", label="after SVGD")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=f"SVGD, {len(final)} particles")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--step-size", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="svgd.png", help="PNG path")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    initial = rng.normal(size=(args.particles, 2)) * 0.5 + np.array([-3.0, 4.0])
    start = time.perf_counter()
    final = svgd(initial, args.steps, args.step_size)
    seconds = time.perf_counter() - start
    mean, var = exact_moments()
    result = {
        "mean": final.mean(axis=0),
        "variance": final.var(axis=0),
        "exact_mean": mean,
        "exact_variance": var,
        "seconds": seconds,
    }
    print(f"{args.particles} particles, {args.steps} steps in {seconds:.1f} s")
    print(f"mean      {np.round(result['mean'], 3)}  (exact {mean})")
    print(f"variance  {np.round(result['variance'], 3)}  (exact {var})")
    plot(initial, final, args.output)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
