"""Large-n grad_sum throughput on the CPU, against XLA's own exp limit and KeOps, in one run.

Run: ``python benchmarks/throughput.py [--n 20000] [--d 3] [--repeats 3]``

* **exp limit**: ``jnp.sum(jnp.exp(x))`` over 4e6 float64 elements, jitted: the rate at which
  this machine's XLA evaluates exp, the one transcendental a RBF grad map needs per pair.
* **kernelgrad**: ``kg.grad_sum(RBF(), X)`` (Y = X) and ``kg.grad_sum(RBF(), X, Y)`` (Y != X)
  at n = m = ``--n``, float64, NumPy in; pairs per second and the fraction of the exp limit.
* **KeOps** (only where ``pykeops`` is installed; it compiles with g++ on first use and is
  never a dependency of kernelgrad): the same reduction as a CPU ``LazyTensor``,
  ``(-(x_i - x_j) exp(-|x_i - x_j|^2 / 2)).sum(dim=1)``.

Each time is the best of ``--repeats`` calls after a warm-up call (kernelgrad: after the
policy's ``hot_calls`` calls, so that it runs its exact-size program, as a loop at fixed n
does). On a shared machine the exp limit itself moves (1.6-2.8e9/s between runs here), so
``--rounds`` rounds interleave it with every row, and the report takes the best of each
over the rounds and gives each round's own fraction too.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if hasattr(out, "block_until_ready"):
            out.block_until_ready()
        times.append(time.perf_counter() - t0)
    return min(times)


def exp_rate(repeats: int) -> float:
    """float64 exps per second of a jitted jnp.sum(jnp.exp(x)) over 4e6 elements."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).uniform(-1.0, 0.0, 4_000_000))
        fn = jax.jit(lambda x: jnp.sum(jnp.exp(x)))
        return x.size / best_of(lambda: fn(x), repeats * 3)


def keops_grad_sum(X: np.ndarray):
    """The RBF grad map as a KeOps CPU LazyTensor reduction, or None without pykeops."""
    if importlib.util.find_spec("pykeops") is None:
        return None
    from pykeops.numpy import LazyTensor

    x_i = LazyTensor(X[:, None, :])
    x_j = LazyTensor(X[None, :, :])
    diff = x_i - x_j
    expr = -diff * (-(diff**2).sum(-1) / 2).exp()
    return lambda: expr.sum(axis=1, backend="CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, (args.n, args.d))
    Y = rng.uniform(-1.0, 1.0, (args.n, args.d))
    k = kg.RBF()
    pairs = args.n * args.n
    rows = {
        "kernelgrad, Y = X": lambda: kg.grad_sum(k, X),
        "kernelgrad, Y != X": lambda: kg.grad_sum(k, X, Y),
    }
    keops = keops_grad_sum(X)
    if keops is not None:
        rows["KeOps CPU LazyTensor, Y = X"] = keops
    # A size called often runs exact-size programs (no bucket padding): a loop at fixed n
    # (SVGD steps, say) gets there after the policy's hot_calls calls.
    print(f"warming up with {kg.policy.current().hot_calls} calls per kernelgrad row", flush=True)
    for name, fn in rows.items():
        if name.startswith("kernelgrad"):
            for _ in range(kg.policy.current().hot_calls):
                fn()
    limits, seconds = [], {name: [] for name in rows}
    for round_ in range(args.rounds):
        limits.append(exp_rate(args.repeats))
        line = [f"round {round_ + 1}: exp limit {limits[-1]:.3g}/s"]
        for name, fn in rows.items():
            seconds[name].append(best_of(fn, args.repeats))
            line.append(f"{name} {pairs / seconds[name][-1] / limits[-1]:.2f}")
        print("; ".join(line), flush=True)
    limit = max(limits)
    print(f"exp limit: {limit:.3g} float64 exps/s (jitted jnp.sum(jnp.exp(x)), 4e6 elements)")
    rates = {}
    for name in rows:
        rates[name] = pairs / min(seconds[name])
        print(
            f"{name}: {min(seconds[name]):.3g} s, {rates[name]:.3g} pairs/s, "
            f"{rates[name] / limit:.2f} of the exp limit"
        )
    if keops is not None:
        ratio = rates["kernelgrad, Y = X"] / rates["KeOps CPU LazyTensor, Y = X"]
        print(f"kernelgrad / KeOps (Y = X): {ratio:.2f}x the pairs per second")
        ref = np.asarray(keops())
        err = np.max(np.abs(kg.grad_sum(k, X) - ref)) / np.max(np.abs(ref))
        print(f"max relative difference from KeOps: {err:.1e}")
    else:
        print("KeOps: pykeops is not installed (pip install pykeops; benchmark only)")


if __name__ == "__main__":
    main()
