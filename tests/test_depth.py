"""16-bit pictures stay 16-bit: PNG and TIFF of 16 bits per sample come back at 16 bits, every sample
outside the object unchanged and the colour map (computed from the 8-bit reduction, as for any picture)
applied to the full-precision samples inside; what cannot keep its depth is refused by name. 8-bit pictures
are computed exactly as before."""
import hashlib

import numpy as np
import pytest
from conftest import scene_photo
from PIL import Image, ImageOps

from engine.cli import main
from engine.errors import InputError, MissingDependencyError
from engine.imageio import _orient, read_image
from engine.runtime.fullres import apply_affine, blend

tifffile = pytest.importorskip("tifffile", reason="the 16bit extra is not installed")
imagecodecs = pytest.importorskip("imagecodecs", reason="the 16bit extra is not installed")

H, W = 96, 128


def composite16(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit scene with a colour-cast object whose low bytes carry detail, and its feathered mask."""
    rng = np.random.default_rng(seed)
    rgb = scene_photo(H, W, seed).astype(np.float64) * 257 + rng.integers(0, 257, (H, W, 3))
    yy, xx = np.mgrid[0:H, 0:W]
    inside = ((yy - H * 0.55) / (H * 0.27)) ** 2 + ((xx - W * 0.45) / (W * 0.22)) ** 2
    mask = (np.clip((1.1 - inside) / 0.25, 0, 1) * 255).astype(np.uint8)
    rgb = np.where(mask[..., None] > 0, rgb * np.array([0.55, 0.75, 1.3]), rgb)
    return np.clip(rgb, 0, 65535).astype(np.uint16), mask


def reference(samples: np.ndarray, mask: np.ndarray, gray: bool) -> np.ndarray:
    """What the output must hold, in float64: the shipped model's map for the 8-bit reduction (the high
    bytes, as Pillow reads such a file), applied to the 16-bit samples, weighted by the mask."""
    from engine.runtime.backends import load

    rgb = np.repeat(samples[..., :1], 3, 2) if gray else samples[..., :3]
    with load("onnxruntime") as backend:
        a = backend.answer(backend.prepare((rgb >> 8).astype(np.uint8), mask)).astype(np.float64).reshape(3, 4)
    x = rgb.astype(np.float64)
    y = np.clip((x / 65535) @ a[:, :3].T + a[:, 3], 0, 1) * 65535
    out = np.floor(x + (y - x) * (mask[..., None] / 255.0) + 0.5)
    if gray:  # Pillow's luma weights, as an 8-bit grayscale picture is written
        out = np.floor((out @ np.array([19595, 38470, 7471]) + 32768) / 65536)[..., None]
    return np.concatenate([out, samples[..., 3 if not gray else 1:]], -1) if samples.shape[2] in (2, 4) else out


def stored(path) -> np.ndarray:
    """A file's samples (H, W, C) as the file holds them, read by the 16bit extra's own libraries."""
    if path.suffix == ".png":
        a = imagecodecs.png_decode(path.read_bytes())
    else:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            a = page.asarray()
            a = np.moveaxis(a, 0, -1) if page.axes.startswith("S") else a
    return a[..., None] if a.ndim == 2 else a


LAYOUTS = {  # name: (suffix, channels kept from RGB + alpha, writer options)
    "png-rgb": (".png", "rgb", {}), "png-rgba": (".png", "rgba", {}), "png-gray": (".png", "g", {}),
    "png-gray-alpha": (".png", "ga", {}), "tiff-rgb": (".tif", "rgb", {}), "tiff-rgba": (".tif", "rgba", {}),
    "tiff-gray": (".tif", "g", {}), "tiff-planar-lzw-tiled": (".tif", "rgb", dict(
        planarconfig="separate", compression="lzw", predictor=True, tile=(32, 32))),
}


def write_input(path, samples: np.ndarray, options: dict) -> None:
    samples = np.ascontiguousarray(samples)
    if path.suffix == ".png":
        path.write_bytes(imagecodecs.png_encode(samples[..., 0] if samples.shape[2] == 1 else samples))
        return
    gray = samples.shape[2] <= 2
    if options.get("planarconfig") == "separate":
        samples = np.moveaxis(samples, -1, 0)
    tifffile.imwrite(path, samples[..., 0] if samples.shape[-1] == 1 else samples, metadata=None,
                     photometric="minisblack" if gray else "rgb",
                     extrasamples=("unassalpha",) if samples.shape[-1] in (2, 4) else None, **options)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_16_bit_picture_comes_back_16_bit_background_unchanged_object_mapped(tmp_path, layout):
    suffix, channels, options = LAYOUTS[layout]
    rgb, mask = composite16()
    alpha = np.random.default_rng(1).integers(0, 65536, (H, W, 1)).astype(np.uint16)
    samples = {"rgb": rgb, "rgba": np.dstack([rgb, alpha]), "g": rgb[..., 1:2],
               "ga": np.dstack([rgb[..., 1:2], alpha])}[channels]
    src, m, out = tmp_path / f"c{suffix}", tmp_path / "m.png", tmp_path / f"out{suffix}"
    write_input(src, samples, options)
    Image.fromarray(mask).save(m)
    assert main(["run", str(src), "--mask", str(m), "-o", str(out), "-q"]) == 0
    got = stored(out)
    assert got.dtype == np.uint16 and got.shape == samples.shape
    assert np.array_equal(got[mask == 0], samples[mask == 0]), "a background sample changed"
    if got.shape[2] in (2, 4):
        assert np.array_equal(got[..., -1], samples[..., -1]), "the alpha changed"
    fg = mask > 0
    assert np.abs(got[fg].astype(np.int64) - samples[fg]).max() > 2000, "the object did not move"
    expected = reference(samples, mask, channels in ("g", "ga"))
    assert np.abs(got - expected).max() <= 1, "not the 8-bit map applied to the 16-bit samples"
    low = got[fg][..., 0].astype(np.int64)
    assert len(np.unique(low % 257)) > 200, "the object's samples were computed at 8 bits"


def test_16_bit_refused_where_it_cannot_be_kept(tmp_path, capsys, monkeypatch):
    rgb, mask = composite16()
    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(rgb))
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert main(["run", str(tmp_path / "c.png"), "--mask", str(tmp_path / "m.png"), "-o",
                 str(tmp_path / "out.jpg"), "-q"]) == 1
    assert "out.jpg: the picture has 16 bits per sample and JPEG holds 8; write PNG or TIFF" in capsys.readouterr().err
    assert not (tmp_path / "out.jpg").exists()
    tifffile.imwrite(tmp_path / "f.tif", rgb[..., 0].astype(np.float32) / 65535, metadata=None)
    with pytest.raises(InputError, match=r"f\.tif: a TIFF of float32 samples"):
        read_image(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "k.tif", np.dstack([rgb, rgb[..., :1]]), photometric="separated", metadata=None)
    with pytest.raises(InputError, match=r"k\.tif: a TIFF of uint16 samples, SEPARATED"):
        read_image(tmp_path / "k.tif")

    def missing(module, extra=None):
        raise MissingDependencyError(f"{module} is not installed; install it with: pip install '.[{extra}]'")

    monkeypatch.setattr("engine.imageio.require", missing)
    with pytest.raises(InputError, match=r"c\.png: 16 bits per sample, which would be cut to 8 .*\[16bit\]"):
        read_image(tmp_path / "c.png")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_16_bit_samples_is_pillows(tmp_path, orientation):
    a = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif.tobytes())
    assert np.array_equal(_orient(a, orientation), np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png"))))
    deep = a.astype(np.uint16) * 257 + 3
    tifffile.imwrite(tmp_path / "o.tif", deep, photometric="rgb", metadata=None,
                     extratags=[(0x0112, "H", 1, orientation, True)])
    assert np.array_equal(read_image(tmp_path / "o.tif").rgb, _orient(deep, orientation))


def test_the_8_bit_full_resolution_step_is_bit_for_bit_as_before():
    """The colour map and the blend on an 8-bit picture, hashed: the digest is the one the code before
    16-bit support gave (commit 50a9103). The map's entries are multiples of 1/32, so the products are
    exact and no BLAS can round them differently; the feathered mask's weights are not."""
    rng = np.random.default_rng(31)
    h, w = 300, 257
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.clip((1.2 - (((yy - 150) / 90.0) ** 2 + ((xx - 120) / 100.0) ** 2)) * 400, 0, 255).astype(np.uint8)
    params = np.array([0.875, 0.125, 0.0, 0.0625, 0.0, 1.25, -0.125, -0.03125, 0.25, 0.0, 0.75, 0.5], np.float32)
    out = apply_affine(rgb, mask, params)
    half = blend(rgb, out, mask, 0.5)
    assert out.dtype == half.dtype == np.uint8
    digest = hashlib.sha256(out.tobytes() + half.tobytes()).hexdigest()
    assert digest == "49de1268e397cf46c1ee707fecd6659bd8ab6a37d9b7d0f31dd7890a0ef0cd06"
