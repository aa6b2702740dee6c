"""Exact conditioning on values and gradients when d >> n: Woodbury against Cholesky.

Run: ``python benchmarks/woodbury_perf.py [--small] [--memory-gib 12] [--json out.json]``

For n points in d dimensions (n = 20, 50; d = 1000, 5000; float64), an RBF GP with a
lengthscale of sqrt(d) conditions on the values and gradients of f(x) = sum_a sin(x_a) / d
at standard normal points, n (d + 1) observations. ``GradientGP.condition`` runs with
``method="woodbury"`` (O(n^3 d + n^6)) and ``method="cholesky"`` (the dense (n (d + 1))^2
matrix and its factorisation) in the same run, where the dense matrix and its factor fit in
``--memory-gib``. Woodbury's time is the median of 3 calls after one that compiles;
Cholesky's is one call (it runs for minutes at n = 20, d = 1000), compile included, which
is under a second of it. The relative difference of the two posteriors' weights is printed
next to the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import kernelgrad as kg


def problem(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(X).sum(1) / d, np.cos(X) / d


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(n: int, d: int, memory_gib: float) -> dict:
    X, y, G = problem(n, d)
    gp = kg.GradientGP(kg.RBF(lengthscale=np.sqrt(d)), 1e-6, 1e-6)

    def condition(method):
        return gp.condition(X, y, G, method=method)

    condition("woodbury")  # compile
    woodbury_s, fast = timed(lambda: condition("woodbury"), 3)
    row = {"n": n, "d": d, "observations": n * (d + 1), "woodbury_s": woodbury_s}
    line = f"n={n:3d} d={d:5d} ({n * (d + 1):7d} observations): "
    line += f"woodbury {woodbury_s * 1e3:8.1f} ms"
    dense_bytes = 2 * (n * (d + 1)) ** 2 * 8  # the matrix and its factor
    if dense_bytes <= memory_gib * 2**30:
        cholesky_s, exact = timed(lambda: condition("cholesky"), 1)
        err = np.abs(fast.weights - exact.weights).max() / np.abs(exact.weights).max()
        row.update(cholesky_s=cholesky_s, ratio=cholesky_s / woodbury_s, relative_diff=err)
        line += f", cholesky {cholesky_s:8.2f} s: {cholesky_s / woodbury_s:7.0f}x"
        line += f", weights differ by {err:.1e}"
    else:
        line += f", cholesky skipped: {dense_bytes / 2**30:.0f} GiB dense"
    print(line, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="toy sizes, for a quick check")
    parser.add_argument("--memory-gib", type=float, default=12.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [(5, 40), (8, 100)] if args.small else [(20, 1000), (50, 1000), (20, 5000), (50, 5000)]
    rows = [measure(n, d, args.memory_gib) for n, d in sizes]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
