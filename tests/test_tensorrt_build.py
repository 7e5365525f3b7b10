"""A real FP16 engine built on the CPU with TensorRT for RTX, our plugin taken for the harmony node."""
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from conftest import ROOT

from engine.models import shipped
from engine.tensorrt.library import PLUGIN_VERSION

pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx (the 'tensorrt' extra) is not installed")
pytestmark = pytest.mark.tensorrt


def package_files() -> list:
    """Every file in the package folder but Python's bytecode caches."""
    return sorted(p for p in (ROOT / "engine").rglob("*") if "__pycache__" not in p.parts)


def build(tmp_path, *extra, out=None):
    """build_engine.py for sm_86 with the user's cache folder in tmp_path/cache; the engine goes to `out`
    (None: tmp_path/fmm.engine; False: build_engine.py's default, in that cache folder)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["FMM_CACHE_DIR"] = str(tmp_path / "cache")
    out = tmp_path / "fmm.engine" if out is None else out
    where = ["-o", str(out)] if out else []
    r = subprocess.run([sys.executable, "build_engine.py", "--compute-capability", "86", *where, *extra],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return r, out


def test_build_engine_with_plugin_for_a_named_compute_capability(tmp_path, monkeypatch):
    """The default output: the user's cache folder (made 0700), the engine named by its ONNX's digest, the
    GPU and the library, its timing cache beside it; nothing written into the package."""
    from engine.tensorrt.lookup import engine_path, timing_cache_path

    before = package_files()
    r, _ = build(tmp_path, out=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    monkeypatch.setenv("FMM_CACHE_DIR", str(tmp_path / "cache"))
    out = engine_path(shipped("onnx-fp16"), 86)
    assert out.parent == tmp_path / "cache" / "engines" and out.name.startswith("fmm-medium-fp16-")
    assert out.name.endswith("-sm86-tensorrt_rtx-" + version("tensorrt-rtx") + ".engine")
    assert f"wrote {out} " in r.stdout
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700 == out.parent.stat().st_mode & 0o777
    assert package_files() == before
    meta = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_size > 100_000
    assert meta["compute_capability"] == 86 and meta["library"].startswith("tensorrt_rtx")
    assert meta["plugin_layers"] == 1 and len(meta["plugin_log"]) == 1
    assert int(meta["plugin_log"][0].split(":")[-1]) > 1000, "the plugin's PTX is not in the engine"
    assert meta["plugin_version"] == PLUGIN_VERSION and meta["head"] == "affine"
    import hashlib

    assert meta["onnx_sha256"] == hashlib.sha256(shipped("onnx-fp16").read_bytes()).hexdigest()
    assert b".target sm_86" in out.read_bytes(), "no sm_86 PTX embedded in the engine"
    assert timing_cache_path(86).exists() and timing_cache_path(86).parent == out.parent


def test_stale_engine_is_refused_with_the_rebuild_command(tmp_path):
    from engine.errors import HarmonizeError
    from engine.tensorrt.lookup import check_engine

    engine = tmp_path / "x.engine"
    engine.write_bytes(b"x")
    engine.with_suffix(".json").write_text(json.dumps(dict(library="tensorrt 9.0", compute_capability=86,
                                                           plugin_version="0", onnx_sha256="0")))
    with pytest.raises(HarmonizeError, match="stale or foreign.*tensorrt 9.0.*plugin version 0.*rebuild it with"):
        check_engine(engine, shipped("onnx-fp16"))
    with pytest.raises(HarmonizeError, match="no TensorRT engine"):
        check_engine(tmp_path / "missing.engine")


def test_unparseable_onnx_is_reported(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r, _ = build(tmp_path, str(bad))
    assert r.returncode == 2 and "cannot parse it" in r.stderr


def test_build_engine_for_an_imported_authors_checkpoint(tmp_path):
    """`harmonize import` then export --fp16 then build: the paper network (image head, working size 256)
    gets the same plugin, and the profile is optimised for its working size."""
    torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
    pytest.importorskip("onnx", reason="onnx (the 'export' extra) is not installed")
    from test_import import authors_state_dict

    from engine.cli import main

    torch.save({"epoch": 1, "state_dict": authors_state_dict()}, tmp_path / "network.pth")
    assert main(["import", str(tmp_path / "network.pth"), "-o", str(tmp_path / "paper.pt")]) == 0
    assert main(["export", str(tmp_path / "paper.pt"), "--fp16", "-o", str(tmp_path / "paper-fp16.onnx")]) == 0
    r, out = build(tmp_path, str(tmp_path / "paper-fp16.onnx"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["head"] == "image" and meta["working_size"] == 256 and meta["profile"]["opt"] == [1, 256, 256]
    assert meta["plugin_layers"] == 1 and int(meta["plugin_log"][0].split(":")[-1]) > 1000
