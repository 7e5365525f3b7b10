"""The installed plug-in in real GIMPs (3.0 from Debian trixie, 3.2 from forky, each in a chroot; gimp-console,
PDB call), per mask source. `harmonize gimp install` finds the profile each GIMP made for itself.

CI builds the chroots with .ci/gimp-chroot.sh and sets FMM_REQUIRE_GIMP=1 and FMM_GIMP_CHROOTS, so there
these tests cannot skip; elsewhere each chroot that is missing skips and says how to build it.
"""
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ellipse_mask, scene_photo
from PIL import Image

from engine.gimp.install import find_profiles, install
from engine.gimp.server import BackendPool, make_server
from engine.runtime.backends import load

CHROOTS = [Path(p) for p in os.environ.get("FMM_GIMP_CHROOTS", "/var/cache/fmm/gimp-trixie:/var/cache/fmm/gimp-forky")
           .split(":")]
REQUIRED = os.environ.get("FMM_REQUIRE_GIMP") == "1"
pytestmark = pytest.mark.gimp
PHOTO_H, PHOTO_W, OBJ_H, OBJ_W = 90, 120, 40, 50
# Run inside GIMP: what the PDB says of the installed procedure, as <work>/procedure.json.
PROCEDURE = """
import json, os
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp
proc = Gimp.get_pdb().lookup_procedure("python-fu-harmonize-layer")
args = {p.name: {"nick": p.get_nick(), "type": p.value_type.name, "minimum": getattr(p, "minimum", None),
                 "maximum": getattr(p, "maximum", None)} for p in proc.get_arguments()}
json.dump({"label": proc.get_menu_label(), "paths": proc.get_menu_paths(), "args": args},
          open(os.path.join(os.environ["FMM_WORK"], "procedure.json"), "w"))
"""


def console(chroot: Path) -> str | None:
    """The chroot's gimp-console-3.x, as a path inside it."""
    found = sorted((chroot / "usr" / "bin").glob("gimp-console-3.*"))
    return f"/usr/bin/{found[-1].name}" if found else None


