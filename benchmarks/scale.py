"""Issue 4's CPU target: a matrix-free grad_sum at n = m = 200,000, and the dense crossover.

Run: ``python benchmarks/scale.py [--n 200000] [--dense-n 4000] [--json out.json]``
     ``python benchmarks/scale.py --crossover`` (the measurement behind TILED_MIN_PAIRS)
     ``python benchmarks/scale.py --blocks`` (the measurement behind the CPU tile shape)
     ``python benchmarks/scale.py --accuracy`` (float32 error against the data's spread)

Everything is float64, d = 3, the RBF kernel, on NumPy input (so x64 is local to each call).

* **large**: ``kg.grad_sum(RBF(), X, Y, w)`` at n = m = ``--n``, in a fresh subprocess. It
  reports the call's wall time, the part of it spent compiling (from ``jax.monitoring``'s
  compile events; 0 when the persistent cache already holds the program), pairs/s over the
  time left, the peak RSS above what the process held once its inputs existed
  (``ru_maxrss``), and the relative error on 100 sampled rows against NumPy float64.
* **dense**: kernelgrad's dense fused program (one jitted closed form, the path used below
  the threshold) at n = m = ``--dense-n``, median of repeated calls after a warm-up, in a
  second subprocess. The report's ratio is large pairs/s over dense pairs/s.
* **crossover**: dense program and tiled program side by side for growing n = m (median of
  repeats, after a warm-up), in float64 and float32.
* **blocks**: the tiled program at n = 2048, m = 131072 for several (rows, cols) tile shapes.
* **accuracy**: float32 ``grad_sum`` over m = 10^6 columns (n = 32) against NumPy float64,
  as the data's extent grows relative to the lengthscale (see docs/scale.md, Accuracy); and
  the library's matmul-form tiles against difference-form tiles (no cancellation), speed
  and error, at data spread over 200 lengthscales.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

_LARGE = textwrap.dedent(
    """
    import json, resource, sys, time
    import jax, numpy as np
    import kernelgrad as kg
    n, m = int(sys.argv[1]), int(sys.argv[2])
    compile_s = []
    def listener(event, seconds, **kwargs):
        if event.startswith("/jax/core/compile/"):
            compile_s.append(seconds)
    jax.monitoring.register_event_duration_secs_listener(listener)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.5, 1.5, (n, 3))
    Y = rng.uniform(-1.5, 1.5, (m, 3))
    w = rng.uniform(0.5, 1.5, m)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    G = kg.grad_sum(kg.RBF(), X, Y, w)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Reference on sampled rows: -sum_j w_j (x_i - y_j) exp(-|x_i - y_j|^2 / 2), NumPy float64.
    rows = rng.choice(n, size=100, replace=False)
    err = 0.0
    for i in rows:
        diff = X[i] - Y
        ref = -(w * np.exp(-0.5 * np.sum(diff * diff, axis=1))) @ diff
        err = max(err, float(np.max(np.abs(G[i] - ref)) / np.max(np.abs(ref))))
    print(json.dumps({
        "n": n, "m": m, "seconds": seconds, "compile_seconds": sum(compile_s),
        "input_bytes": X.nbytes + Y.nbytes + w.nbytes,
        "rss_before_call_bytes": before, "peak_rss_above_inputs_bytes": peak - before,
        "dense_would_need_bytes": n * m * 8, "max_rel_err_100_rows": err,
    }))
    """
)

_DENSE = textwrap.dedent(
    """
    import json, statistics, sys, time
    import jax, jax.numpy as jnp, numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import engine, reductions, sharding
    n, repeats, dtype = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    tiled_too = len(sys.argv) > 4
    rng = np.random.default_rng(0)
    k = kg.RBF()
    with jax.enable_x64(dtype == "float64"):
        X = jax.device_put(rng.uniform(-1.5, 1.5, (n, 3)).astype(dtype))
        w = jax.device_put(np.ones(n, dtype))
        programs = {
            "dense": lambda: engine._compiled(k, X, X, w, op="grad_sum", method="closed"),
        }
        if tiled_too:
            programs["tiled"] = lambda: sharding.one_device(
                k, X, X, w, op="grad_sum", method="closed"
            )
        out = {"n": n, "dtype": dtype}
        times = {name: [] for name in programs}
        for fn in programs.values():
            fn().block_until_ready()  # compile and warm up
        for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
            for name, fn in programs.items():
                t0 = time.perf_counter()
                fn().block_until_ready()
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            out[name + "_seconds"] = statistics.median(ts)
            out[name + "_pairs_per_s"] = n * n / statistics.median(ts)
    print(json.dumps(out))
    """
)


_BLOCKS = textwrap.dedent(
    """
    import json, statistics, sys, time
    import jax, numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import reductions, sharding
    n, m, repeats, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    shapes = json.loads(sys.argv[5])
    rng = np.random.default_rng(0)
    k = kg.RBF()
    with jax.enable_x64(dtype == "float64"):
        X = jax.device_put(rng.uniform(-1.5, 1.5, (n, 3)).astype(dtype))
        Y = jax.device_put(rng.uniform(-1.5, 1.5, (m, 3)).astype(dtype))
        w = jax.device_put(np.ones(m, dtype))
        calls = {
            f"{r}x{c}": (lambda r=r, c=c: sharding.one_device(
                k, X, Y, w, op="grad_sum", method="closed", row_block=r, col_block=c
            ))
            for r, c in shapes
        }
        for fn in calls.values():
            fn().block_until_ready()
        times = {name: [] for name in calls}
        for _ in range(repeats):  # interleaved, as in the crossover
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn().block_until_ready()
                times[name].append(time.perf_counter() - t0)
    print(json.dumps({name: n * m / statistics.median(ts) for name, ts in times.items()}))
    """
)

_ACCURACY = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import kernelgrad as kg
    n, m = 32, int(sys.argv[1])
    out = []
    for spread, lengthscale in json.loads(sys.argv[2]):
        rng = np.random.default_rng(0)
        # float32 inputs; the reference computes on exactly these values, in float64, so the
        # error is the computation's, not the rounding of the inputs.
        X, Y = (rng.uniform(-spread, spread, s).astype(np.float32) for s in ((n, 3), (m, 3)))
        w = rng.uniform(0.5, 1.5, m).astype(np.float32)
        G = kg.grad_sum(
            kg.RBF(lengthscale=lengthscale),
            *jax.device_put((X, Y, w)),
        )
        G = np.asarray(G, np.float64)
        X, Y, w = (a.astype(np.float64) for a in (X, Y, w))
        ref = np.empty_like(X)
        for i, x in enumerate(X):  # NumPy float64, the difference form
            diff = x - Y
            k = np.exp(-np.sum(diff * diff, axis=1) / (2 * lengthscale**2))
            ref[i] = -(w * k) @ diff / lengthscale**2
        err = float(np.max(np.abs(G - ref)) / np.max(np.abs(ref)))
        out.append({"spread": spread, "lengthscale": lengthscale, "rel_err": err})
    print(json.dumps(out))
    """
)

