"""Compilations are counted, never timed: a growing n compiles a handful of programs, and the
persistent cache (on by default, off by an environment variable) serves a new process.

XLA compilations are counted through ``jax.monitoring``: JAX records one
``/jax/core/compile/backend_compile_duration`` event per executable it builds or loads, so
the count does not depend on whether the persistent cache is warm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import max_relative_error, pairwise_jacobian

import kernelgrad as kg
from kernelgrad.execution import compile_cache, padding

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_counts = {"active": False, "compiles": 0}


def _listener(event: str, duration: float, **kwargs) -> None:
    if _counts["active"] and event == COMPILE_EVENT:
        _counts["compiles"] += 1


# Listeners cannot be removed, so one is registered for the module and switched on and off.
jax.monitoring.register_event_duration_secs_listener(_listener)


@contextmanager
def count_compiles():
    """Yields a dict whose ``"n"`` is the number of XLA compilations inside the block."""
    result = {"n": 0}
    _counts.update(active=True, compiles=0)
    try:
        yield result
    finally:
        result["n"] = _counts["compiles"]
        _counts.update(active=False, compiles=0)


def _rbf_pair(x, y):
    return jnp.exp(-0.5 * jnp.sum((x - y) ** 2))


def test_the_counter_sees_one_compile_per_new_shape_of_a_plain_jit(rng):
    # Control: without buckets, plain jax.jit compiles once per n (so the counter can fail).
    fn = jax.jit(lambda X: jnp.sum(jnp.exp(-jnp.sum(X * X, axis=1))))
    points = rng.uniform(size=(120, 3)).astype(np.float32)
    with count_compiles() as count:
        for n in range(100, 120):
            fn(points[:n]).block_until_ready()
    assert count["n"] == 20


@pytest.mark.parametrize(
    "kernel", [kg.Matern52(lengthscale=0.7), kg.kernel(_rbf_pair)], ids=["closed", "pair_fn"]
)
def test_bo_loop_adding_one_point_at_a_time_compiles_a_handful(kernel, rng):
    # A Bayesian-optimisation-like loop: the design grows from 100 to 200 points, and each
    # step asks for the GP-mean gradient sum_j alpha_j d/dx k(x_i, x_j) at every point.
    # JAX float32 input takes the jitted engine (NumPy input this small runs eagerly, with
    # no compile at all). Points go in by jax.device_put: in this JAX, jnp.asarray of a NumPy
    # array compiles a small program per shape itself.
    points = rng.uniform(-1.0, 1.0, (200, 3)).astype(np.float32)
    alpha = rng.normal(size=200).astype(np.float32)
    buckets = {padding.dense_bucket(n) for n in range(100, 201)}
    with count_compiles() as count:
        for n in range(100, 201):
            X, w = jax.device_put((points[:n], alpha[:n]))
            G = kg.grad_sum(kernel, X, X, w)
            assert G.shape == (n, 3)
            assert np.all(np.isfinite(np.asarray(G)))  # padded points never make a NaN
    # One program per size bucket: 5 buckets (112, 128, 160, 192, 224) for 101 sizes.
    assert len(buckets) == 5
    assert count["n"] <= len(buckets)
    # The padded programs still give the right numbers (checked at the last, largest n).
    expected = np.einsum(
        "ija,j->ia", pairwise_jacobian(kernel, points, points), alpha.astype(np.float64)
    )
    assert max_relative_error(G, expected) <= 1e-5


def test_growing_n_on_the_tiled_path_compiles_per_bucket_not_per_n(policy_with, rng):
    # The tiled path pads to its own, finer buckets (32 per octave).
    policy_with(tiled_min_pairs=100)
    points = rng.uniform(-1.0, 1.0, (140, 2)).astype(np.float32)
    weights = rng.uniform(size=140).astype(np.float32)
    sizes = range(120, 141)
    buckets = {padding.fine_bucket(n) for n in sizes}
    with count_compiles() as count:
        for n in sizes:
            X, w = jax.device_put((points[:n], weights[:n]))
            assert np.all(np.isfinite(np.asarray(kg.grad_sum(kg.RBF(), X, X, w))))
    # Steps of 2 below 128 and of 4 from 128 (n / 32 rounded down to a power of two):
    # 120, 122, 124, 126, 128, 132, 136, 140.
    assert len(buckets) == 8
    assert count["n"] <= len(buckets)


def test_default_unit_weights_do_not_compile_per_n(rng):
    points = rng.uniform(-1.0, 1.0, (200, 3)).astype(np.float32)
    with count_compiles() as count:
        for n in range(100, 201):
            kg.grad_sum(kg.Matern52(), jax.device_put(points[:n])).block_until_ready()
    assert count["n"] <= len({padding.dense_bucket(n) for n in range(100, 201)})


# ------------------------------------------------------------------ persistent compile cache

_CACHE_SCRIPT = textwrap.dedent(
    """
    import json, os
    import jax, jax.numpy as jnp, numpy as np
    import kernelgrad as kg
    from kernelgrad.execution import compile_cache
    if os.environ.get("DISABLE_AT_RUN_TIME"):
        compile_cache.disable()
    # A reverse-mode grad_sum of a pair function on NumPy points: an ahead-of-time program
    # that takes well over MIN_COMPILE_SECONDS to compile, so kernelgrad stores it.
    pair = kg.kernel(lambda x, y: jnp.exp(-jnp.sqrt(1.0 + jnp.sum((x - y) ** 2))))
    X = np.linspace(-1, 1, 90, dtype=np.float32).reshape(30, 3)
    G = kg.grad_sum(pair, X, mode="reverse")
    # The user's own program, slow enough to compile that a global cache would store it.
    own = jax.jit(lambda A: jax.lax.fori_loop(0, 50, lambda i, a: jnp.sin(a @ a.T) @ a, A))
    own(jnp.ones((40, 40))).block_until_ready()
    print(json.dumps({
        "folder": compile_cache.active_folder(),
        "global_dir": jax.config.jax_compilation_cache_dir,
        "global_min_seconds": jax.config.jax_persistent_cache_min_compile_time_secs,
        "G": G.tolist(),
        **compile_cache.STATS,
    }))
    """
)


def _run_fresh(tmp_path, **env_extra) -> dict:
    """Run the cache script in a new process whose home and cache folders are in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "KERNELG"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.update(JAX_PLATFORMS="cpu", **env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _default_folder(tmp_path):
    return tmp_path / "xdg" / "kernelgrad" / "jax"


def test_cache_is_on_by_default_and_serves_the_next_process(tmp_path):
    folder = _default_folder(tmp_path)
    first = _run_fresh(tmp_path)
    assert first["folder"] == str(folder)
    assert first["misses"] >= 1 and first["hits"] == 0 and first["stored"] >= 1
    assert len(list(folder.iterdir())) == first["stored"]
    second = _run_fresh(tmp_path)
    assert second["hits"] >= 1 and second["stored"] == 0  # loaded instead of compiled
    assert second["G"] == first["G"]


def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path):
    first = _run_fresh(tmp_path)
    for entry in _default_folder(tmp_path).iterdir():
        entry.write_bytes(b"not an executable")
    second = _run_fresh(tmp_path)
    assert second["hits"] == 0 and second["stored"] == first["stored"]
    assert second["G"] == first["G"]
    assert _run_fresh(tmp_path)["hits"] >= 1