@pytest.fixture(scope="module", params=CHROOTS, ids=[c.name for c in CHROOTS])
def gimp_env(request, monkeypatch_module):
    chroot = request.param
    if console(chroot) is None or os.geteuid() != 0:
        if REQUIRED:
            pytest.fail(f"FMM_REQUIRE_GIMP=1 but no GIMP 3 in {chroot} (or not root)")
        pytest.skip(f"no GIMP 3 chroot at {chroot} (build it as root with: bash .ci/gimp-chroot.sh {chroot})")
    work = chroot / "tmp" / f"fmmtest-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)  # the engine's socket goes only in a folder of the user's own
    srv = make_server(BackendPool("onnxruntime"), str(work / "engine.sock"))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    inside = f"/tmp/{work.name}"
    # A home of this run's own: GIMP makes its profile there on a first start, and the installer must find
    # it where this GIMP reads it (GIMP/3.0 or GIMP/3.2) as it would in a user's home.
    gimp(chroot, inside, "--quit")
    monkeypatch_module.setenv("HOME", str(work / "home"))
    monkeypatch_module.delenv("XDG_CONFIG_HOME", raising=False)
    profiles = find_profiles()
    assert [p.path.name for p in profiles] == [console(chroot).rsplit("-", 1)[1]], profiles
    install(profiles[0].path, python="/nonexistent/python", address=f"{inside}/engine.sock")
    shutil.copyfile(ROOT / "tests" / "gimp_batch.py", work / "gimp_batch.py")
    yield chroot, work, inside
    srv.shutdown()
    srv.server_close()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def gimp(chroot: Path, inside: str, *args: str) -> subprocess.CompletedProcess:
    """gimp-console in the chroot with the run's own home."""
    cmd = ["chroot", str(chroot), "env", f"HOME={inside}/home", f"FMM_WORK={inside}", console(chroot), "-i", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def run_case(env, source: str, offsets, precision: str | None = None):
    chroot, work, inside = env
    photo = scene_photo(PHOTO_H, PHOTO_W, seed=5)
    ox, oy = offsets
    target = np.full((OBJ_H, OBJ_W, 3), 128, np.uint8)
    ys = slice(max(oy, 0), min(oy + OBJ_H, PHOTO_H))
    xs = slice(max(ox, 0), min(ox + OBJ_W, PHOTO_W))
    target[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox] = photo[ys, xs]
    pasted = np.clip(target * np.array([0.5, 0.65, 1.25]), 0, 255).astype(np.uint8)
    mask = (ellipse_mask(OBJ_H, OBJ_W) * 255).astype(np.uint8)
    Image.fromarray(photo).save(work / "photo.png")
    Image.fromarray(np.dstack([pasted, mask]), "RGBA").save(work / "object.png")
    Image.fromarray(mask).save(work / "mask.png")
    (work / "case.json").write_text(json.dumps({"source": source, "offsets": list(offsets), "precision": precision}))
    for f in ("result.json", "new.rgba", "source.rgba", "new.native", "source.native"):
        (work / f).unlink(missing_ok=True)
    r = gimp(chroot, inside, "--batch-interpreter=python-fu-eval", "-b", f"exec(open('{inside}/gimp_batch.py').read())",
             "--quit")
    assert (work / "result.json").exists(), f"GIMP did not finish the batch:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads((work / "result.json").read_text()), mask, target


@pytest.mark.parametrize("offsets", [(40, 30), (-10, 55)], ids=["inside", "partly outside"])
@pytest.mark.parametrize("source", ["alpha", "layer mask", "selection"])
def test_real_gimp_harmonize_layer(gimp_env, source, offsets):
    work = gimp_env[1]
    result, mask, target = run_case(gimp_env, source, offsets)
    assert result["status"] == "success", result
    assert result["layers"][:2] == ["object.png (harmonized, CPU)", "object.png"], result["layers"]
    assert result["new_offsets"] == list(offsets) and result["new_size"] == [OBJ_W, OBJ_H]
    assert result["has_mask"] == (source == "layer mask")
    assert result["source_unchanged"] and result["photo_unchanged"]
    new = np.frombuffer((work / "new.rgba").read_bytes(), np.uint8).reshape(OBJ_H, OBJ_W, 4)
    src = np.frombuffer((work / "source.rgba").read_bytes(), np.uint8).reshape(OBJ_H, OBJ_W, 4)
    ox, oy = offsets
    visible = np.zeros((OBJ_H, OBJ_W), bool)
    visible[max(0, -oy):PHOTO_H - oy, max(0, -ox):PHOTO_W - ox] = True
    fg = (mask > 0) & visible
    assert np.array_equal(new[..., 3], src[..., 3]), "alpha changed"
    assert np.array_equal(new[~fg][:, :3], src[~fg][:, :3]), "pixels outside the object changed"
    # The reference, composed here without GIMP or the plug-in: the photo with the object's pixels
    # inside its mask, harmonized by the engine directly.
    photo = np.asarray(Image.open(work / "photo.png").convert("RGB"))
    composite, canvas_mask = photo.copy(), np.zeros(photo.shape[:2], np.float32)
    ys, xs = slice(max(oy, 0), min(oy + OBJ_H, PHOTO_H)), slice(max(ox, 0), min(ox + OBJ_W, PHOTO_W))
    local = (slice(ys.start - oy, ys.stop - oy), slice(xs.start - ox, xs.stop - ox))
    composite[ys, xs][fg[local]] = src[local][fg[local]][:, :3]
    canvas_mask[ys, xs] = fg[local]
    with load("onnxruntime") as backend:
        want = backend.harmonize(composite, canvas_mask)[ys, xs]
    assert np.array_equal(new[local][fg[local]][:, :3], want[fg[local]]), f"{source}: not the engine's answer"
    err = lambda a: np.abs(a[fg][:, :3].astype(float) - target[fg]).mean()  # noqa: E731
    assert err(new) < err(src), f"{source}: error to the scene {err(new):.1f}, pasted {err(src):.1f}"


@pytest.mark.parametrize("precision, dtype, bpp", [("U16_NON_LINEAR", np.uint16, 8), ("FLOAT_LINEAR", np.float32, 16),
                                                   ("U16_LINEAR", np.uint16, 8)])
def test_real_gimp_keeps_the_layers_precision(gimp_env, precision, dtype, bpp):
    """A 16-bit integer or 32-bit float image: the new layer has the source's precision, every sample outside
    the object is the source's at that precision, and inside it moved by more than 8 bits can say."""
    work = gimp_env[1]
    result, mask, _ = run_case(gimp_env, "alpha", (40, 30), precision)
    assert result["status"] == "success", result
    assert result["precision_after"] == f"GIMP_PRECISION_{precision}", result
    assert result["new_bpp"] == result["source_bpp"] == bpp, result
    assert result["source_native_unchanged"] and result["photo_unchanged"]
    new = np.frombuffer((work / "new.native").read_bytes(), dtype).reshape(OBJ_H, OBJ_W, 4)
    src = np.frombuffer((work / "source.native").read_bytes(), dtype).reshape(OBJ_H, OBJ_W, 4)
    fg = mask > 0
    assert new[~fg].tobytes() == src[~fg].tobytes(), "pixels outside the object changed at the layer's precision"
    assert new[..., 3].tobytes() == src[..., 3].tobytes(), "alpha changed"
    one_step = 257 if dtype == np.uint16 else 1 / 255
    assert np.abs(new[fg][:, :3].astype(float) - src[fg][:, :3]).mean() > 3 * one_step, "the object did not move"
    if precision == "U16_NON_LINEAR":  # what 8 bits would give: multiples of 257
        assert np.count_nonzero(new[fg][:, :3] % 257) > new[fg][:, :3].size // 2, "quantized to 8 bits"
    else:
        assert len(np.unique(new[fg][:, 0])) > 2 * len(np.unique(np.round(new[fg][:, 0].astype(float) / one_step)))


def test_real_gimp_reports_engine_errors(gimp_env):
    result, _, _ = run_case(gimp_env, "alpha", (200, 200))  # entirely outside the canvas
    assert not result["status"] == "success"
    assert "outside the canvas" in result.get("error", ""), result
    assert len(result["layers"]) == result["layers_before"], "a layer was added despite the error"


def test_real_gimp_shows_an_engine_crash_as_a_message(gimp_env, monkeypatch):
    """A failure that is no HarmonizeError (here a RuntimeError as a CUDA call raises) reaches GIMP as an
    execution error with its text, and the image is left as it was."""
    from engine.runtime.backends.base import Backend

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Backend, "harmonize", crash)  # the test's server runs in this process
    result, _, _ = run_case(gimp_env, "alpha", (40, 30))
    assert result["status"] != "success"
    assert "RuntimeError: CUDA error: an illegal memory access" in result.get("error", ""), result
    assert len(result["layers"]) == result["layers_before"], "a layer was added despite the error"


