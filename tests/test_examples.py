"""The example scripts run end to end at a small size and write their PNGs.

Each runs in a subprocess, as a user would run it, so that the test checks the script's own
argument handling and imports. The assertions check the numbers the scripts print against
what the methods guarantee at that size, not just that they ran.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(script: str, *args: str) -> str:
    env = dict(os.environ, MPLBACKEND="Agg")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_svgd_moves_particles_onto_the_banana(tmp_path):
    png = tmp_path / "svgd.png"
    stdout = run("svgd.py", "--particles", "100", "--steps", "300", "--output", str(png))
    assert png.read_bytes().startswith(PNG_MAGIC)
    mean = [float(v) for v in re.search(r"mean\s+\[([^\]]+)\]", stdout).group(1).split()]
    # The particles start around (-3, 4); the target's mean is (0, 0).
    assert abs(mean[0]) < 0.6 and abs(mean[1]) < 0.6, stdout
    # The KSD of the particles against the banana falls as they arrive.
    ksd = [float(v) for v in re.findall(r"step \d+: (\S+?)(?:,|$)", stdout, re.M)]
    assert len(ksd) == 7 and ksd[-1] < ksd[0] / 10, stdout


def test_gradient_gp_gradients_help_on_branin(tmp_path):
    png, numbers = tmp_path / "ggp.png", tmp_path / "ggp.json"
    run(
        "gradient_gp.py",
        "--sizes", "6,12",
        "--functions", "branin",
        "--test-points", "200",
        "--steps", "30",
        "--output", str(png),
        "--json", str(numbers),
    )  # fmt: skip
    assert png.read_bytes().startswith(PNG_MAGIC)
    rows = json.loads(numbers.read_text())["branin"]
    assert [row["n"] for row in rows] == [6, 12]
    for row in rows:
        # n points with gradients carry 3n numbers: they must beat n values alone.
        assert row["values_and_gradients"] < row["values"], row


def test_directional_gp_compares_the_three_arms(tmp_path):
    png, numbers = tmp_path / "dir.png", tmp_path / "dir.json"
    run(
        "directional_gp.py",
        "--d", "10",
        "--counts", "4,64",
        "--gradient-points", "1,4",
        "--test-points", "100",
        "--draws", "2",
        "--output", str(png),
        "--json", str(numbers),
    )  # fmt: skip
    assert png.read_bytes().startswith(PNG_MAGIC)
    data = json.loads(numbers.read_text())
    rows = {arm: {r["points"]: r for r in runs} for arm, runs in data.items()}
    assert [r["observations"] for r in rows["full gradients"].values()] == [11, 44]  # n (d + 1)
    assert [r["observations"] for r in rows["values + directional"].values()] == [8, 128]
    # the same 4 points: their gradients add 40 numbers to 4 values, a direction 4
    assert rows["full gradients"][4]["error"] < rows["values"][4]["error"], rows
    assert rows["values + directional"][4]["error"] < rows["values"][4]["error"], rows
    # 64 directional derivatives against 4 (nested designs, the true kernel)
    assert rows["directional"][64]["error"] < rows["directional"][4]["error"], rows
    for runs in rows.values():
        assert all(0 < r["error"] < 1.05 for r in runs.values()), rows


def test_langevin_ksd_grows_with_the_step_size(tmp_path):
    png = tmp_path / "ula.png"
    stdout = run(
        "langevin_ksd.py",
        "--chains", "300",
        "--steps", "200",
        "--step-sizes", "0.02,0.3",
        "--n-boot", "100",
        "--output", str(png),
    )  # fmt: skip
    assert png.read_bytes().startswith(PNG_MAGIC)
    rows = dict(re.findall(r"^\s+(\S+)\s+(\S+)\s+\S+$", stdout, re.M))
    # At h = 0.3 the chain's variance along the target's stiffest direction is 4x too
    # large: far from the target; at h = 0.02 it is 5% too large, where 300 draws can
    # hardly tell it from exact ones.
    assert float(rows["0.3"]) > 10 * max(float(rows["0.02"]), float(rows["exact"]), 1e-3), stdout


def test_botorch_gradient_bo_runs_both_models_from_one_design(tmp_path):
    pytest.importorskip("botorch")
    png, numbers = tmp_path / "bo.png", tmp_path / "bo.json"
    stdout = run(
        "botorch_gradient_bo.py",
        "--problems", "branin",
        "--seeds", "1",
        "--evaluations", "6",
        "--output", str(png),
        "--json", str(numbers),
    )  # fmt: skip
    assert png.read_bytes().startswith(PNG_MAGIC)
    runs = json.loads(numbers.read_text())["branin"]
    (with_gradients,), (values_only,) = runs["values and gradients"], runs["values only"]
    for best in (with_gradients, values_only):
        assert len(best) == 6 and all(a >= b for a, b in itertools.pairwise(best)), best
        assert best[-1] >= 0.397887 - 1e-6, best  # never below Branin's minimum
    # Both start from the same 4-point Sobol design, so their first best values agree.
    assert with_gradients[:4] == values_only[:4], stdout
