"""What ``kernelgrad.torch`` adds per call over kernelgrad on the same data as NumPy.

Run: ``python benchmarks/torch_overhead.py``

``kernelgrad.torch.grad_sum`` on a CPU float64 tensor against ``kernelgrad.grad_sum`` on the
same array, at n = 1000, d = 3 (the issue's size) and n = 8 (where the work is nothing and
only the fixed cost shows), with the kernel given as a kernelgrad kernel and as a
``kernelgrad.torch.Kernel`` holding a torch lengthscale. Medians of calls taken in shuffled,
interleaved rounds, so that a burst of other load on a shared machine hits every variant.
With ``requires_grad`` on, the call also records JAX's VJP for the backward pass; that is
reported beside.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np
import torch

import kernelgrad as kg
import kernelgrad.torch as kgt


def medians(fns: dict, rounds: int = 20, calls: int = 20) -> dict:
    for fn in fns.values():
        for _ in range(70):  # past the engine's hot_calls: every variant at its steady state
            fn()
    samples = {name: [] for name in fns}
    order = list(fns)
    for _ in range(rounds):
        random.Random(len(samples[order[0]])).shuffle(order)
        for name in order:
            for _ in range(calls):
                start = time.perf_counter()
                fns[name]()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    k = kg.RBF()
    torch_kernel = kgt.RBF(lengthscale=torch.tensor(1.0, dtype=torch.float64))
    for n in (1000, 8):
        X = np.random.default_rng(0).normal(size=(n, 3))
        T = torch.from_numpy(X.copy())
        Tg = T.clone().requires_grad_(True)
        t = medians(
            {
                "numpy": lambda X=X: kg.grad_sum(k, X),
                "torch": lambda T=T: kgt.grad_sum(k, T),
                "torch Kernel": lambda T=T: kgt.grad_sum(torch_kernel, T),
                "torch, requires_grad": lambda T=Tg: kgt.grad_sum(k, T),
            }
        )
        base = t["numpy"]
        print(
            f"n={n:5d} d=3: NumPy {base * 1e6:.1f} us; torch +{(t['torch'] - base) * 1e6:.1f} us, "
            f"torch Kernel +{(t['torch Kernel'] - base) * 1e6:.1f} us; with requires_grad "
            f"(forward and VJP record) {t['torch, requires_grad'] * 1e6:.1f} us"
        )


if __name__ == "__main__":
    main()