def test_a_process_with_several_devices_runs_its_entries_on_the_default_one(tmp_path):
    """A loaded program is placed on one device, as compiling put it: by default JAX would
    place it on every device and ask for a shard of each argument per device."""
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    first, second = _run_fresh(tmp_path, **four), _run_fresh(tmp_path, **four)
    assert second["hits"] >= 1 and second["G"] == first["G"]
    assert _run_fresh(tmp_path)["hits"] == 0  # one device: entries of its own


def test_paused_compiles_neither_load_nor_store(tmp_path, monkeypatch):
    """The bench's process compiles for real (compile_cache.paused), and the folder serves
    again afterwards."""
    if compile_cache.user_configured():
        pytest.skip("a JAX cache of the user's serves instead")
    monkeypatch.setattr(compile_cache, "_FOLDER", None)
    assert compile_cache.enable_default(tmp_path) == str(tmp_path)
    monkeypatch.setattr(compile_cache, "MIN_COMPILE_SECONDS", 0.0)
    lowered = jax.jit(lambda a: jnp.sin(a) * 3.0).lower(np.ones(7, np.float32))
    before = dict(compile_cache.STATS)
    with compile_cache.paused():
        assert compile_cache.active_folder() is None
        compile_cache.compile(lowered)
    assert compile_cache.STATS == before and list(tmp_path.iterdir()) == []
    assert compile_cache.active_folder() == str(tmp_path)
    compile_cache.compile(lowered)
    exe = compile_cache.compile(lowered)
    assert compile_cache.STATS["stored"] == before["stored"] + 1
    assert compile_cache.STATS["hits"] == before["hits"] + 1
    np.testing.assert_allclose(exe(np.ones(7, np.float32)), 3.0 * np.sin(np.ones(7)), rtol=1e-6)


@pytest.mark.parametrize("value", ["1", "true"])
def test_environment_variable_turns_the_cache_off(tmp_path, value):
    result = _run_fresh(tmp_path, KERNELGRAD_NO_COMPILE_CACHE=value)
    assert result["folder"] is None
    assert result["hits"] == 0 and result["stored"] == 0
    assert not (tmp_path / "xdg" / "kernelgrad").exists()


