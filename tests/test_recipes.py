"""The training recipes (recipes/*.sh) stay runnable: every `harmonize` line in them parses with today's
command line (a stand-in `harmonize` on PATH parses each call and runs nothing)."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from engine.cli import parse
from engine.training.round import read_round

CODE = 'import sys; from engine.cli import parse; parse(sys.argv[1:]); print("ok", *sys.argv[1:2])'
PARSE_ONLY = f"#!/bin/sh\nexec {sys.executable} -c '{CODE}' \"$@\"\n"


@pytest.mark.parametrize("recipe, args", [("medium-gpu.sh", ["data", "runs"]), ("small-cpu.sh", ["data", "runs"]),
                                          ("paper-iharmony4.sh", ["/data/iHarmony4", "runs"]),
                                          ("gpu-round-6.sh", ["data", "start", "out", "6"])])
def test_every_harmonize_call_of_a_recipe_parses(tmp_path, recipe, args):
    shim = tmp_path / "bin" / "harmonize"
    shim.parent.mkdir()
    shim.write_text(PARSE_ONLY)
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "recipes" / recipe), *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    logs = "".join(f.read_text() for f in [*tmp_path.rglob("*.log"), *tmp_path.rglob("*.json")])  # or to a file
    calls = [line for line in (r.stdout + logs).splitlines() if line.startswith("ok ")]
    text = (ROOT / "recipes" / recipe).read_text()
    assert len(calls) >= text.count("harmonize train") and calls, r.stdout


BENCH_SHIM = """import json, os, sys
from engine.cli import parse
parse(sys.argv[1:])
with open(os.environ["CALLS"], "a") as calls:
    print("ok", *sys.argv[1:], file=calls)
if sys.argv[1:3] == ["bench", "--train"]:
    row = {"samples_per_second": 100.0, "data_share": 0.5, "channels_last": False}
    print(json.dumps({"device": "cuda", "config": "medium", "size": 256, "batch": 128, "steps": 32,
                      "made_at_once": 16, "pictures": 915, "pictures_mib": 171.0, "flags": os.environ["FLAGS"].split(),
                      "rows": {"fp32": row, "bf16": row, "bf16, channels-last": row, "bf16, made ahead": row}}))
"""


@pytest.mark.parametrize("flags", ["--channels-last --make-ahead", "--make-ahead", ""])
def test_the_gpu_round_measures_the_trainer_then_trains_the_round_in_one_process(tmp_path, flags):
    """One call: bench --train on the device, then every candidate of round-6.json by one train-round process,
    with the options the bench measured faster there (bench.train_flags, tested in test_resident), its table in
    the log; each candidate's options parse as harmonize train's."""
    shim = tmp_path / "bin" / "harmonize"
    shim.parent.mkdir()
    (tmp_path / "bin" / "shim.py").write_text(BENCH_SHIM)
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'bin' / 'shim.py'} \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "CALLS": str(tmp_path / "calls"), "FLAGS": flags}
    round_file = ROOT / "recipes" / "round-6.json"
    r = subprocess.run(["bash", str(ROOT / "recipes" / "gpu-round-6.sh"), "data", "start", "out", "6"], cwd=tmp_path,
                       env={**env, "ROUND": str(round_file)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["ok bench --train data --device cuda --json", f"ok train-round {round_file} --data data --start "
                     f"start --out out --runs /tmp/round-6-runs --minutes 6 --device cuda{' ' * bool(flags)}{flags}"]
    assert f"faster here: {flags or 'neither option'}" in (tmp_path / "out" / "round-6.log").read_text()
    _, candidates = read_round(round_file)
    for name, options in candidates.items():  # each candidate's options are harmonize train's
        args = [f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}"
                for k, v in options.items() if k not in ("comment", "from", "share")]
        parse(["train", "--out", f"{name}.pt", *args])


SCORE_SHIM = """import os, sys
from pathlib import Path
from engine.cli import parse
args = parse(sys.argv[1:])
with open(os.environ["CALLS"], "a") as calls:
    print("ok", *sys.argv[1:], file=calls)
if sys.argv[1] == "heldout":
    Path(args.out).mkdir(parents=True)
    (Path(args.out) / "MANIFEST.csv").write_text("sample_dir,subset,composite,mask,real\\n")
"""


def test_the_round_is_scored_in_one_command_parts_joined_in_order(tmp_path):
    """gpu-round-6-score.sh: a checkpoint split in parts is joined by number (part10 after part9) into
    runs/round-6, not beside the fetched files; the held-out composites are made once; choose gets every
    candidate, the proviso and the contact sheet."""
    shim = tmp_path / "bin" / "harmonize"
    shim.parent.mkdir()
    (tmp_path / "bin" / "shim.py").write_text(SCORE_SHIM)
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'bin' / 'shim.py'} \"$@\"\n")
    shim.chmod(0o755)
    results = tmp_path / "results"
    results.mkdir()
    (results / "medium.pt").write_bytes(b"m")
    for k in range(1, 12):
        (results / f"paper.pt.part{k}").write_bytes(bytes([k]))
    (results / "round-6.log").write_text("")
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "CALLS": str(tmp_path / "calls"), "CSV": "round-6.csv"}
    script = str(ROOT / "recipes" / "gpu-round-6-score.sh")
    for _ in range(2):
        r = subprocess.run(["bash", script, "results"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "runs" / "round-6" / "paper.pt").read_bytes() == bytes(range(1, 12))
    choose = ("ok choose ../shared/bench/iharmony4-val ../shared/bench/iharmony4-samples --heldout runs/heldout-ih4 "
              "--lab-mix 0.3 --candidate runs/round-6/paper.pt --candidate results/medium.pt --csv round-6.csv "
              "--sheet ../shared/bench/real-composites runs/round-6/contact-sheet.jpg")
    assert (tmp_path / "calls").read_text().splitlines() == [
        "ok heldout --data ../shared/data --recipe iharmony4 --count 500 --seed 2027 -o runs/heldout-ih4",
        choose, choose]  # the held-out composites made once, kept for the next time
    (tmp_path / "empty").mkdir()
    r = subprocess.run(["bash", script, "empty"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no checkpoint" in r.stderr