def test_real_gimp_menu_item_and_dialog_controls(gimp_env):
    """What GIMP shows: "Harmonize Layer..." under Filters (the "..." of an item that opens a dialog),
    Strength a double from 0 to 1 (which the dialog shows as a slider), and a mnemonic on every control,
    none taken by the dialog's own buttons (_OK, _Cancel, _Reset, _Load..., _Save..., _Help)."""
    chroot, work, inside = gimp_env
    (work / "procedure.py").write_text(PROCEDURE)
    r = gimp(chroot, inside, "--batch-interpreter=python-fu-eval", "-b", f"exec(open('{inside}/procedure.py').read())",
             "--quit")
    assert (work / "procedure.json").exists(), f"GIMP did not finish the batch:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    found = json.loads((work / "procedure.json").read_text())
    assert found["label"].replace("_", "") == "Harmonize Layer..." and found["paths"] == ["<Image>/Filters"]
    strength, device = found["args"]["strength"], found["args"]["device"]
    assert (strength["type"], strength["minimum"], strength["maximum"]) == ("gdouble", 0.0, 1.0)
    assert device["type"] == "gchararray"
    mnemonics = [label[label.index("_") + 1].lower() for label in (found["label"], strength["nick"], device["nick"])
                 if label.count("_") == 1]
    assert len(mnemonics) == 3, f"every label needs one mnemonic: {found}"
    assert not set(mnemonics[1:]) & set("ocrlsh"), f"a control's mnemonic is a dialog button's: {mnemonics}"
