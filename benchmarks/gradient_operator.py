"""Time and peak memory of the gradient-kernel operator's matvec against the dense matrix.

Each measurement runs in a fresh subprocess so that its peak resident set size
(``ru_maxrss``) is its own. Every case is float64, an RBF kernel (lengthscale sqrt(d), so
that the entries are not all ~0) on standard normal points, Y = X.

* ``matvec``: ``op.matvec(v)`` for ``op = kg.gradient_gram(k, X)``, of shape
  (n (d + 1), n (d + 1)). The first call (trace and compile) is reported apart; the time is
  the median of ``--repeats`` later calls, each blocked until its result is ready.
* ``dense``: in the same subprocess, ``D = op.to_dense()`` (timed once, after a compile on
  the same shapes) and then ``D @ v`` (median of the repeats), and the relative difference
  between ``D @ v`` and ``op.matvec(v)``.
* ``baseline``: a process that imports kernelgrad and runs a 2-point matvec: the part of
  every peak RSS that is the Python + JAX runtime, not the operator.

Targets (issue 5): n = 1000, d = 100 matvec in at most 1 s with a peak RSS under 1 GB on 2
CPU cores; the ratio to the dense product at n = 200, d = 100 (the largest size whose dense
matrix, 20200^2 float64 = 3.3 GB, fits comfortably).

Run: ``python benchmarks/gradient_operator.py [--json out.json]`` (about a minute, 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, resource, statistics, sys, time
    import numpy as np
    import jax
    import kernelgrad as kg

    kind, n, d, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    op = kg.gradient_gram(kg.RBF(lengthscale=float(np.sqrt(d))), X)
    v = rng.normal(size=op.shape[1])
    out = {"kind": kind, "n": n, "d": d, "shape": list(op.shape)}

    def median_time(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times), min(times)

    start = time.perf_counter()
    lazy = op.matvec(v)  # NumPy out: the result is complete when the call returns
    out["matvec_first_s"] = time.perf_counter() - start
    if kind != "baseline":
        out["matvec_s"], out["matvec_min_s"] = median_time(lambda: op.matvec(v))
    if kind == "dense":
        op.to_dense()  # compile on these shapes, then time a second build
        start = time.perf_counter()
        D = op.to_dense()
        out["to_dense_s"] = time.perf_counter() - start
        out["dense_matvec_s"], out["dense_matvec_min_s"] = median_time(lambda: D @ v)
        dense = D @ v
        out["max_rel_diff"] = float(np.abs(dense - lazy).max() / np.abs(dense).max())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    """
)


def measure(kind: str, n: int, d: int, repeats: int) -> dict:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(n), str(d), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {"kind": kind, "n": n, "d": d, "error": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dense-n", type=int, default=200)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, load average (1 min) at start: {load:.2f}")
    results = [
        measure("baseline", 2, args.d, 1),
        measure("matvec", args.n, args.d, args.repeats),
        measure("dense", args.dense_n, args.d, args.repeats),
    ]
    for r in results:
        if "error" in r:
            print(f"{r['kind']:8s} n={r['n']} d={r['d']}: FAILED\n{r['error']}")
            continue
        line = f"{r['kind']:8s} n={r['n']:5d} d={r['d']:4d} shape={tuple(r['shape'])}"
        if "matvec_s" in r:
            line += (
                f"  matvec {r['matvec_s'] * 1e3:8.1f} ms (min {r['matvec_min_s'] * 1e3:.1f},"
                f" first call {r['matvec_first_s']:.2f} s)"
            )
        if "dense_matvec_s" in r:
            ratio = r["dense_matvec_s"] / r["matvec_s"]
            r["dense_over_lazy"] = ratio
            line += (
                f"\n{'':8s} to_dense {r['to_dense_s']:.2f} s, dense D @ v "
                f"{r['dense_matvec_s'] * 1e3:.1f} ms: dense / lazy = {ratio:.2f}x,"
                f" max rel diff {r['max_rel_diff']:.1e}"
            )
        line += f"  peak RSS {r['peak_rss_mb']:.0f} MB"
        print(line)
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_start": load, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