def test_a_users_own_cache_folder_wins(tmp_path):
    own = tmp_path / "mine"
    result = _run_fresh(tmp_path, JAX_COMPILATION_CACHE_DIR=str(own))
    assert result["folder"] == str(own)
    assert result["hits"] == 0 and result["stored"] == 0  # JAX's cache serves kernelgrad
    assert not (tmp_path / "xdg" / "kernelgrad").exists()


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_folder() == tmp_path / "kernelgrad" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert compile_cache.default_folder() == tmp_path / "h" / ".cache" / "kernelgrad" / "jax"
    for value, off in [("", False), ("0", False), ("no", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv(compile_cache.ENV_DISABLE, value)
        assert compile_cache.disabled_by_env() is off


def test_disable_at_run_time_stops_storing(tmp_path):
    result = _run_fresh(tmp_path, DISABLE_AT_RUN_TIME="1")
    assert result["folder"] is None and result["stored"] == 0
    assert list(_default_folder(tmp_path).iterdir()) == []  # created at import, left empty


def test_cache_holds_kernelgrads_programs_only_and_leaves_global_config_alone(tmp_path):
    result = _run_fresh(tmp_path)
    assert result["global_dir"] is None
    assert result["global_min_seconds"] == jax.config.jax_persistent_cache_min_compile_time_secs
    names = [entry.name for entry in _default_folder(tmp_path).iterdir()]
    # The user's program was not stored: every entry is one of kernelgrad's own.
    assert len(names) == result["stored"] and all(n.startswith("kernelgrad-") for n in names)


@pytest.mark.parametrize("n", [100, 1600])  # a dense program, and tiles (1600^2 pairs)
@pytest.mark.parametrize("mode", ["forward", "closed"])
def test_points_closed_over_in_a_users_jit(n, mode, rng, policy_with):
    """Host points captured as constants of the caller's jit: kernelgrad's jitted routes are
    then staged into that trace (so compile options, which JAX allows on top-level programs
    only, are left out), and the result is the caller's traced value, equal to a direct call."""
    policy_with(tiled_min_pairs=1500 * 1500)
    k = kg.RBF() if mode == "closed" else kg.kernel(_rbf_pair)
    X = rng.normal(size=(n, 2))
    direct = kg.grad_sum(k, X, mode=mode)
    with jax.enable_x64(True):
        inside = jax.jit(lambda: kg.grad_sum(k, X, mode=mode))()
    assert max_relative_error(np.asarray(inside), direct) < 1e-12


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU option")
def test_pair_function_programs_compile_without_ynnpack_fusions(rng):
    """AD programs (a pair function) are compiled with the fusions off, closed forms with
    XLA's defaults (:mod:`kernelgrad.execution.xla_options`), as the compiled HLO shows."""
    from kernelgrad.execution import engine, xla_options

    assert xla_options.for_method("closed") is None
    assert xla_options.for_method("gaussian") is None
    assert xla_options.for_method("forward") == xla_options.NO_YNN
    X = rng.normal(size=(300, 3))  # compiled (not eager NumPy) for both kernels

    def fused(compiled) -> bool:
        return "__ynn_fusion" in compiled.as_text()

    with jax.enable_x64(True):
        for k in (kg.kernel(_rbf_pair), kg.RBF()):
            method = kg.explain("gram", k, X).method
            program = engine._executable("gram", method, k, X, X, None)
            (exe,) = [
                c.cell_contents for c in program.__closure__ if hasattr(c.cell_contents, "as_text")
            ]
            default = jax.jit(lambda X, k=k, method=method: kg.gram(k, X, mode=method))
            fuses_here = fused(default.lower(jnp.asarray(X)).compile())
            if method == "closed":
                assert fused(exe) == fuses_here
            else:
                if not fuses_here:
                    pytest.skip("this XLA:CPU fuses nothing into YNNPACK kernels")
                assert not fused(exe)


def test_hot_closed_forms_in_few_dimensions_time_both_geometries(rng, policy_with, monkeypatch):
    """A hot closed-form program in 2-8 dimensions is traced with squared distances both ways
    (the expansion's matmul, and per-dimension differences) and the faster is kept; pair
    functions, d = 1, d beyond the difference form's limit and kernels without squared
    distances trace once. Either choice gives the textbook Gram matrix."""
    from kernelgrad.execution import engine

    seen = []
    real = engine._faster

    def recording(lowered, args):
        seen.append(["dot_general" in one.as_text() for one in lowered])
        return real(lowered, args)

    monkeypatch.setattr(engine, "_faster", recording)
    policy_with(hot_calls=2)
    cases = [(kg.RBF(), 3, [True, False]), (kg.RBF(), 1, [False]), (kg.RBF(), 9, [True])]
    cases.append((kg.kernel(_rbf_pair), 3, [False]))
    cases.append((kg.Linear(), 3, None))  # no squared distances: one trace, not two
    for k, d, traced in cases:
        X = rng.normal(size=(400, d))  # compiled, not eager NumPy, in every d
        X[5] = X[2]
        seen.clear()
        for _ in range(3):
            K = kg.gram(k, X)
        if traced is None:
            assert len(seen) == 1 and len(seen[0]) == 1, (k, d)
            continue
        assert seen == [traced], (k, d)
        squared = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=2)
        np.testing.assert_allclose(K, np.exp(-0.5 * squared), rtol=1e-12, atol=1e-14)
