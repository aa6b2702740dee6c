"""The engine's measured thresholds: eager_max_pairs and the symmetric paths' minimum sizes.

Run: ``python benchmarks/crossover.py [--n ...] [--sym-n ...]``

1. **Eager NumPy against one jitted XLA program.** For each n it times the same closed-form
   rules (``kernelgrad.derivatives.rules``) on NumPy float64 input: eagerly in NumPy, and through
   the engine with its eager path switched off (warmed, with the local x64 context, padding and
   copies back to NumPy that a real call pays). It prints the ratio and the largest n * m
   at which NumPy is still faster.
2. **Symmetric blocks against the unsymmetric program** for ``grad_sum`` with Y = X: the
   same call with Y passed as a copy of X (so symmetry cannot be used), against
   ``kernelgrad.execution.symmetric``. It prints the smallest n from which the symmetric path wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import timeit

import jax
import numpy as np

import kernelgrad as kg
from kernelgrad.execution import engine, inputs, symmetric


def best_of(fn, number: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=7)) / number


def eager_against_xla(k, ns) -> None:
    # The engine's policy with its eager path switched off.
    no_eager = dataclasses.replace(kg.policy.current(), eager_max_pairs=-1)
    for op in ("grad_sum", "gram", "jacobian"):
        for d in (1, 3):
            last_eager_win = 0
            for n in ns:
                X = np.random.default_rng(0).uniform(-1.0, 1.0, (n, d))
                p = inputs.prepare(k, X, None, np.ones(n) if op == "grad_sum" else None)
                number = max(3, 200_000 // (n * n))

                def eager(p=p, op=op):
                    return engine._namespace_call(op, "closed", k, np, p.X, p.Y, p.W)

                def xla(p=p, op=op):
                    # The engine's own call with the eager path switched off: the same
                    # padding, transfers and x64 context that a real call pays.
                    with kg.policy.use(no_eager):
                        return engine.run(op, "closed", p)

                t_eager, t_xla = best_of(eager, number), best_of(xla, number)
                if t_eager < t_xla:
                    last_eager_win = n * n
                print(
                    f"{op:9s} d={d} n={n:4d}: numpy {t_eager * 1e6:8.1f} us, "
                    f"xla {t_xla * 1e6:8.1f} us, numpy/xla {t_eager / t_xla:5.2f}"
                )
            print(f"{op} d={d}: NumPy last faster at n*m = {last_eager_win}")


def symmetric_against_unsymmetric(k, ns) -> None:
    for d in (1, 3):
        first_win = None
        for n in ns:
            X = np.random.default_rng(0).uniform(-1.0, 1.0, (n, d))
            w = np.ones(n)
            number = max(2, 20_000_000 // (n * n))
            # A copy of X as Y hides the symmetry from the engine: its unsymmetric program.
            t_plain = best_of(lambda X=X, w=w: kg.grad_sum(k, X, X.copy(), weights=w), number)
            with jax.enable_x64(True):
                t_sym = best_of(
                    lambda X=X, w=w, n=n: np.asarray(symmetric.run(k, X, w))[:n], number
                )
            if t_sym < t_plain and first_win is None:
                first_win = n
            print(
                f"grad_sum  d={d} n={n:5d}: unsymmetric {t_plain * 1e3:8.2f} ms, "
                f"symmetric {t_sym * 1e3:8.2f} ms, symmetric/unsymmetric {t_sym / t_plain:5.2f}"
            )
        print(f"grad_sum d={d}: symmetric first faster at n = {first_win}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100, 150, 200, 300, 400, 600])
    parser.add_argument("--sym-n", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    args = parser.parse_args()
    k = kg.RBF()
    eager_against_xla(k, args.n)
    symmetric_against_unsymmetric(k, args.sym_n)


if __name__ == "__main__":
    main()