_DIFFERENCE_FORM = textwrap.dedent(
    """
    import json, statistics, sys, time
    import jax, jax.numpy as jnp, numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import reductions

    def difference_tile(X, Y, w):  # RBF, unit lengthscale: -sum_j w_j k_ij (x_i - y_j)
        diffs = [X[:, a, None] - Y[None, :, a] for a in range(X.shape[1])]
        s = diffs[0] * diffs[0] + diffs[1] * diffs[1] + diffs[2] * diffs[2]
        c = -jnp.exp(-0.5 * s) * w
        return jnp.stack([jnp.sum(c * t, axis=1) for t in diffs], axis=1)

    n, m, spread, repeats = 2048, 131072, 100.0, int(sys.argv[1])
    out = {}
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(0)
        # Inputs rounded to float32 for both dtypes, so the reference sees the same values.
        X = rng.uniform(-spread, spread, (n, 3)).astype(np.float32).astype(np.float64)
        Y = rng.uniform(-spread, spread, (m, 3)).astype(np.float32).astype(np.float64)
        with jax.enable_x64(dtype == "float64"):
            args = jax.device_put((X.astype(dtype), Y.astype(dtype), np.ones(m, dtype)))
            forms = {
                "matmul": jax.jit(lambda X, Y, w: reductions.grad_sum(kg.RBF(), X, Y, w)),
                "difference": jax.jit(
                    lambda X, Y, w: reductions.tiled_row_reduce(difference_tile, X, Y, w)
                ),
            }
            results = {name: np.asarray(f(*args), np.float64) for name, f in forms.items()}
            times = {name: [] for name in forms}
            for _ in range(repeats):
                for name, f in forms.items():
                    t0 = time.perf_counter()
                    f(*args).block_until_ready()
                    times[name].append(time.perf_counter() - t0)
        ref = np.empty((64, 3))
        for i in range(64):
            diff = X[i] - Y
            ref[i] = -np.exp(-0.5 * np.sum(diff * diff, axis=1)) @ diff
        scale = np.max(np.abs(ref))
        out[dtype] = {
            name: {
                "pairs_per_s": n * m / statistics.median(times[name]),
                "rel_err_64_rows": float(np.max(np.abs(results[name][:64] - ref)) / scale),
            }
            for name in forms
        }
    print(json.dumps(out))
    """
)

#: (half-width of the uniform data, lengthscale) pairs for ``--accuracy``.
ACCURACY_CASES = [(1.5, 0.8), (10.0, 0.5), (3.0, 0.1), (100.0, 1.0)]


