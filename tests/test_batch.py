"""`harmonize run`: single image, folders matched by name, CSV lists, resume, failures, exit codes."""
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from conftest import BENCH, ROOT, ellipse_mask, needs_bench, textured_image
from PIL import Image

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
    (tmp_path / "list.csv").write_text("composite,mask,output\na.jpg,a_mask.png,a_out.png\n"
                                       "b.jpg,b_mask.png,b_out.png\n")
    assert main(["run", str(tmp_path / "list.csv"), "-o", str(tmp_path / "o"), "-q"]) == 1
    assert (tmp_path / "o" / "a_out.png").exists() and not (tmp_path / "o" / "b_out.png").exists()
    assert "b_mask.png: mask is 10x10 but the image is 64x40" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "m", "x")
    assert main(["run", str(tmp_path / "x.jpg")]) == 2
    assert "give its mask with --mask" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: --backend's choices are the registry's
        main(["run", "x.jpg", "--mask", "m.png", "--backend", "magic"])
    assert stop.value.code == 2
    assert "invalid choice: 'magic' (choose from 'auto', 'onnxruntime', 'tensorrt', 'torch')" in capsys.readouterr().err


def test_run_needs_no_torch(tmp_path):
    """The default install path: numpy, Pillow and onnxruntime only."""
    make_composite(tmp_path, tmp_path / "m", "c")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from engine.cli import main\n"
            f"sys.exit(main(['run', r'{tmp_path / 'c.jpg'}', '--mask', r'{tmp_path / 'm' / 'c.png'}', '-q']))")
    r = subprocess.run([sys.executable, "-c", code.replace(", '-q'", "")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "backend: onnxruntime (auto" in r.stderr
    assert (tmp_path / "c_harmonized.jpg").exists()


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_answers_without_heavy_imports(flag):
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnxruntime'] = None\n"
            f"from engine.cli import main; main(['{flag}'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and ("fmm-harmonize" in r.stdout or "usage" in r.stdout), r.stderr


# --- No file lost or overwritten, settings checked up front, one clear line per bad input ---

def run(*args):
    return main(["run", *map(str, args), "-q"])


@pytest.fixture
def loads(monkeypatch):
    """Counts model loads, so a test can prove a refused plan never reached the model."""
    import engine.runtime.backends as backends

    calls = []
    real = backends.load
    monkeypatch.setattr(backends, "load", lambda *args, **kw: calls.append(args) or real(*args, **kw))
    return calls


def test_never_writes_over_an_input_or_a_mask(tmp_path, capsys, loads):
    make_composite(tmp_path, tmp_path / "m", "c", ext=".png")
    before = {p: p.read_bytes() for p in (tmp_path / "c.png", tmp_path / "m" / "c.png")}
    for target in (tmp_path / "c.png", tmp_path / "m" / "c.png"):
        assert run(tmp_path / "c.png", "--mask", tmp_path / "m" / "c.png", "-o", target, "--overwrite") == 2
        assert "refusing to write over the" in capsys.readouterr().err
    assert run(tmp_path, "--masks", tmp_path / "m", "-o", tmp_path, "--overwrite") == 2
    assert "output folder is the input folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before and not loads


@pytest.mark.parametrize("output", ["c.png", "./c.png", "m/../c.png", "../here/c.png", "link.png", "m/c.png",
                                    "./m/./c.png", "masklink/c.png"])
def test_relative_dotted_and_symlinked_outputs_never_write_over_an_input(tmp_path, capsys, loads, monkeypatch,
                                                                         output):
    """Run from the picture's folder, as a user does: every spelling of the input's or the mask's path is
    refused as an output."""
    here = tmp_path / "here"
    make_composite(here, here / "m", "c", ext=".png")
    (here / "link.png").symlink_to("c.png")
    (here / "masklink").symlink_to("m")
    monkeypatch.chdir(here)
    before = {p: p.read_bytes() for p in (here / "c.png", here / "m" / "c.png")}
    assert run("c.png", "--mask", "m/c.png", "-o", output, "--overwrite") == 2
    assert "refusing to write over the" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before and not loads


def test_a_symlinked_input_is_still_the_input(tmp_path, capsys, loads, monkeypatch):
    make_composite(tmp_path, tmp_path / "m", "c", ext=".png")
    (tmp_path / "alias.png").symlink_to(tmp_path / "c.png")
    monkeypatch.chdir(tmp_path)
    assert run("alias.png", "--mask", "m/c.png", "-o", "c.png", "--overwrite") == 2
    assert "refusing to write over the composite" in capsys.readouterr().err and not loads


def test_output_folder_for_one_image_is_written_into(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "m", "c")
    (tmp_path / "out").mkdir()
    assert run(tmp_path / "c.jpg", "--mask", tmp_path / "m" / "c.png", "-o", tmp_path / "out") == 0
    assert (tmp_path / "out" / "c.jpg").is_file()
    assert "1 ok / 0 skipped / 0 failed" in capsys.readouterr().out


def test_two_jobs_with_one_output_are_refused(tmp_path, capsys, loads):
    make_composite(tmp_path / "d1", tmp_path / "d1", "x", mask_name="xm.png", ext=".png")
    make_composite(tmp_path / "d2", tmp_path / "d2", "x", mask_name="xm.png", ext=".png")
    (tmp_path / "list.csv").write_text("composite,mask\nd1/x.png,d1/xm.png\nd2/x.png,d2/xm.png\n")
    assert run(tmp_path / "list.csv", "-o", tmp_path / "o") == 2
    assert "would both be written to" in capsys.readouterr().err
    src, masks = tmp_path / "in", tmp_path / "masks"
    make_composite(src, masks, "x", ext=".jpg")
    make_composite(src, masks, "x", ext=".png")
    assert run(src, "--masks", masks, "-o", tmp_path / "o2", "--format", "png") == 2
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists() and not loads


def test_an_output_folder_inside_the_inputs_is_not_read_as_input(tmp_path, capsys):
    src, masks = tmp_path / "in", tmp_path / "in" / "masks"
    make_composite(src, masks, "a")
    args = (src, "--masks", masks, "-o", src / "out")
    assert run(*args) == 0
    assert "1 ok / 0 skipped / 0 failed" in capsys.readouterr().out
    assert run(*args) == 0
    assert "0 ok / 1 skipped / 0 failed" in capsys.readouterr().out
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*.*")) == ["a.jpg", "masks/a.png", "out/a.jpg"]


def test_csv_rows_bom_outside_outputs_and_missing_cells(tmp_path, capsys):
    make_composite(tmp_path, tmp_path, "a", mask_name="a_mask.png")
    make_composite(tmp_path, tmp_path, "b", mask_name="b_mask.png")
    # As a spreadsheet saves it: a byte-order mark, spaces after the commas, CRLF line ends.
    rows = ["composite, mask, output", "a.jpg, a_mask.png, a_out.png", "b.jpg, b_mask.png, ../escaped.png",
            "b.jpg, , b2.png", ", a_mask.png, a2.png", "a.jpg"]
    (tmp_path / "list.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
    assert run(tmp_path / "list.csv", "-o", tmp_path / "o") == 1
    err = capsys.readouterr()
    assert "1 ok / 0 skipped / 4 failed" in err.out
    assert (tmp_path / "o" / "a_out.png").is_file() and not (tmp_path / "escaped.png").exists()
    assert "is outside" in err.err and "--outputs-anywhere" in err.err
    assert "list.csv:4: no mask in this row" in err.err and "list.csv:5: no composite in this row" in err.err
    assert "list.csv:6: no mask in this row" in err.err
    assert run(tmp_path / "list.csv", "-o", tmp_path / "o", "--outputs-anywhere") == 1
    assert (tmp_path / "escaped.png").is_file()
    (tmp_path / "bad.csv").write_bytes(b"composite;mask\n")
    assert run(tmp_path / "bad.csv", "-o", tmp_path / "o") == 2
    assert "its first line has 'composite;mask'" in capsys.readouterr().err


def test_a_stale_part_file_from_a_killed_run_is_removed(tmp_path, capsys):
    make_composite(tmp_path / "in", tmp_path / "m", "c")
    stale = tmp_path / "o" / ".c.jpg.k3x9_q.part"
    stale.parent.mkdir()
    stale.write_bytes(b"")
    other = tmp_path / "o" / ".notours.jpg.aaaa.part"
    other.write_bytes(b"")
    assert run(tmp_path / "in", "--masks", tmp_path / "m", "-o", tmp_path / "o") == 0
    assert not stale.exists() and other.exists() and (tmp_path / "o" / "c.jpg").is_file()


def test_too_large_and_out_of_memory_fail_one_file_each(tmp_path, capsys, monkeypatch):
    from engine.runtime.backends.base import Backend

    src, masks = tmp_path / "in", tmp_path / "m"
    make_composite(src, masks, "big", size=(60, 80))
    make_composite(src, masks, "oom")
    make_composite(src, masks, "small", size=(20, 30))
    finish = Backend.finish

    def low_memory(self, prepared, answer, strength=1.0):  # the full-resolution step runs out of memory
        if prepared.mask.shape == (48, 64):
            raise MemoryError
        return finish(self, prepared, answer, strength)

    monkeypatch.setattr(Backend, "finish", low_memory)
    assert run(src, "--masks", masks, "-o", tmp_path / "o", "--max-megapixels", "0.004") == 1
    err = capsys.readouterr()
    assert "1 ok / 0 skipped / 2 failed" in err.out
    assert "big.jpg: 80x60 is 0 megapixels, over the limit of 0 (it would need" in err.err
    assert "oom.jpg: out of memory" in err.err
    assert (tmp_path / "o" / "small.jpg").is_file()


def test_settings_are_checked_before_the_model_loads(tmp_path, capsys, loads):
    make_composite(tmp_path, tmp_path / "m", "c")
    with pytest.raises(SystemExit) as exc:
        run(tmp_path / "c.jpg", "--mask", tmp_path / "m" / "c.png", "--strength", "2")
    assert exc.value.code == 2 and "2 is not within 0..1" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert run(tmp_path, "--masks", tmp_path / "m", "-o", tmp_path / "file" / "out") == 2
    err = capsys.readouterr().err
    assert err.count("cannot write outputs there") == 1 and not loads
    assert run(tmp_path / "c.jpg", "--mask", tmp_path / "m" / "c.png", "-o", tmp_path / "out.png") == 0
    assert len(loads) == 1, "the counter missed the model load of a run that went ahead"


def test_each_failure_is_reported_once_without_repeating_its_path(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "m", "broken")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert run(tmp_path / "broken.jpg", "--mask", tmp_path / "m" / "broken.png") == 1
    err = capsys.readouterr().err
    assert err.count("broken.jpg") == 1 and "not a readable image" in err


def test_an_interrupted_run_says_what_it_finished(tmp_path, capsys, monkeypatch):
    from engine.runtime.backends.base import Backend

    src, masks = tmp_path / "in", tmp_path / "m"
    for name in "abcd":
        make_composite(src, masks, name)
    answer, calls = Backend.answer, []

    def interrupted(self, prepared):  # Ctrl-C while the network runs on the third picture
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return answer(self, prepared)

    monkeypatch.setattr(Backend, "answer", interrupted)
    assert run(src, "--masks", masks, "-o", tmp_path / "o") == 130
    assert "interrupted: 2 ok / 0 skipped / 0 failed, 2 not started" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize("verb", [["train", "--out", "x.pt"], ["average", "a.pt", "-o", "b.pt"],
                                  ["export", "-o", "x.onnx"]])
def test_training_verbs_without_their_extra_say_which(verb):
    code = ("import sys; sys.modules['torch'] = None\n"
            f"from engine.cli import main; sys.exit(main({verb!r}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "pip install '.[" in r.stderr and "(in the fmm-harmonize folder)" in r.stderr


def test_urls_in_and_out_give_the_local_runs_files(tmp_path, capsys):
    """Inputs, a CSV and outputs at fsspec URLs (memory:// here, s3:// and the like alike): the same bytes
    as the run on local paths, written in one put each."""
    upath = pytest.importorskip("upath", reason="universal-pathlib (the 'ray' extra) is not installed")
    make_composite(tmp_path, tmp_path, "a", mask_name="a_mask.png")
    make_composite(tmp_path, tmp_path, "b", mask_name="b_mask.png", ext=".png")
    listing = "composite,mask\na.jpg,a_mask.png\nb.png,b_mask.png\n"
    (tmp_path / "list.csv").write_text(listing)
    assert run(tmp_path / "list.csv", "-o", tmp_path / "local") == 0
    base = f"memory:///fmm-test-{uuid.uuid4().hex}"  # memory:// lives as long as the process: a place of its own
    remote = upath.UPath(f"{base}/in")
    for name in ("a.jpg", "a_mask.png", "b.png", "b_mask.png"):
        (remote / name).write_bytes((tmp_path / name).read_bytes())
    (remote / "list.csv").write_text(listing)
    capsys.readouterr()
    assert run(f"{base}/in/list.csv", "-o", f"{base}/out") == 0
    assert "2 ok / 0 skipped / 0 failed" in capsys.readouterr().out
    out = upath.UPath(f"{base}/out")
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png"]
    for name in ("a.jpg", "b.png"):
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert run(f"{base}/in/list.csv", "-o", f"{base}/out") == 0
    assert "0 ok / 2 skipped / 0 failed" in capsys.readouterr().out
    (remote / "b.png").write_bytes(b"broken")
    assert run(f"{base}/in/list.csv", "-o", f"{base}/out", "--overwrite") == 1
    assert "b.png: not a readable image" in capsys.readouterr().err


# --- Messages that say what is wrong, before the model loads where they can ---

def test_a_missing_input_is_named_as_missing(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nothere") + "/", "--masks", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nothere: no such file or folder" in err and "--mask MASK" not in err


def test_masks_folder_serves_a_single_image(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "masks", "dog")
    assert main(["run", str(tmp_path / "dog.jpg"), "--masks", str(tmp_path / "masks"), "-q"]) == 0
    assert (tmp_path / "dog_harmonized.jpg").exists()
    (tmp_path / "masks" / "dog.png").unlink()
    assert main(["run", str(tmp_path / "dog.jpg"), "--masks", str(tmp_path / "masks"), "--overwrite"]) == 2
    assert f"dog.jpg: no mask for it in {tmp_path / 'masks'}" in capsys.readouterr().err


def test_an_output_that_is_no_image_name_is_refused_before_the_model_loads(tmp_path, capsys, caplog):
    make_composite(tmp_path, tmp_path / "m", "c")
    with caplog.at_level("INFO", logger="engine"):
        assert main(["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png"), "-o",
                     str(tmp_path / "newdir")]) == 2
    err = capsys.readouterr().err
    assert "newdir: not an image file name we can write (no suffix" in err and "end -o with /" in err
    assert not any("backend:" in r.message for r in caplog.records), "the model loaded before the refusal"
    assert not (tmp_path / "newdir").exists()


def test_an_empty_mask_is_named(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "m", "c")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "m" / "c.png")
    assert main(["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png"), "-q"]) == 1
    assert f"FAILED {tmp_path / 'c.jpg'}: {tmp_path / 'm' / 'c.png'}: mask is empty" in capsys.readouterr().err


def test_a_typo_gets_the_verbs_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "x.jpg", "--strenght", "0.5"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: harmonize run")
    assert "harmonize run: error: unrecognized arguments: --strenght 0.5" in err


def test_quiet_prints_only_failures_and_the_summary(tmp_path, capsys, caplog):
    make_composite(tmp_path, tmp_path / "m", "c")
    with caplog.at_level("INFO"):
        assert main(["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png"), "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == "1 ok / 0 skipped / 0 failed\n" and out.err == ""
    assert not [r for r in caplog.records if r.name == "engine" and r.levelno < 30], "info lines under -q"


def test_a_run_says_its_rate_after_the_model_loaded(tmp_path, caplog):
    make_composite(tmp_path, tmp_path / "m", "c")
    with caplog.at_level("INFO"):
        assert main(["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png")]) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("harmonized:")]
    assert len(said) == 1 and said[0].startswith("harmonized: 1 in ") and said[0].endswith(" a second"), said


def test_skips_say_how_to_redo_them(tmp_path, capsys):
    make_composite(tmp_path, tmp_path / "m", "c")
    args = ["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png"), "-q"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--strength", "0.5"]) == 0
    assert capsys.readouterr().out == ("0 ok / 1 skipped / 0 failed\n(1 output existed already and was left alone; "
                                       "--overwrite redoes them)\n")


def test_bmp_out(tmp_path):
    make_composite(tmp_path, tmp_path / "m", "c")
    assert main(["run", str(tmp_path / "c.jpg"), "--mask", str(tmp_path / "m" / "c.png"), "--format", "bmp",
                 "-o", str(tmp_path / "o") + "/", "-q"]) == 0
    assert Image.open(tmp_path / "o" / "c.bmp").format == "BMP"


def test_install_lines_work_from_a_clone(monkeypatch):
    from engine.errors import MissingDependencyError, require
    from engine.paths import as_path

    with pytest.raises(MissingDependencyError, match=r"install it with: pip install '\.\[train\]' \(in the fmm-harmo"):
        require("no_such_module_here", "train")
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(MissingDependencyError, match=r"needs universal-pathlib and s3fs; install with: pip install "
                       r"'\.\[urls\]' .*then: pip install s3fs"):
        as_path("s3://bucket/list.csv")


# --- The batch pipeline: what it holds, and that it makes the pictures the plain path makes ---

def test_at_most_one_picture_more_than_the_cores_is_decoded_at_once(tmp_path, monkeypatch):
    """Bounded memory: the loaders (one a core) wait for the writers once cores + 1 pictures are decoded."""
    import threading

    import engine.runtime.batch as batch

    src, masks = tmp_path / "in", tmp_path / "m"
    for i in range(8):
        make_composite(src, masks, f"c{i}")
    lock, live, most = threading.Lock(), [0], [0]
    load, write = batch._load, batch.write_image

    def counted_load(*args):
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
        return load(*args)

    def counted_write(*args):
        try:
            return write(*args)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(batch, "_load", counted_load)
    monkeypatch.setattr(batch, "write_image", counted_write)
    assert run(src, "--masks", masks, "-o", tmp_path / "o") == 0
    bound = min((os.cpu_count() or 1) + 1, 8)
    assert most[0] == bound and live[0] == 0, f"{most[0]} pictures decoded at once, expected {bound}"


def test_a_batch_keeps_openblas_to_one_thread_and_puts_the_process_back_after(tmp_path, monkeypatch, openblas):
    """The batch's threads are its parallelism: while it runs numpy's OpenBLAS has one thread and Pillow keeps
    freed blocks; after it both are as they were, for a caller that goes on in the same process."""
    from engine.runtime.backends.base import Backend

    get, _ = openblas
    blocks = Image.core.get_blocks_max()
    seen, answer = [], Backend.answer

    def watched(self, prepared):
        seen.append((get(), Image.core.get_blocks_max()))
        return answer(self, prepared)

    monkeypatch.setattr(Backend, "answer", watched)
    make_composite(tmp_path / "in", tmp_path / "m", "c")
    assert run(tmp_path / "in", "--masks", tmp_path / "m", "-o", tmp_path / "o") == 0
    assert seen and seen[0][0] == 1 and seen[0][1] >= 4
    assert get() == 2 and Image.core.get_blocks_max() == blocks

    import engine.runtime.batch as batch

    def broken(*args):  # a fault no batch expects: it reaches the caller, and the process is put back all the same
        raise TypeError("a bug")

    monkeypatch.setattr(batch, "write_image", broken)
    with pytest.raises(TypeError, match="a bug"):
        run(tmp_path / "in", "--masks", tmp_path / "m", "-o", tmp_path / "o2")
    assert get() == 2 and Image.core.get_blocks_max() == blocks


def test_batches_that_overlap_in_one_process_put_it_back_only_when_the_last_ends(openblas):
    """Two threads' batches: the first to end must not undo the settings under the one still running, nor the
    last leave the first's in place."""
    from engine.runtime.batch import _batch_settings

    get, _ = openblas
    blocks = Image.core.get_blocks_max()
    first = _batch_settings(2)
    second = _batch_settings(4)
    assert get() == 1 and Image.core.get_blocks_max() >= 16
    first()
    assert get() == 1 and Image.core.get_blocks_max() >= 16, "the second batch still runs"
    second()
    assert get() == 2 and Image.core.get_blocks_max() == blocks


def reference_harmonize(backend, rgb: np.ndarray, m8: np.ndarray) -> np.ndarray:
    """The full-resolution path written plainly, whole arrays at once: what `run` must reproduce."""
    from PIL import Image

    size = backend.size
    mask = m8.astype(np.float32) / 255.0
    small = Image.fromarray(rgb).resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    image = np.ascontiguousarray(np.asarray(small, np.float32).transpose(2, 0, 1)[None] / 255.0)
    sm = np.asarray(Image.fromarray(np.round(mask * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                    np.float32)
    binary = sm > 127.5
    binary = binary if binary.any() else sm >= sm.max()
    params = backend.infer(image, binary.astype(np.float32)[None, None])[0]
    if backend.lab_mix:
        from engine.runtime.color import lab_to_rgb, move_lab_statistics, rgb_to_lab

        fg, pixels = (mask > 0.5).ravel(), rgb.reshape(-1, 3)
        f_idx, b_idx = np.flatnonzero(fg), np.flatnonzero(~fg)
        f = pixels[f_idx[:: max(1, len(f_idx) // 65536)]]
        b = pixels[b_idx[:: max(1, len(b_idx) // 65536)]]
        moved = lab_to_rgb(move_lab_statistics(rgb_to_lab(f), rgb_to_lab(b), 0.5))
        a, *_ = np.linalg.lstsq(np.concatenate([f / 255.0, np.ones((len(f), 1))], 1), moved / 255.0, rcond=None)
        params = (1 - backend.lab_mix) * params + backend.lab_mix * a.T.reshape(12).astype(np.float32)
    a = np.asarray(params, np.float32).reshape(3, 4)
    x = rgb.astype(np.float32)
    y = np.clip(x @ a[:, :3].T + a[:, 3] * 255.0, 0, 255)
    return np.clip(x + mask[..., None] * (y - x) + 0.5, 0, 255).astype(np.uint8)


@needs_bench
def test_run_makes_the_plain_paths_pictures_on_the_bench(tmp_path):
    """Every output of the pipelined batch is the plain whole-array computation's: the background bit for bit,
    the object within one level (Pillow applies the batch's colour map and rounds it before blending), and
    nearly every sample exactly."""
    from engine.runtime.backends import load
    from engine.training.datasets import read_manifest

    assert main(["run", str(BENCH / "MANIFEST.csv"), "-o", str(tmp_path), "--format", "png", "-q"]) == 0
    with load("onnxruntime") as backend:
        for t in read_manifest(BENCH):
            rgb = np.asarray(Image.open(t.composite).convert("RGB"))
            m8 = np.asarray(Image.open(t.mask).convert("L"))
            got = np.asarray(Image.open(tmp_path / f"{t.composite.stem}.png").convert("RGB"))
            want = reference_harmonize(backend, rgb, m8)
            assert np.array_equal(got[m8 == 0], rgb[m8 == 0]), t.name
            diff = np.abs(got.astype(int) - want)
            assert diff.max() <= 1 and np.count_nonzero(diff) < 0.01 * np.count_nonzero(m8) * 3, \
                (t.name, diff.max(), np.count_nonzero(diff) / (3 * np.count_nonzero(m8)))
