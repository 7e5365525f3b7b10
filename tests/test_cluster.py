"""`harmonize run --ray`: a local Ray with 2 CPUs gives the plain run's outputs byte for byte, reports bad
files without failing, skips what is done, and loses nothing when an actor is killed mid-run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BENCH, ROOT, ellipse_mask, needs_bench, textured_image
from PIL import Image

pytest.importorskip("ray", reason="ray (the 'ray' extra) is not installed")
pytestmark = pytest.mark.slow

MANIFEST = BENCH / "MANIFEST.csv"


def harmonize(*args, wait=True):
    cmd = [sys.executable, "-m", "engine.cli", "run", *map(str, args), "-q"]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    r = harmonize(MANIFEST, "-o", out)
    assert r.returncode == 0, r.stderr
    return files(out)


@needs_bench
def test_ray_writes_the_plain_runs_files_and_a_rerun_skips_them(plain, tmp_path):
    r = harmonize(MANIFEST, "-o", tmp_path, "--ray")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "22 ok / 0 skipped / 0 failed" in r.stdout
    assert files(tmp_path) == plain
    r = harmonize(MANIFEST, "-o", tmp_path, "--ray")
    assert r.returncode == 0 and "0 ok / 22 skipped / 0 failed" in r.stdout


def test_ray_reports_a_bad_file_and_does_the_rest(tmp_path):
    src, masks = tmp_path / "in", tmp_path / "masks"
    src.mkdir(), masks.mkdir()
    for i in range(5):
        Image.fromarray(textured_image(48, 64, seed=i)).save(src / f"c{i}.png")
        Image.fromarray((ellipse_mask(48, 64) * 255).astype(np.uint8)).save(masks / f"c{i}.png")
    (src / "c2.png").write_bytes(b"not an image")
    r = harmonize(src, "--masks", masks, "-o", tmp_path / "out", "--ray", "--batch-size", "2")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "4 ok / 0 skipped / 1 failed" in r.stdout
    assert r.stderr.count("c2.png: not a readable image") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0.png", "c1.png", "c3.png", "c4.png"]


def actor_pids(run: int) -> list[int]:
    """The Ray actors of this run only: `ray::HarmonizeActor` processes descended from its driver (the
    local Ray it starts is its child), never another run's on the same machine."""
    parent, actors = {}, []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parent[pid] = int(fields[1])
            if (stat.parent / "cmdline").read_bytes().startswith(b"ray::HarmonizeActor"):
                actors.append(pid)
        except (OSError, IndexError, ValueError):
            pass

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == run:
                return True
        return False

    return [pid for pid in actors if descends(pid)]


@needs_bench
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor processes through /proc")
def test_an_actor_killed_mid_run_loses_and_corrupts_nothing(plain, tmp_path):
    proc = harmonize(MANIFEST, "-o", tmp_path, "--ray", "--batch-size", "1", wait=False)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        mine = actor_pids(proc.pid) if len(list(tmp_path.glob("*.jpg"))) >= 2 else []
        if mine:
            killed = mine[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, "the run ended before an actor could be killed"
    assert proc.returncode == 0, err[-3000:]
    assert "22 ok / 0 skipped / 0 failed" in out and "an actor died" in err
    assert files(tmp_path) == plain, "an output is missing, extra or differs from the plain run's"


@needs_bench
def test_ray_takes_urls_for_inputs_and_outputs(plain, tmp_path):
    """A file:// URL stands in for s3:// and the like: the jobs cross to the actors as URLs."""
    pytest.importorskip("upath", reason="universal-pathlib (the 'ray' extra) is not installed")
    r = harmonize(MANIFEST.as_uri(), "-o", (tmp_path / "out").as_uri(), "--ray", "--batch-size", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "22 ok / 0 skipped / 0 failed" in r.stdout
    assert files(tmp_path / "out") == plain
