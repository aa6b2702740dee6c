"""Runs the bench: the forum replica and the sweep, measured the same way for every peer.

For each case and peer:

* **skip first** if the peer's memory estimate exceeds the memory budget (``vmap(jacrev)``
  holds n^3 numbers: 8 GB at n = 1000 in float64) and, for a compiled peer, so does XLA's own
  plan for the compiled program (XLA often fuses the estimate's n x n buffers away); or if the
  time predicted from the previous n exceeds the time budget. The reason is recorded and
  printed; nothing that would exhaust the machine is ever started.
* **new-n call**: the first call at this n in this (warm) process, which for JAX includes
  tracing and compiling a program for the new shape.
* **accuracy**: max |out - ref| / max |ref| against the float64 reference, compared with
  :func:`error_bound`.
* **warm-up**: untimed calls, the same number (or time) for every peer
  (``BenchConfig.warmup_calls``, ``warmup_s``): steady state is what a loop at fixed n sees.
* **steady state**: the median of repeated calls, each returning a finished result, taken in
  rounds that alternate between the case's peers (see :data:`ROUNDS`).
* **peak memory**: as the peer can measure it (see :mod:`kernelgrad.bench.peers`), after the
  timed calls, so that measuring it (XLA compiles to report its buffers) never warms a cache
  that the timed calls would otherwise have paid for.

First calls in the replica come from fresh processes (:mod:`kernelgrad.bench.firstcall`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import jax
import numpy as np

from ..execution import compile_cache
from . import peers as P

GIB = 1 << 30

REPLICA_NOTE = (
    "The replica runs the forum's kernel as posted, bug kept: X + X2' where the squares "
    "X.^2 + X2'.^2 are meant, so it is not the RBF kernel (the sweep uses the correct RBF)."
)


def default_mem_budget() -> int:
    """2 GiB, or a quarter of the memory free now if that is less: a skipped peer is a result,
    a machine that swaps or kills processes is not."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 2 * GIB
    return min(2 * GIB, free // 4)


@dataclass(frozen=True)
class BenchConfig:
    """What to run and how long to spend on it."""

    ns: tuple[int, ...] = (100, 300, 1000, 3000)
    ds: tuple[int, ...] = (1, 3)
    ops: tuple[str, ...] = P.OPS
    peers: tuple[str, ...] = P.DEFAULT_PEERS
    dtype: str = "float64"
    device: str = "cpu"
    replica: bool = True
    replica_n: int = 100
    #: Replica peers whose first calls run in fresh processes; None means all of them.
    fresh_peers: tuple[str, ...] | None = None
    #: Also time kernelgrad's first calls in a second fresh process, its disk cache now warm.
    fresh_cached: bool = True
    mem_budget_bytes: int = field(default_factory=default_mem_budget)
    #: Skip a case whose timed calls are predicted to take longer than this, in seconds.
    time_budget_s: float = 5.0
    #: Keep repeating a call until this much time is spent (or max_repeats).
    target_s: float = 0.1
    #: Before the timed calls every peer makes this many untimed calls, or as many as fit
    #: in warmup_s: steady state is the state a loop at fixed n reaches. (kernelgrad runs
    #: exact-size programs for sizes called the policy's hot_calls times; JAX peers reach their
    #: steady state after the first call, NumPy at once.) At 0.25 s, kernelgrad's 5 ms grad
    #: map at n = 3000, d = 1 stopped short of its 64th call, so its size turned hot (one
    #: compile and a timed choice of programs) inside its timed calls: 9 calls with a median
    #: of 7.6 ms, where its steady state takes 3.7 ms. 0.5 s covers 64 calls of 7 ms.
    warmup_calls: int = 64
    warmup_s: float = 0.5
    min_repeats: int = 3
    max_repeats: int = 300
    fresh_timeout_s: float = 120.0


def quick_config(**changes) -> BenchConfig:
    """The ``--quick`` run (under 30 s): the replica, n = 100 and 300, short timing loops.

    Only kernelgrad's first calls run in a fresh process: each one costs seconds of imports.
    """
    base = BenchConfig(
        ns=(100, 300),
        fresh_peers=("kernelgrad", "kernelgrad-jax"),
        fresh_cached=False,
        time_budget_s=1.0,
        target_s=0.01,
        warmup_s=0.02,
        max_repeats=20,
    )
    return dataclasses.replace(base, **changes)


def error_bound(dtype: str, n: int) -> float:
    """The largest max |out - ref| / max |ref| that counts as correct: 16 n eps.

    An output is one kernel value, or a sum over at most n points of terms that each carry a
    few roundings. Summing n terms in floating point is off by at most (n - 1) eps sum |terms|
    (Higham, *Accuracy and Stability of Numerical Algorithms*, section 4.2), and for the grad
    map on these points sum |terms| stays within a small factor of max |ref| (the outermost
    point's terms all share one sign). 16 n eps covers both, with room for the expanded
    ``|x|^2 + |y|^2 - 2 x.y`` form (about 12 eps in a kernel value for |x| <= sqrt(3)).
    """
    return 16 * n * float(np.finfo(dtype).eps)


@dataclass
class Result:
    """One peer on one case. Times in seconds, memory in bytes; None where not measured."""

    section: str  # "replica" or "sweep"
    peer: str
    op: str
    n: int
    d: int
    status: str = "ok"  # "ok", "skipped" or "failed"
    reason: str | None = None
    steady_s: float | None = None
    repeats: int = 0
    new_n_call_s: float | None = None
    first_call_s: float | None = None  # fresh process, no persistent compilation cache
    fresh_second_call_s: float | None = None  # the call after it, in that process
    first_call_cached_s: float | None = None  # fresh process, kernelgrad's disk cache warm
    max_rel_err: float | None = None
    within_bound: bool | None = None
    peak_bytes: int | None = None
    peak_method: str | None = None
    path: str | None = None  # how kernelgrad ran it: eager NumPy, one XLA program, tiled
    ratio_to_kernelgrad: float | None = None


@dataclass
class BenchResults:
    config: BenchConfig
    results: list[Result] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    fresh_errors: dict = field(default_factory=dict)
    fresh_processes: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def section(self, name: str) -> list[Result]:
        return [r for r in self.results if r.section == name]

    def find(self, section: str, peer: str, op: str, n: int, d: int) -> Result | None:
        for r in self.results:
            if (r.section, r.peer, r.op, r.n, r.d) == (section, peer, op, n, d):
                return r
        return None

    def to_json(self, command: list[str] | None = None) -> dict:
        bounds = sorted({r.n for r in self.results})
        return {
            "schema": "kernelgrad-bench/1",
            "command": command,
            "dtype": self.config.dtype,
            "device": self.config.device,
            "config": dataclasses.asdict(self.config),
            "machine": self.machine,
            "versions": self.versions,
            "peers": {p.name: p.label for p in P.all_peers() if p.name in self.config.peers},
            "replica_note": REPLICA_NOTE,
            "error_bound": {str(n): error_bound(self.config.dtype, n) for n in bounds},
            "fresh_errors": self.fresh_errors,
            "fresh_processes": self.fresh_processes,
            "elapsed_s": self.elapsed_s,
            "replica": [dataclasses.asdict(r) for r in self.section("replica")],
            "sweep": [dataclasses.asdict(r) for r in self.section("sweep")],
        }


def gpu_available() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        # Folder of kernelgrad's persistent compilation cache in this process (the bench's
        # own compiles bypass it; see run), or None.
        "jax_compilation_cache_dir": compile_cache.active_folder(),
    }
    if gpu_available():
        info["gpu"] = str(jax.devices("gpu")[0].device_kind)
    return info


