"""The training recipes (recipes/*.sh) stay runnable: every `harmonize` line in them parses with today's
command line (a stand-in `harmonize` on PATH parses each call and runs nothing)."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT

CODE = 'import sys; from engine.cli import parse; parse(sys.argv[1:]); print("ok", *sys.argv[1:2])'
PARSE_ONLY = f"#!/bin/sh\nexec {sys.executable} -c '{CODE}' \"$@\"\n"


@pytest.mark.parametrize("recipe, args", [("medium-gpu.sh", ["data", "runs"]), ("small-cpu.sh", ["data", "runs"]),
                                          ("paper-iharmony4.sh", ["/data/iHarmony4", "runs"]),
                                          ("gpu-round-5.sh", ["data", "start", "out", "8"])])
def test_every_harmonize_call_of_a_recipe_parses(tmp_path, recipe, args):
    shim = tmp_path / "bin" / "harmonize"
    shim.parent.mkdir()
    shim.write_text(PARSE_ONLY)
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "recipes" / recipe), *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    logs = "".join(f.read_text() for f in tmp_path.rglob("*.log"))  # a recipe may send each run to a log
    calls = [line for line in (r.stdout + logs).splitlines() if line.startswith("ok ")]
    text = (ROOT / "recipes" / recipe).read_text()
    assert len(calls) >= text.count("harmonize train") and calls, r.stdout


def test_the_gpu_round_trains_each_run_first_in_the_loader_then_on_the_device(tmp_path):
    """Steps per second both ways in one call: each run's minute with --render loader, then resumed with
    --render device, with the same budget both times; and the synthesis bench on the device first."""
    shim = tmp_path / "bin" / "harmonize"
    shim.parent.mkdir()
    shim.write_text(PARSE_ONLY.replace('print("ok", *sys.argv[1:2])', 'print("ok", *sys.argv[1:])'))
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "recipes" / "gpu-round-5.sh"), "data", "start", "out", "5"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    log = (tmp_path / "out" / "round-5.log").read_text()
    assert "ok bench --synthesis data --device cuda" in log
    runs = {}
    for line in log.splitlines():
        if line.startswith("ok train"):
            words = line.split()
            runs.setdefault(words[words.index("--out") + 1], []).append(words)
    assert len(runs) == 4
    for out, (first, then) in runs.items():
        assert first[first.index("--render") + 1] == "loader" and first[first.index("--pause-after") + 1] == "1"
        assert then[then.index("--render") + 1] == "device" and "--pause-after" not in then
        assert first[first.index("--minutes") + 1] == then[then.index("--minutes") + 1] == "5.0", out
        assert "--resume" in first and "--resume" in then
