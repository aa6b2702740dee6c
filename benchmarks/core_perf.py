"""kernelgrad against the forum's JAX code as posted and hand-written closed forms, in one process.

Run: ``python benchmarks/core_perf.py [--repeats 200] [--json out.json]``

Peers, all jitted and warmed, float64 under a local ``jax.enable_x64`` context, on JAX arrays:

* ``forum vmap(jacfwd)``: the forum's ``grad_kernel_map`` as posted, with its kernel fixed
  (``kernelgrad.bench.forum``: the squares restored, points of any d); it runs the kernel on
  scalars inside ``vmap``, so it never builds (n, 1)-shaped arrays;
* ``forum jacfwd``: the forum's ``grad_kernel`` as posted;
* ``xla diff`` and ``xla matmul``: the closed form written directly in jax.numpy, in the
  difference form and the matmul form (``kernelgrad.bench.hand``);
* ``kernelgrad``: ``kg.grad_sum(RBF(), X)`` / ``kg.grad(RBF(), X[0], X)`` on NumPy float64 input.

Two more measurements:

* **fixed cost**: ``kg.grad_sum`` against the bare compiled program it runs, called directly
  on inputs already padded: what validation, padding, cropping and transfer add per call;
* **inside jit**: ``jax.jit(lambda X: kg.grad_sum(k, X))`` against the fastest hand-written
  jitted closed form, on JAX arrays.

Each time is the median over repeated calls, blocking on the result, taken in interleaved
rounds so that bursts of other load on a shared machine hit every approach alike.
kernelgrad is first called the policy's ``hot_calls`` times at each size, as the bench's
warm-up does, so it is timed in its steady state (a size's own exact program). The first
call in a fresh process is measured in a subprocess that imports kernelgrad, then times one
call.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg
from kernelgrad.bench import forum
from kernelgrad.bench.hand import xla_closed_form
from kernelgrad.execution import engine

FORUM_KERNEL = forum.rbf_kernel_fixed
XLA_DIFF = xla_closed_form("grad_map", "diff")
XLA_MATMUL = xla_closed_form("grad_map", "matmul")


def median_times(fns: dict, repeats: int, rounds: int = 10) -> dict:
    """Median seconds per call of each function, measured in interleaved rounds.

    The machine is shared: a burst of someone else's load should hit every approach alike,
    not whichever happened to be timed during it. The order is shuffled in every round: a
    call right after one that freed a large buffer (the n x n programs) runs measurably
    slower, and a fixed order would always hand that cost to the same approach.
    """
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            fn = fns[name]
            # A batch per sample: a single call of a few microseconds would mostly time the
            # timer. Every call blocks on its own result.
            batch = max(1, repeats // rounds)
            t0 = time.perf_counter()
            for _ in range(batch):
                out = fn()
                if hasattr(out, "block_until_ready"):
                    out.block_until_ready()
            samples[name].append((time.perf_counter() - t0) / batch)
    return {name: statistics.median(times) for name, times in samples.items()}


FIRST_CALL = """
import time, numpy as np, kernelgrad as kg
X = np.linspace(-1.0, 1.0, 100); k = kg.RBF()
t0 = time.perf_counter(); kg.{call}; t1 = time.perf_counter()
print(t1 - t0)
"""


def first_call(call: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL.format(call=call)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def points(n: int, d: int) -> np.ndarray:
    if d == 1:
        return np.linspace(-1.0, 1.0, n)
    rng = np.random.default_rng(0)
    return rng.uniform(-1.0, 1.0, (n, d))


def _grad_sum_rows(k, args) -> list[dict]:
    rows = []
    for n, d in [(100, 1), (1000, 1), (4000, 1), (1000, 3)]:
        X = points(n, d)
        Xj = jnp.asarray(X)
        reps = max(5, args.repeats * 100 // n)
        ref = np.asarray(XLA_DIFF(Xj))
        # Steady state, as in the bench: a size called hot_calls times gets its own program.
        for _ in range(kg.policy.current().hot_calls + 1):
            kg.grad_sum(k, X)
        t = median_times(
            {
                "forum vmap(jacfwd)": lambda Xj=Xj: forum.grad_kernel_map(Xj, FORUM_KERNEL),
                "xla diff": lambda Xj=Xj: XLA_DIFF(Xj),
                "xla matmul": lambda Xj=Xj: XLA_MATMUL(Xj),
                "kernelgrad": lambda X=X: kg.grad_sum(k, X),
            },
            reps,
        )
        err = float(np.max(np.abs(kg.grad_sum(k, X) - ref)) / np.max(np.abs(ref)))
        row = {"quantity": "grad_sum", "n": n, "d": d, "times_s": t, "rel_err": err}
        if n == 100:
            row["first_call_s"] = first_call("grad_sum(k, X)")
        rows.append(row)
        if n == 100:
            for _ in range(kg.policy.current().hot_calls + 1):
                kg.grad(k, X[0], X)
            t = median_times(
                {
                    "forum jacfwd": lambda Xj=Xj: forum.grad_kernel(Xj, FORUM_KERNEL),
                    "kernelgrad": lambda X=X: kg.grad(k, X[0], X),
                },
                reps,
            )
            row = {"quantity": "grad", "n": n, "d": d, "times_s": t}
            rows.append({**row, "first_call_s": first_call("grad(k, X[0], X)")})
    return rows


def _fixed_cost_rows(k, args) -> list[dict]:
    """What a compiled kg call adds to the compiled program it runs, at a size (n = 8) where
    the program itself costs almost nothing: validation, routing, the x64 context, passing
    NumPy arguments, cropping and handing back a NumPy array.

    A pair function (the RBF written with jax.numpy) takes the compiled path at any n. After
    the policy's hot_calls calls kg runs its exact-size program, which the bare call runs directly.
    """
    rows = []
    pair = kg.kernel(lambda x, y: jnp.exp(-0.5 * jnp.sum((x - y) ** 2)))
    for op, d in [("grad_sum", 1), ("grad_sum", 3), ("gram", 3)]:
        X = points(8, d)
        X2 = X.reshape(8, d)
        call = getattr(kg, op)
        for _ in range(kg.policy.current().hot_calls + 1):
            call(pair, X)
        method = kg.explain(op, pair, X).method
        # The engine's compiled call for this size (Y = None: Y is X), as kg's calls run it.
        compiled = engine._executable(op, method, pair, X2, X2, None, specialise=True)
        program = functools.partial(compiled, X2, None, None)
        t = median_times(
            {"bare program": program, "kernelgrad": lambda X=X, call=call: call(pair, X)},
            max(50, args.repeats * 10),
        )
        over = t["kernelgrad"] - t["bare program"]
        rows.append({"quantity": f"fixed cost {op}", "n": 8, "d": d, "times_s": t, "fixed_s": over})
    return rows


def _inside_jit_rows(k, args) -> list[dict]:
    rows = []
    traced = jax.jit(lambda X: kg.grad_sum(k, X))
    for n, d in [(1000, 1), (3000, 1), (1000, 3), (3000, 3)]:
        Xj = jnp.asarray(points(n, d))
        t = median_times(
            {
                "xla diff": lambda Xj=Xj: XLA_DIFF(Xj),
                "xla matmul": lambda Xj=Xj: XLA_MATMUL(Xj),
                "kernelgrad": lambda Xj=Xj: traced(Xj),
            },
            max(5, args.repeats * 100 // n),
        )
        rows.append({"quantity": "inside jit", "n": n, "d": d, "times_s": t})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    k = kg.RBF()
    with jax.enable_x64(True):
        rows = _grad_sum_rows(k, args) + _fixed_cost_rows(k, args) + _inside_jit_rows(k, args)
    for row in rows:
        kgt = row["times_s"]["kernelgrad"]
        best = min(t for name, t in row["times_s"].items() if name != "kernelgrad")
        ratios = ", ".join(f"{name} {t * 1e6:.1f} us" for name, t in row["times_s"].items())
        extra = f"; first call {row['first_call_s'] * 1e3:.2f} ms" if "first_call_s" in row else ""
        if "fixed_s" in row:
            extra += f"; fixed cost {row['fixed_s'] * 1e6:.1f} us"
        else:
            extra = f"; kernelgrad / fastest other {kgt / best:.2f}x" + extra
        print(f"{row['quantity']:19s} n={row['n']:5d} d={row['d']}: {ratios}{extra}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