def versions() -> dict:
    out = {}
    for name in ("jax", "jaxlib", "numpy", "torch", "kernelgrad", "rich", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def replica_peers(config: BenchConfig) -> list[str]:
    """The replica's columns among the chosen peers: those that run the forum's kernel."""
    return [p for p in config.peers if P.get_peer(p).replica]


def plan(config: BenchConfig) -> list[tuple[str, P.Case]]:
    """Every (peer, case) the run measures, in order; fresh-process steps have op "first-call"."""
    steps = []
    if config.replica:
        n, dtype, device = config.replica_n, config.dtype, config.device
        for peer in replica_peers(config):
            steps.append((peer, P.Case("first-call", n, 1, dtype, "forum", device)))
        for op in P.OPS:
            for peer in replica_peers(config):
                steps.append((peer, P.Case(op, n, 1, dtype, "forum", device)))
    for d in config.ds:
        for op in config.ops:
            for n in config.ns:
                for peer in config.peers:
                    if op in P.get_peer(peer).ops:
                        steps.append((peer, P.Case(op, n, d, config.dtype, "rbf", config.device)))
    return steps


def run(config: BenchConfig, on_step: Callable[[str], None] | None = None) -> BenchResults:
    """Run everything in :func:`plan`; ``on_step(description)`` is called before each step."""
    start = time.perf_counter()
    out = BenchResults(config, machine=machine_info(), versions=versions())
    # Compiles in this process are real compiles, for every peer and every run: neither
    # JAX's persistent cache nor kernelgrad's own (on when imported) serves them, as the
    # forum's users had none. Fresh processes measure what the cache buys kernelgrad.
    with _no_persistent_cache(), compile_cache.paused():
        _run_steps(config, out, on_step)
    _ratios(out)
    out.elapsed_s = time.perf_counter() - start
    return out


@contextlib.contextmanager
def _no_persistent_cache():
    """JAX's persistent cache off while the bench runs, through its public switch (read on
    every compile), and back as it was afterwards."""
    name = "jax_enable_compilation_cache"
    before = jax.config.values.get(name)
    if before is None:  # a JAX without the switch: whatever it does is recorded in machine
        yield
        return
    jax.config.update(name, False)
    try:
        yield
    finally:
        jax.config.update(name, before)


#: A case's peers are timed in this many interleaved rounds (A B C, C A B, ...), so that a
#: burst of load from other processes on a shared machine lands on all of them, not on one.
#: The order is shuffled every round (seeded): a call right after a peer that freed large
#: buffers, or left XLA's workers asleep, runs slower, and a fixed order would hand that
#: cost to the same peer every time.
ROUNDS = 5


@dataclass
class _Timed:
    """A peer whose first call at this case succeeded, waiting for its steady-state calls."""

    result: Result
    peer: P.Peer
    case: P.Case
    X: np.ndarray
    call: Callable[[], Any]
    estimate: int
    times: list[float] = field(default_factory=list)


def _run_steps(config: BenchConfig, out: BenchResults, on_step) -> None:
    fresh: dict[str, dict] = {}
    # plan() lists every peer of a case one after another, so grouping by case is one pass.
    for case, group in itertools.groupby(plan(config), key=lambda step: step[1]):
        section = "replica" if case.kernel == "forum" else "sweep"
        if case.op == "first-call":
            for peer_name, _ in group:
                if on_step:
                    on_step(f"{section}: {peer_name} first calls, fresh process")
                fresh[peer_name] = calls = fresh_first_calls(P.get_peer(peer_name), case.n, config)
                if "error" in calls:
                    out.fresh_errors[peer_name] = calls["error"]
                else:
                    info = ("max_rss_bytes", "compile_cache")
                    out.fresh_processes[peer_name] = {k: calls.get(k) for k in info}
            continue
        X = P.points(case)
        reference = _lazy_reference(case, X)
        timed = []
        for peer_name, _ in group:
            if on_step:
                on_step(f"{section}: {peer_name} {case.op} n={case.n} d={case.d}")
            result = Result(section, peer_name, case.op, case.n, case.d)
            if section == "replica":
                calls = fresh.get(peer_name, {}).get(case.op, {})
                result.first_call_s = calls.get("first")
                result.fresh_second_call_s = calls.get("second")
                result.first_call_cached_s = calls.get("first_cached")
            t = _first_call(result, P.get_peer(peer_name), case, X, reference, config, out)
            out.results.append(result)
            if t is not None:
                timed.append(t)
        _steady_rounds(timed, config)
        for t in timed:
            _memory(t)


def _lazy_reference(case: P.Case, X: np.ndarray) -> Callable[[], np.ndarray]:
    """The float64 reference, built when a peer first needs it: never for an all-skipped case."""
    cache: list[np.ndarray] = []

    def reference() -> np.ndarray:
        if not cache:
            cache.append(P.reference(case, X))
        return cache[0]

    return reference


def _first_call(r: Result, peer, case, X, reference, config, done: BenchResults) -> _Timed | None:
    """Skip, or make the first call at this n and check it; None unless steady calls follow."""

    def skip(reason):
        r.status, r.reason = "skipped", reason

    why = peer.unavailable(case.device)
    if why:
        return skip(why)
    estimate = peer.estimate_bytes(case)
    compile_s = 0.0  # spent compiling ahead of the first call, to read XLA's memory plan
    if estimate > config.mem_budget_bytes:
        # A generous estimate is over; a compiled peer can say exactly what it will use.
        try:
            with peer.context(case):
                planned = peer.planned_bytes(case, X)
        except Exception:  # no plan: the estimate decides
            planned = None
        cubic = " (n^3 intermediates)" if peer.cubic else ""
        budget = f"over the {_size(config.mem_budget_bytes)} memory budget"
        if planned is None:
            return skip(f"needs ~{_size(estimate)}{cubic}, {budget}")
        if planned[0] > config.mem_budget_bytes:
            return skip(f"XLA plans {_size(planned[0])}{cubic}, {budget}")
        compile_s = planned[1]
    predicted = _predict_seconds(r, peer, done)
    calls = config.min_repeats + 1
    if predicted is not None and predicted * calls > config.time_budget_s:
        return skip(
            f"predicted {predicted:.2g} s a call from n={_previous_n(r, done)}: its {calls} "
            f"timed calls would exceed the {config.time_budget_s:g} s time budget"
        )
    r.path = peer.path(case)
    try:
        with peer.context(case):
            call = peer.prepare(case, X)
            t0 = time.perf_counter()
            value = call()
            r.new_n_call_s = compile_s + time.perf_counter() - t0
            r.max_rel_err = max_rel_err(peer.to_numpy(value), reference())
            r.within_bound = r.max_rel_err <= error_bound(case.dtype, case.n)
    except Exception as err:  # a peer failing is a result to report, not a reason to stop
        _failed(r, err)
        return None
    return _Timed(r, peer, case, X, call, estimate)


def _failed(r: Result, err: Exception) -> None:
    r.status, r.reason = "failed", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    r.steady_s = None


def _steady_rounds(timed: list[_Timed], config: BenchConfig) -> None:
    """Median of repeated calls, gathered in ROUNDS rounds over all of a case's peers.

    Each peer makes at least min_repeats calls in all and keeps calling until target_s is
    spent, a share of both per round, within max_repeats and its time budget.
    """
    for t in timed:
        try:
            with t.peer.context(t.case):
                _warm_up(t, config)
        except Exception as err:  # as in _first_call
            _failed(t.result, err)
    order = list(timed)
    shuffle = random.Random(len(timed)).shuffle
    for k in range(1, ROUNDS + 1):
        shuffle(order)
        for t in order:
            if t.result.status != "ok":
                continue
            try:
                with t.peer.context(t.case):
                    _time_calls(t, config, share=k / ROUNDS)
            except Exception as err:  # as in _first_call
                _failed(t.result, err)
    for t in timed:
        if t.result.status == "ok":
            t.result.steady_s, t.result.repeats = statistics.median(t.times), len(t.times)


def _warm_up(t: _Timed, config: BenchConfig) -> None:
    """Untimed calls, the same count (or time) for every peer: see BenchConfig.warmup_calls.

    The time limit is checked after each call, so a slow peer makes one call over it at
    most. (The new-n call is no guide to a call's cost: for a compiled peer it includes
    the compile, and predicting from it gave every JAX peer four or five warm-up calls.)
    """
    if t.result.new_n_call_s > config.warmup_s:
        return  # its first call alone took longer than the whole warm-up, as before
    start = time.perf_counter()
    for _ in range(config.warmup_calls):
        t.call()
        if time.perf_counter() - start > config.warmup_s:
            return


def _time_calls(t: _Timed, config: BenchConfig, share: float) -> None:
    """Timed calls, back to back: the bookkeeping between two calls is a few additions.

    (A median and a sum over all times between calls put 10-20 us of Python between a
    peer's calls, and on 2 cores XLA's idle workers then sleep and wake up on every call.)
    """
    times = t.times
    budget_left = config.time_budget_s - t.result.new_n_call_s
    want_calls = math.ceil(config.min_repeats * share)
    max_calls = math.ceil(config.max_repeats * share)
    spent = sum(times)
    while len(times) < max_calls:
        if len(times) >= want_calls and spent >= config.target_s * share:
            return
        # The mean so far predicts the next call (the median did, at a sort per call).
        if times and spent + spent / len(times) > budget_left:
            return
        t0 = time.perf_counter()
        t.call()
        elapsed = time.perf_counter() - t0
        times.append(elapsed)
        spent += elapsed


def _memory(t: _Timed) -> None:
    """Peak memory, measured after the timed calls (measuring may compile: never warm them)."""
    r = t.result
    if r.status != "ok":
        return
    try:
        with t.peer.context(t.case):
            r.peak_bytes, r.peak_method = t.peer.measured_bytes(t.case, t.X, t.call)
    except Exception as err:  # memory is reported where it can be measured, and only there
        r.peak_bytes, r.peak_method = None, f"not measured ({type(err).__name__})"
    if r.peak_bytes is None:
        r.peak_bytes, r.peak_method = t.estimate, "estimate"


def _size(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 2**20:.1f} MiB"


def _same_series(r: Result, done: BenchResults) -> list[Result]:
    return [
        x
        for x in done.results
        if (x.section, x.peer, x.op, x.d) == (r.section, r.peer, r.op, r.d)
        and x.n < r.n
        and x.steady_s is not None
    ]


def _previous_n(r: Result, done: BenchResults) -> int | None:
    prev = _same_series(r, done)
    return max(x.n for x in prev) if prev else None


def _predict_seconds(r: Result, peer, done: BenchResults) -> float | None:
    """Time per call at r.n, extrapolated from the same peer at the largest smaller n."""
    prev = _same_series(r, done)
    if not prev:
        return None
    last = max(prev, key=lambda x: x.n)
    power = 3 if peer.cubic and r.op == "grad_map" else 2
    return last.steady_s * (r.n / last.n) ** power


def max_rel_err(out, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref|, with out reshaped to the reference's shape."""
    out = np.asarray(out, dtype=np.float64)
    if out.size != ref.size:
        raise ValueError(f"output has shape {out.shape}, expected {ref.shape}")
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(out.reshape(ref.shape) - ref))) / scale


