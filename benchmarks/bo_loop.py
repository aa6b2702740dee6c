"""Issue 4's BO-loop target: compilations and total time as n grows from 100 to 200.

Run: ``python benchmarks/bo_loop.py [--start 100] [--stop 200] [--json out.json]``

A Bayesian-optimisation-like loop adds one point at a time and, at each step, asks for the
GP-mean gradient at every design point, ``G = sum_j alpha_j d/dx k(x_i, x_j)`` (Matern 5/2,
d = 3, float32 JAX arrays, put on the device with ``jax.device_put``). Peers:

* ``kernelgrad``: ``kg.grad_sum(k, X, X, alpha)``; it pads n to size buckets.
* ``jax.jit``: ``jax.jit(lambda X, a: kg.grad_sum(k, X, X, a))``, the same function under a
  plain ``jax.jit``: inside a trace kernelgrad cannot pad, so every n is a new program.
* ``kernelgrad, NumPy float64``: the same call on NumPy input, which at these sizes runs
  eagerly in NumPy (no compile at all).

Each loop runs in its own fresh subprocess with the persistent compilation cache turned off
(``KERNELGRAD_NO_COMPILE_CACHE=1``), so every compile is paid. Compilations are counted with
``jax.monitoring`` (one ``backend_compile_duration`` event per XLA executable); time is the
whole loop's wall time, blocking on every result.

A last pair of subprocesses times the first call in a new process with an empty and then
a warm persistent cache (a temporary folder), which is what the cache is for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

_LOOP = textwrap.dedent(
    """
    import json, sys, time
    import jax, numpy as np
    import kernelgrad as kg
    peer, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    compiles = [0]
    def listener(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1
    jax.monitoring.register_event_duration_secs_listener(listener)
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.0, 1.0, (stop, 3))
    alpha = rng.normal(size=stop)
    k = kg.Matern52(lengthscale=0.7)
    if peer == "numpy":
        call = lambda X, a: kg.grad_sum(k, X, X, a)
        prepare = lambda X, a: (X, a)
    else:
        points, alpha = points.astype(np.float32), alpha.astype(np.float32)
        fn = lambda X, a: kg.grad_sum(k, X, X, a)
        call = jax.jit(fn) if peer == "jit" else fn
        prepare = lambda X, a: jax.device_put((X, a))
    t0 = time.perf_counter()
    for n in range(start, stop + 1):
        G = call(*prepare(points[:n], alpha[:n]))
        np.asarray(G)  # block, and fetch as a user would
    print(json.dumps({"seconds": time.perf_counter() - t0, "compiles": compiles[0]}))
    """
)

_FIRST_CALL = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import jax, numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import compile_cache
    imported = time.perf_counter() - t0
    X = jax.device_put(np.random.default_rng(0).uniform(-1, 1, (150, 3)).astype(np.float32))
    t0 = time.perf_counter()
    np.asarray(kg.grad_sum(kg.Matern52(), X, X, X[:, 0]))
    print(json.dumps({"first_call_seconds": time.perf_counter() - t0,
                      "import_seconds": imported, "cache": compile_cache.active_folder()}))
    """
)


def _child(script: str, args=(), env=None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--stop", type=int, default=200)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    no_cache = dict(os.environ, KERNELGRAD_NO_COMPILE_CACHE="1")
    no_cache.pop("JAX_COMPILATION_CACHE_DIR", None)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    result = {"start": args.start, "stop": args.stop, "loops": {}}
    for peer, label in [
        ("kernelgrad", "kernelgrad (JAX float32)"),
        ("jit", "jax.jit of the same call"),
        ("numpy", "kernelgrad (NumPy float64)"),
    ]:
        loop = _child(_LOOP, (peer, args.start, args.stop), env=no_cache)
        result["loops"][peer] = loop
        print(
            f"{label:28s} n = {args.start}..{args.stop}: {loop['compiles']:4d} compilations, "
            f"{loop['seconds']:.2f} s in all"
        )
    kg_loop, jit_loop = result["loops"]["kernelgrad"], result["loops"]["jit"]
    result["speedup_vs_jit"] = jit_loop["seconds"] / kg_loop["seconds"]
    print(f"kernelgrad is {result['speedup_vs_jit']:.1f}x faster over the loop than jax.jit")
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if k != "KERNELGRAD_NO_COMPILE_CACHE"}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["XDG_CACHE_HOME"] = folder
        cold, warm = _child(_FIRST_CALL, env=env), _child(_FIRST_CALL, env=env)
    result["first_call"] = {"cold_cache": cold, "warm_cache": warm}
    print(
        f"first call in a new process: {cold['first_call_seconds'] * 1e3:.0f} ms with an empty "
        f"cache, {warm['first_call_seconds'] * 1e3:.0f} ms with a warm one"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
