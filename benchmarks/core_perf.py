"""Issue 2's performance targets: kernelgrad against the forum's JAX code, in one process.

Run: ``python benchmarks/core_perf.py [--repeats 200] [--json out.json]``

Peers, all jitted and warmed, float64 under a local ``jax.enable_x64`` context:

* ``forum vmap(jacfwd)``: the forum's ``grad_kernel_map`` with the kernel corrected to
  exp(-0.5 |x - y|^2) (for d = 3 the same code over (d,)-shaped points);
* ``forum jacfwd``: the forum's ``grad_kernel``;
* ``hand closed (diff)``: the closed form written directly, sum_j -(x_i - x_j) k_ij;
* ``hand closed (matmul)``: the same via x_i (K 1)_i - (K X)_i with K from differences;
* ``kernelgrad``: ``kg.grad_sum(RBF(), X)`` / ``kg.grad(RBF(), X[0], X)`` on NumPy float64 input.

Each time is the median over repeated calls, blocking on the result, taken in interleaved
rounds so that bursts of other load on a shared machine hit every approach alike. The first
call in a fresh process is measured in a subprocess that imports kernelgrad, then times one
call.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg


def forum_kernel(x, X):
    """The forum's rbf_kernel with the bug fixed: k(x, X_j) = exp(-0.5 |x - X_j|^2)."""
    x = jnp.reshape(x, (1, -1))
    X = jnp.reshape(X, (X.shape[0], -1))
    r2 = jnp.sum((x - X) ** 2, axis=-1)
    return jnp.exp(-0.5 * r2)


@partial(jax.jit, static_argnums=1)
def forum_grad_kernel(x, kernel):
    return jax.jacfwd(kernel)(x[0], x)


@partial(jax.jit, static_argnums=1)
def forum_grad_kernel_map(x, kernel):
    J = jax.vmap(jax.jacfwd(kernel), in_axes=(0, None))(x, x)
    return jnp.sum(J, axis=1)


@jax.jit
def hand_closed_diff(X):
    if X.ndim == 1:
        diff = X[:, None] - X[None, :]
        return jnp.sum(-diff * jnp.exp(-0.5 * diff * diff), axis=1)
    diff = X[:, None, :] - X[None, :, :]
    k = jnp.exp(-0.5 * jnp.sum(diff * diff, axis=-1))
    return -jnp.sum(k[:, :, None] * diff, axis=1)


@jax.jit
def hand_closed_matmul(X):
    X2 = X.reshape(X.shape[0], -1)
    s = sum((X2[:, a, None] - X2[None, :, a]) ** 2 for a in range(X2.shape[1]))
    k = jnp.exp(-0.5 * s)
    G = -(X2 * jnp.sum(k, axis=1)[:, None] - k @ X2)
    return G.reshape(X.shape)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    k = kg.RBF()
    rows = []
    with jax.enable_x64(True):
        for n, d in [(100, 1), (1000, 1), (4000, 1), (1000, 3)]:
            X = points(n, d)
            Xj = jnp.asarray(X)
            reps = max(5, args.repeats * 100 // n)
            ref = hand_closed_diff(Xj)
            t = median_times(
                {
                    "forum vmap(jacfwd)": lambda Xj=Xj: forum_grad_kernel_map(Xj, forum_kernel),
                    "hand closed (diff)": lambda Xj=Xj: hand_closed_diff(Xj),
                    "hand closed (matmul)": lambda Xj=Xj: hand_closed_matmul(Xj),
                    "kernelgrad": lambda X=X: kg.grad_sum(k, X),
                },
                reps,
            )
            err = float(np.max(np.abs(kg.grad_sum(k, X) - np.asarray(ref))) / np.max(np.abs(ref)))
            row = {"quantity": "grad_sum", "n": n, "d": d, "times_s": t, "rel_err": err}
            if n == 100:
                row["first_call_s"] = first_call("grad_sum(k, X)")
            rows.append(row)
            if n == 100:
                t = median_times(
                    {
                        "forum jacfwd": lambda Xj=Xj: forum_grad_kernel(Xj, forum_kernel),
                        "kernelgrad": lambda X=X: kg.grad(k, X[0], X),
                    },
                    reps,
                )
                rows.append(
                    {
                        "quantity": "grad",
                        "n": n,
                        "d": d,
                        "times_s": t,
                        "first_call_s": first_call("grad(k, X[0], X)"),
                    }
                )
    for row in rows:
        kgt = row["times_s"]["kernelgrad"]
        ratios = ", ".join(
            f"{name} {t * 1e6:.1f} us ({t / kgt:.2f}x)" for name, t in row["times_s"].items()
        )
        extra = f"; first call {row['first_call_s'] * 1e3:.2f} ms" if "first_call_s" in row else ""
        print(f"{row['quantity']:8s} n={row['n']:5d} d={row['d']}: {ratios}{extra}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
