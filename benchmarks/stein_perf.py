"""The KSD's costs: against a dense Stein kernel, at large n, and its bootstrap test.

Run: ``python benchmarks/stein_perf.py [--small] [--json out.json]``

1. **Against a dense baseline** (n = 2000, d = 10, float64): ``kg.stein.ksd`` against the
   Stein kernel built densely as a competent JAX user would, ``jax.vmap(jax.vmap(k_p))`` with
   the trace term from the cross-Hessian (``jax.jacfwd`` of ``jax.grad``), jitted, then summed
   (the script stops if its plan is over half the memory available). Time (median of repeats) and
   peak memory (XLA's buffer assignment for the dense program, the tiled program's for kernelgrad),
   in the same run; and their agreement.
2. **Large n** (n = 10^5, d = 3): ``ksd`` time, and the peak RSS in a fresh process, total
   and above the resident size just before the call (inputs loaded, program compiled).
3. **Bootstrap** (n = 5000, d = 2, 1000 draws): ``ksd_test`` time.

``--small`` runs every part at toy sizes (the test suite does, so the script stays working).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import kernelgrad as kg
from kernelgrad.execution import memory

KERNEL = kg.InverseMultiquadric()


def dense_stein_sum(X, S):
    """sum_ij k_p(x_i, x_j) with every (i, j) entry built densely: the cross-Hessian, then its
    trace. The cross block alone (jacfwd of the x-gradient in y) is the fastest dense form we
    found: the full Hessian of k on z = (x, y) took 1.6x its time at n = 1000, d = 10."""

    def stein(x, s, y, t):
        H = jax.jacfwd(jax.grad(KERNEL, argnums=0), argnums=1)(x, y)
        dx, dy = jax.grad(KERNEL, argnums=(0, 1))(x, y)
        return (s @ t) * KERNEL(x, y) + s @ dy + t @ dx + jnp.trace(H)

    M = jax.vmap(lambda x, s: jax.vmap(lambda y, t: stein(x, s, y, t))(X, S))(X, S)
    return jnp.sum(M) / X.shape[0] ** 2


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def against_dense(n: int, d: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    S = -X
    with jax.enable_x64(True):
        Xj, Sj = jnp.asarray(X), jnp.asarray(S)
        dense = jax.jit(dense_stein_sum)
        compiled = dense.lower(Xj, Sj).compile()
        dense_bytes = compiled.memory_analysis().temp_size_in_bytes
        if dense_bytes > memory.host_available_bytes() / 2:
            raise SystemExit(
                f"the dense baseline plans {dense_bytes / 2**30:.1f} GiB, over half of the "
                f"{memory.host_available_bytes() / 2**30:.1f} GiB available: run with fewer points"
            )
        dense_value = float(dense(Xj, Sj))
        dense_s = median_seconds(lambda: dense(Xj, Sj).block_until_ready(), repeats)
        ours = jax.jit(lambda X, S: kg.stein.ksd(KERNEL, X, S, statistic="v"))
        ours_bytes = ours.lower(Xj, Sj).compile().memory_analysis().temp_size_in_bytes
    ours_value = kg.stein.ksd(KERNEL, X, S, statistic="v")
    ours_s = median_seconds(lambda: kg.stein.ksd(KERNEL, X, S, statistic="v"), repeats)
    return {
        "n": n,
        "d": d,
        "dense_s": dense_s,
        "kernelgrad_s": ours_s,
        "dense_over_kernelgrad": dense_s / ours_s,
        "dense_temp_bytes": dense_bytes,
        "kernelgrad_temp_bytes": ours_bytes,
        "relative_difference": abs(ours_value - dense_value) / abs(dense_value),
    }


_LARGE = """
import sys, time, json
import numpy as np, kernelgrad as kg

def status(field):
    # From /proc/self/status, in bytes. VmHWM is this process's own peak: getrusage's
    # ru_maxrss would carry over the parent's peak (the dense baseline's 9 GiB) across exec.
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))

n, d = int(sys.argv[1]), int(sys.argv[2])
X = np.random.default_rng(1).normal(size=(n, d))
S = -X
kg.stein.ksd(kg.InverseMultiquadric(), X[:2048], S[:2048])  # compile the tiles' program
before = status("VmRSS:")  # resident now, with the inputs: the baseline
start = time.perf_counter()
value = kg.stein.ksd(kg.InverseMultiquadric(), X, S)
seconds = time.perf_counter() - start
peak = status("VmHWM:")
print(json.dumps({"n": n, "d": d, "seconds": seconds, "ksd": value, "peak_rss_bytes": peak,
                  "peak_rss_above_inputs_bytes": max(peak - before, 0)}))
"""


def large_n(n: int, d: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _LARGE, str(n), str(d)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bootstrap(n: int, d: int, draws: int) -> dict:
    X = np.random.default_rng(2).normal(size=(n, d))
    kg.stein.ksd_test(KERNEL, X[:64], -X[:64], n_boot=8)  # compile once
    start = time.perf_counter()
    result = kg.stein.ksd_test(KERNEL, X, -X, n_boot=draws)
    return {
        "n": n,
        "d": d,
        "draws": draws,
        "seconds": time.perf_counter() - start,
        "p_value": result.p_value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="toy sizes, for a quick check")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.small:
        sizes = {"dense": (200, 4, 3), "large": (5000, 3), "boot": (300, 2, 50)}
    else:
        sizes = {"dense": (2000, 10, 5), "large": (100_000, 3), "boot": (5000, 2, 1000)}
    results = {
        "against_dense": against_dense(*sizes["dense"]),
        "large_n": large_n(*sizes["large"]),
        "bootstrap": bootstrap(*sizes["boot"]),
    }
    dense = results["against_dense"]
    print(
        f"ksd n={dense['n']} d={dense['d']}: kernelgrad {dense['kernelgrad_s'] * 1e3:.1f} ms, "
        f"dense vmap(vmap(cross-Hessian)) {dense['dense_s'] * 1e3:.1f} ms "
        f"({dense['dense_over_kernelgrad']:.1f}x); temporaries "
        f"{dense['kernelgrad_temp_bytes'] / 2**20:.1f} MiB against "
        f"{dense['dense_temp_bytes'] / 2**20:.1f} MiB; relative difference "
        f"{dense['relative_difference']:.1e}"
    )
    large = results["large_n"]
    print(
        f"ksd n={large['n']} d={large['d']}: {large['seconds']:.1f} s, peak RSS "
        f"{large['peak_rss_bytes'] / 2**20:.0f} MiB, of which "
        f"{large['peak_rss_above_inputs_bytes'] / 2**20:.0f} MiB above the process with its "
        "inputs and compiled program"
    )
    boot = results["bootstrap"]
    print(
        f"ksd_test n={boot['n']} d={boot['d']}, {boot['draws']} draws: {boot['seconds']:.1f} s "
        f"(p = {boot['p_value']:.3f})"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