def _ratios(out: BenchResults) -> None:
    for r in out.results:
        base = out.find(r.section, "kernelgrad", r.op, r.n, r.d)
        if r.steady_s is not None and base is not None and base.steady_s:
            r.ratio_to_kernelgrad = r.steady_s / base.steady_s


def fresh_first_calls(peer, n: int, config: BenchConfig) -> dict:
    """The forum's script for one peer in a new Python process: {op: {"first", "second"}}.

    The forum's code and torch run as their users run them: no persistent compilation cache
    (kernelgrad's default cache is turned off for them, and a JAX cache folder from the
    environment is dropped). kernelgrad runs with its defaults, against an empty private
    cache folder, so its first call is a cold one; with ``fresh_cached`` a second process
    then reuses that folder, and its first calls are added as ``"first_cached"``.

    Returns ``{"error": message}`` when the process fails, times out or is not run.
    """
    why = peer.unavailable(config.device)
    if why:
        return {"error": why}
    if config.fresh_peers is not None and peer.name not in config.fresh_peers:
        return {"error": "not run with --quick (each fresh process costs seconds of imports)"}
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if not peer.name.startswith("kernelgrad"):
        return _fresh_process(peer, n, config, {**env, "KERNELGRAD_NO_COMPILE_CACHE": "1"})
    with tempfile.TemporaryDirectory(prefix="kernelgrad-bench-") as cache_home:
        env = {**env, "XDG_CACHE_HOME": cache_home}
        env.pop("KERNELGRAD_NO_COMPILE_CACHE", None)
        cold = _fresh_process(peer, n, config, env)
        if config.fresh_cached and "error" not in cold:
            warm = _fresh_process(peer, n, config, env)
            for op in P.OPS:
                if op in cold and op in warm:
                    cold[op]["first_cached"] = warm[op]["first"]
    return cold


def _fresh_process(peer, n: int, config: BenchConfig, env: dict) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "kernelgrad.bench.firstcall",
        peer.name,
        str(n),
        config.dtype,
        config.device,
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=config.fresh_timeout_s,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {config.fresh_timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])