def run_accuracy(m: int) -> list[dict]:
    """float32 tiled grad_sum over m columns against NumPy float64, for several spreads."""
    rows = _child(_ACCURACY, m, json.dumps(ACCURACY_CASES))
    for row in rows:
        print(
            f"float32, m = {m}, data in [-{row['spread']}, {row['spread']}]^3, lengthscale "
            f"{row['lengthscale']}: relative error {row['rel_err']:.1e}"
        )
    return rows


def run_difference_form(repeats: int) -> dict:
    """The library's matmul-form tiles against difference-form tiles: speed and error at
    data spread over 200 lengthscales (n = 2048, m = 131072, RBF)."""
    forms = _child(_DIFFERENCE_FORM, repeats)
    for dtype, by_form in forms.items():
        for name, row in by_form.items():
            print(
                f"{dtype} {name:10s} form, data in [-100, 100]^3: {row['pairs_per_s']:.2e} "
                f"pairs/s, relative error {row['rel_err_64_rows']:.1e}"
            )
    return forms


BLOCK_SHAPES = [(512, 2048), (256, 4096), (64, 16384), (32, 65536), (16, 65536), (8, 131072)]


def run_blocks(n: int, m: int, repeats: int) -> dict:
    """pairs/s of the tiled program for each (rows, cols) block shape, float64 and float32."""
    out = {}
    for dtype in ("float64", "float32"):
        rates = _child(_BLOCKS, n, m, repeats, dtype, json.dumps(BLOCK_SHAPES))
        for name, rate in rates.items():
            print(f"{dtype} n = {n}, m = {m}, blocks {name:>9s}: {rate:.2e} pairs/s", flush=True)
        out[dtype] = rates
    return out


def _child(script: str, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_scale(n: int, dense_n: int, repeats: int) -> dict:
    load_before = _load()
    large = _child(_LARGE, n, n)
    dense = _child(_DENSE, dense_n, repeats, "float64")
    large_rate = n * n / (large["seconds"] - large["compile_seconds"])
    return {
        "load_average_before": load_before,
        "load_average_after": _load(),
        "large": large,
        "large_pairs_per_s_excluding_compile": large_rate,
        "dense": dense,
        "ratio_large_over_dense": large_rate / dense["dense_pairs_per_s"],
    }


def run_crossover(sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    for dtype in ("float64", "float32"):
        for n in sizes:
            row = _child(_DENSE, n, repeats, dtype, "tiled")
            row["tiled_over_dense"] = row["tiled_pairs_per_s"] / row["dense_pairs_per_s"]
            print(
                f"{dtype} n = m = {n:6d}: dense {row['dense_pairs_per_s']:.2e}, tiled "
                f"{row['tiled_pairs_per_s']:.2e} pairs/s, tiled/dense "
                f"{row['tiled_over_dense']:.2f}",
                flush=True,
            )
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dense-n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--crossover", action="store_true")
    parser.add_argument("--blocks", action="store_true", help="sweep the tile shape")
    parser.add_argument("--accuracy", action="store_true", help="float32 error vs data spread")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[512, 1024, 1536, 2048, 3072, 4096, 6144]
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    started = time.time()
    if args.accuracy:
        result = {
            "accuracy": run_accuracy(1_000_000),
            "difference_form": run_difference_form(args.repeats),
        }
    elif args.blocks:
        result = {"blocks": run_blocks(2048, 131072, args.repeats), "load": _load()}
    elif args.crossover:
        result = {"crossover": run_crossover(args.sizes, args.repeats), "load": _load()}
    else:
        result = run_scale(args.n, args.dense_n, args.repeats)
        large = result["large"]
        print(f"load average before/after: {result['load_average_before']} / {_load()}")
        print(
            f"grad_sum n = m = {args.n}, d = 3, float64: {large['seconds']:.1f} s "
            f"(of which compile {large['compile_seconds']:.2f} s), "
            f"{result['large_pairs_per_s_excluding_compile']:.3e} pairs/s"
        )
        print(
            f"peak RSS above inputs: {large['peak_rss_above_inputs_bytes'] / 2**20:.0f} MiB "
            f"(inputs {large['input_bytes'] / 2**20:.1f} MiB; a dense n x m float64 buffer "
            f"would be {large['dense_would_need_bytes'] / 1e9:.0f} GB)"
        )
        print(f"max relative error on 100 sampled rows: {large['max_rel_err_100_rows']:.2e}")
        dense = result["dense"]
        print(
            f"dense fused at n = m = {args.dense_n}: {dense['dense_seconds'] * 1e3:.1f} ms, "
            f"{dense['dense_pairs_per_s']:.3e} pairs/s"
        )
        print(f"ratio large / dense pairs/s: {result['ratio_large_over_dense']:.2f}")
    result["wall_seconds"] = time.time() - started
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
