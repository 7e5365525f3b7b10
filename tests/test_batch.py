"""`harmonize run`: single image, folders matched by name, CSV lists, resume, failures, exit codes."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, ellipse_mask, textured_image
from engine.cli import main


def make_composite(folder, mask_folder, name, mask_name=None, size=(48, 64), ext=".jpg"):
    folder.mkdir(parents=True, exist_ok=True)
    mask_folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(*size)).save(folder / f"{name}{ext}")
    Image.fromarray((ellipse_mask(*size) * 255).astype(np.uint8)).save(mask_folder / (mask_name or f"{name}.png"))


def test_single_image(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "m", "c")
    assert main(["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png"), "-q"]) == 0
    out = np.asarray(Image.open(tmp_path / "c_harmonized.jpg"))
    assert out.shape == (48, 64, 3)
    assert "1 ok / 0 skipped / 0 failed" in capsys.readouterr().out


def test_folder_resume_and_one_bad_input(tmp_path, capsys):
    src, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    make_composite(src, masks, "a0001_1_2", mask_name="a0001_1.png")  # iHarmony4 naming
    make_composite(src / "sub", masks / "sub", "plain", ext=".png")  # same stem, nested folder
    rgba = np.dstack([textured_image(48, 64), np.full((48, 64), 90, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray((ellipse_mask(48, 64) * 255).astype(np.uint8)).save(masks / "alpha.png")
    args = ["run", str(src), "--masks", str(masks), "-o", str(out), "-q"]
    assert main(args) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == ["a0001_1_2.jpg", "alpha.png", "sub/plain.png"]
    assert (np.asarray(Image.open(out / "alpha.png"))[..., 3] == 90).all(), "alpha not kept"
    assert "3 ok / 0 skipped / 0 failed" in capsys.readouterr().out

    (src / "broken.jpg").write_bytes(b"not an image")
    Image.fromarray((ellipse_mask(48, 64) * 255).astype(np.uint8)).save(masks / "broken.png")
    make_composite(src, masks, "nomask")
    os.remove(masks / "nomask.png")
    make_composite(src, masks, "fresh")
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "1 ok / 3 skipped / 2 failed" in captured.out
    assert "broken.jpg: not a readable image" in captured.err
    assert "nomask.jpg: no mask found" in captured.err
    assert not list(out.rglob("*.part")) and not (out / "broken.jpg").exists()


def test_csv_list_and_wrong_mask_size(tmp_path, capsys):
    make_composite(tmp_path, tmp_path, "a", mask_name="a_mask.png")
    make_composite(tmp_path, tmp_path, "b", mask_name="b_mask.png", size=(40, 64))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "b_mask.png")
    (tmp_path / "list.csv").write_text("composite,mask,output\na.jpg,a_mask.png,a_out.png\nb.jpg,b_mask.png,b_out.png\n")
    assert main(["run", str(tmp_path / "list.csv"), "-o", str(tmp_path / "o"), "-q"]) == 1
    assert (tmp_path / "o" / "a_out.png").exists() and not (tmp_path / "o" / "b_out.png").exists()
    assert "b_mask.png: mask is 10x10 but the image is 64x40" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "x.jpg")]) == 2
    assert "give its mask with --mask" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert main(["run", "x.jpg", "--mask", "m.png", "--backend", "magic"]) == 2
    assert "unknown backend 'magic'" in capsys.readouterr().err


def test_run_needs_no_torch(tmp_path):
    """The default install path: numpy, Pillow and onnxruntime only."""
    make_composite(tmp_path, tmp_path / "m", "c")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from engine.cli import main\n"
            f"sys.exit(main(['run', r'{tmp_path / 'c.jpg'}', '--mask', r'{tmp_path / 'm' / 'c.png'}', '-q']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "backend: onnxruntime (auto" in r.stderr
    assert (tmp_path / "c_harmonized.jpg").exists()


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_answers_without_heavy_imports(flag):
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnxruntime'] = None\n"
            f"from engine.cli import main; main(['{flag}'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and ("fmm-harmonize" in r.stdout or "usage" in r.stdout), r.stderr


def test_auto_choice_and_doctor_agree(capsys, monkeypatch):
    """`auto` picks by the model file, else by whether an engine was built for this GPU; doctor says the same."""
    import engine.backends as backends

    assert backends.choose("runs/x.pt") == ("torch", "a PyTorch checkpoint")
    assert backends.choose("x.engine")[0] == "tensorrt"
    assert backends.choose("x.onnx")[0] == "onnxruntime"
    monkeypatch.setattr(backends, "default_engine_path", lambda: None)
    assert backends.choose() == ("onnxruntime", "no TensorRT or no GPU")
    assert main(["doctor"]) == 0
    lines = [line.split(None, 3) for line in capsys.readouterr().out.splitlines()]
    assert ["harmonize", "run", "takes", "onnxruntime (no TensorRT or no GPU)"] in lines
