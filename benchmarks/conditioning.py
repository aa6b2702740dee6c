"""Conditioning a GP on values and gradients by conjugate gradients: time and iterations
for each preconditioner.

Run: ``python benchmarks/conditioning.py [--n 1000] [--d 100] [--ranks 100 200]
[--json out.json]``

n standard normal points in d dimensions observe the values and gradients of
f(x) = sum_a sin(3 x_a) / 10, n (d + 1) observations, with noise variance 1e-3 on both,
under an RBF of two lengthscales: 5 (the points are about 14 apart, so the covariance is
close to diagonal) and sqrt(d) (strongly correlated). ``GradientGP.condition(method="cg",
tol=1e-6)`` runs once to compile and is then timed once per preconditioner: Jacobi,
block Gauss-Seidel (the default, ``"auto"``) and a pivoted Cholesky of each rank, and
Jacobi and Gauss-Seidel once more with ``mixed_precision=True`` (float32 solves refined
in float64). Printed: seconds, CG iterations (float32 and float64 together), float32
refinements and the final relative residual of the float64 system.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import kernelgrad as kg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--ranks", type=int, nargs="*", default=[100, 200])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    n, d = args.n, args.d
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    y, G = np.sin(3 * X).sum(1) / 10, 0.3 * np.cos(3 * X)
    rows = []
    print(f"n = {n}, d = {d}: {n * (d + 1)} observations, tol 1e-6")
    for lengthscale in (5.0, float(np.sqrt(d))):
        gp = kg.GradientGP(kg.RBF(lengthscale=lengthscale), 1e-3, 1e-3)
        runs = [("jacobi", 0, False), ("gauss-seidel", 0, False)]
        runs += [("pivoted-cholesky", rank, False) for rank in args.ranks]
        runs += [("jacobi", 0, True), ("gauss-seidel", 0, True)]
        for preconditioner, rank, mixed in runs:

            def condition(preconditioner=preconditioner, rank=rank, mixed=mixed, gp=gp):
                return gp.condition(
                    X, y, G, method="cg", tol=1e-6, preconditioner=preconditioner,
                    preconditioner_rank=rank or None, mixed_precision=mixed,
                )  # fmt: skip

            condition()  # compiles
            began = time.perf_counter()
            post = condition()
            seconds = time.perf_counter() - began
            info = post.cg_info
            row = {
                "lengthscale": lengthscale,
                "preconditioner": preconditioner,
                "rank": rank,
                "mixed_precision": mixed,
                "refinements": info.refinements,
                "seconds": seconds,
                "iterations": info.iterations,
                "relative_residual": info.relative_residual,
            }
            rows.append(row)
            name = preconditioner + (f", rank {rank}" if rank else "")
            name += ", mixed precision" if mixed else ""
            print(
                f"lengthscale {lengthscale:5.2f}  {name:36s} {seconds:6.2f} s  "
                f"{info.iterations:4d} iterations ({info.refinements} float32 refinements)  "
                f"residual {info.relative_residual:.1e}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": n, "d": d, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
