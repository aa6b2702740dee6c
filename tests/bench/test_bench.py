"""``kernelgrad bench``: an end-to-end quick run, its JSON, its skips and its bad arguments.

Nothing here checks a time: only that every approach computes the same numbers, that the
results are all reported, and that a bad command line fails cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kernelgrad import cli
from kernelgrad.bench import peers as P
from kernelgrad.bench import runner

RESULT_FIELDS = {
    "section": str,
    "peer": str,
    "op": str,
    "n": int,
    "d": int,
    "status": str,
}


def bound(dtype: str, n: int) -> float:
    """16 n eps: n terms of a few roundings each (see runner.error_bound for the derivation)."""
    return 16 * n * float(np.finfo(dtype).eps)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``kernelgrad bench --quick`` in its own process, as a user runs it."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        "-m",
        "kernelgrad.cli",
        "bench",
        "--quick",
        "--json",
        str(out / "bench.json"),
        "--plot",
        str(out / "bench.png"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    with open(out / "bench.json") as f:
        data = json.load(f)
    return proc, data, out


def test_quick_json_schema(quick):
    _, data, _ = quick
    assert data["schema"] == "kernelgrad-bench/1"
    assert data["dtype"] == "float64" and data["device"] == "cpu"
    assert data["command"][:3] == ["kernelgrad", "bench", "--quick"]
    assert {"cpu", "cores", "platform", "python", "jax_backend"} <= set(data["machine"])
    assert data["versions"]["jax"] and data["versions"]["numpy"] and data["versions"]["kernelgrad"]
    assert "as posted" in data["replica_note"]
    for r in data["replica"] + data["sweep"]:
        for name, kind in RESULT_FIELDS.items():
            assert isinstance(r[name], kind), (name, r)
        assert r["status"] in ("ok", "skipped", "failed")
        if r["status"] == "ok":
            assert r["steady_s"] > 0 and r["repeats"] >= 1 and r["new_n_call_s"] > 0
        else:
            assert r["reason"], r  # every skip or failure says why
            assert r["steady_s"] is None


def test_quick_covers_every_case(quick):
    _, data, _ = quick
    cfg = data["config"]
    sweep = {(r["peer"], r["op"], r["n"], r["d"]) for r in data["sweep"]}
    expected = {
        (p, op, n, d)
        for p in cfg["peers"]
        for op in P.get_peer(p).ops
        for n in cfg["ns"]
        for d in cfg["ds"]
    }
    assert sweep == expected
    assert {"loop-jacfwd", "numpy", "kernelgrad"} <= {p for p, *_ in sweep}
    replica = {(r["peer"], r["op"]) for r in data["replica"]}
    assert replica == {(p, op) for p in cfg["peers"] if P.get_peer(p).replica for op in P.OPS}
    assert {p for p, _ in replica} >= {"forum-jacfwd", "forum-jacrev", "kernelgrad"}
    # kernelgrad's first calls come from a fresh process, --quick or not; --quick says why the
    # others' do not.
    for r in data["replica"]:
        if r["peer"] == "kernelgrad":
            assert r["first_call_s"] > 0 and r["fresh_second_call_s"] > 0, r
        else:
            # Not measured: --quick skips fresh processes, or the peer's library is absent.
            why = data["fresh_errors"][r["peer"]]
            assert r["first_call_s"] is None and ("--quick" in why or "not installed" in why)


def test_quick_all_approaches_agree(quick):
    """Every approach that ran matches the float64 reference to within 16 n eps."""
    _, data, _ = quick
    ran = [r for r in data["replica"] + data["sweep"] if r["status"] == "ok"]
    assert {r["peer"] for r in ran} >= {"forum-jacfwd", "numpy", "kernelgrad"}
    for r in ran:
        assert r["max_rel_err"] <= bound(data["dtype"], r["n"]), r
        assert r["within_bound"] is True
    for section in ("replica", "sweep"):
        assert not [r for r in data[section] if r["status"] == "failed"]


def test_quick_ratios_are_to_kernelgrad(quick):
    _, data, _ = quick
    rows = data["sweep"]
    base = {(r["op"], r["n"], r["d"]): r["steady_s"] for r in rows if r["peer"] == "kernelgrad"}
    for r in rows:
        if r["status"] == "ok":
            expected = r["steady_s"] / base[(r["op"], r["n"], r["d"])]
            assert r["ratio_to_kernelgrad"] == pytest.approx(expected)


def test_quick_terminal_output_and_plot(quick):
    proc, _, out = quick
    assert "Forum replica" in proc.stdout
    assert "as posted" in proc.stdout
    assert "Sweep: RBF, d = 3" in proc.stdout
    assert "Traceback" not in proc.stderr
    for name in ("bench.png", "bench-ratio.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "kernelgrad is within 1.1x of the fastest in" in proc.stdout


def test_reverse_mode_over_memory_budget_is_skipped():
    """vmap(jacrev) needs ~2 n^3 numbers: 16 MB at n = 100, so a 1 MB budget must skip it."""
    config = runner.BenchConfig(
        ns=(100,),
        ds=(1,),
        ops=("grad_map",),
        peers=("forum-jacrev", "kernelgrad"),
        replica=False,
        mem_budget_bytes=1 << 20,
        target_s=0.0,
    )
    res = runner.run(config)
    rev = res.find("sweep", "forum-jacrev", "grad_map", 100, 1)
    assert rev.status == "skipped" and rev.steady_s is None
    # Over the estimate, the compiled program's own plan decides, before anything runs.
    assert rev.reason.startswith("XLA plans") and "n^3" in rev.reason
    assert res.find("sweep", "kernelgrad", "grad_map", 100, 1).status == "ok"


def test_over_the_estimate_a_compiled_peer_is_judged_by_xla_plan():
    """vmap(jacfwd)'s (n, n) Jacobian is in the estimate, but XLA may fuse it away: over the
    estimate, the runner asks XLA's buffer assignment. With the budget set to exactly that
    plan the peer runs; one byte under it, it is skipped."""
    peer, case = P.get_peer("forum-jacfwd"), P.Case("grad_map", 300, 1)
    with peer.context(case):
        planned, _ = peer.planned_bytes(case, P.points(case))
    assert peer.estimate_bytes(case) > planned  # the estimate alone would skip it

    def run_with(budget):
        config = runner.BenchConfig(
            ns=(300,),
            ds=(1,),
            ops=("grad_map",),
            peers=("forum-jacfwd", "kernelgrad"),
            replica=False,
            mem_budget_bytes=budget,
            target_s=0.0,
        )
        return runner.run(config).find("sweep", "forum-jacfwd", "grad_map", 300, 1)

    fits = run_with(planned)
    assert fits.status == "ok", fits.reason
    assert fits.peak_method == "XLA buffer assignment" and fits.peak_bytes == planned
    over = run_with(planned - 1)
    assert over.status == "skipped" and over.reason.startswith("XLA plans"), over.reason


def test_float32_sweep_is_accurate():
    """In float32, kernelgrad and the NumPy closed form stay within 16 n eps(float32)."""
    config = runner.BenchConfig(
        ns=(300,),
        ds=(3,),
        peers=("numpy", "kernelgrad"),
        dtype="float32",
        replica=False,
        target_s=0.0,
    )
    res = runner.run(config)
    assert len(res.results) == 6
    for r in res.results:
        assert r.status == "ok", r
        assert r.max_rel_err <= bound("float32", r.n), r
        # float32 really ran: the error is far above what float64 arithmetic would leave.
        assert r.max_rel_err > bound("float64", r.n), r


def test_max_rel_err_is_relative_to_the_largest_reference_value():
    # |1 - 1| and |-2.5 - (-2)| = 0.5, over max |ref| = 2.
    assert runner.max_rel_err(np.array([1.0, -2.5]), np.array([1.0, -2.0])) == 0.25
    with pytest.raises(ValueError, match="shape"):
        runner.max_rel_err(np.zeros(3), np.zeros(2))


def _no_gpu() -> bool:
    return not runner.gpu_available()


BAD_ARGS = {
    "unknown peer": ["bench", "--peers", "forum-jacfwd,nope"],
    "n zero": ["bench", "--n", "0"],
    "n negative": ["bench", "--n", "-3"],
    "n not a number": ["bench", "--n", "many"],
    "bad dtype": ["bench", "--dtype", "float16"],
    "unknown command": ["frobnicate"],
    "no command": [],
}


@pytest.mark.parametrize("argv", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "error" in lines[0] and "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_unwritable_paths_exit_2(option, tmp_path, capsys):
    for path in (tmp_path / "no-such-dir" / "out", tmp_path):  # a missing folder; a folder
        assert cli.main(["bench", option, str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and option in err[0] and str(path) in err[0]
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind


def test_gpu_without_a_gpu_exits_2(capsys):
    if not _no_gpu():
        pytest.skip("this machine has a GPU")
    assert cli.main(["bench", "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no GPU" in err[0]


def test_bad_argument_from_the_console_script():
    """The installed entry point: exit status 2, one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "kernelgrad.cli", "bench", "--peers", "zygote"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown peer 'zygote'" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"]])
def test_help(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "bench" in out and "usage" in out


def test_without_torch_its_columns_are_skipped_with_the_install_hint(monkeypatch):
    real = P.importlib.util.find_spec
    monkeypatch.setattr(
        P.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    config = runner.BenchConfig(
        ns=(100,),
        ds=(1,),
        ops=("grad",),
        peers=("torch-jacfwd", "kernelgrad"),
        replica=False,
        target_s=0.0,
    )
    res = runner.run(config)
    torch_r = res.find("sweep", "torch-jacfwd", "grad", 100, 1)
    assert torch_r.status == "skipped" and "pip install torch" in torch_r.reason
    assert res.find("sweep", "kernelgrad", "grad", 100, 1).status == "ok"
