"""Bad input gets a clear error naming the file; conversions are sensible; writes are atomic."""
from pathlib import Path

import numpy as np
import pytest
from conftest import scene_photo, textured_image
from PIL import Image

from engine.cli import main
from engine.errors import InputError
from engine.imageio import Picture, check_mask, read_image, read_mask, read_mask8, write_image


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="bad.jpg: not a readable image"):
        read_image(bad)


def test_conversions(tmp_path):
    gray = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20
    Image.fromarray(gray).save(tmp_path / "g16.png")  # 16-bit grayscale, kept at 16 bits (test_depth.py)
    pic = read_image(tmp_path / "g16.png")
    assert pic.rgb.dtype == np.uint16 and pic.rgb.shape == (48, 64, 3) and pic.gray
    assert (pic.rgb == gray[..., None]).all()
    rgba = np.dstack([textured_image(10, 12), np.full((10, 12), 77, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pic = read_image(tmp_path / "a.png")
    assert np.array_equal(pic.rgb, rgba[..., :3]) and (pic.alpha == 77).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(textured_image(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "o.jpg", exif=exif)
    assert read_image(tmp_path / "o.jpg").rgb.shape == (20, 10, 3)


def test_mask_checks(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="m.png: mask is 8x8 but the image is 9x8"):
        read_mask(tmp_path / "m.png", (9, 8))
    with pytest.raises(InputError, match="empty"):
        check_mask(np.zeros((4, 4)), "m.png")
    with pytest.raises(InputError, match="whole image"):
        check_mask(np.ones((4, 4)), "m.png")
    alpha_only = np.zeros((8, 8, 4), np.uint8)
    alpha_only[2:5, 2:5, 3] = 255
    Image.fromarray(alpha_only, "RGBA").save(tmp_path / "alpha.png")
    assert read_mask(tmp_path / "alpha.png").sum() == 9


def test_write_is_atomic_and_keeps_old_output_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "o.png"
    write_image(out, Picture(textured_image(8, 8)))
    before = out.read_bytes()
    with pytest.raises(InputError, match=r"o\.png: can only write uint8 or uint16 \(H, W, 3\) RGB, got float64 \(8,"):
        write_image(out, Picture(np.zeros((8, 8), np.float64)))
    save = Image.Image.save

    def disk_full(self, fp, *args, **kwargs):  # half the file written, then the disk fills up
        save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:40])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_image(out, Picture(textured_image(16, 16)))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"], "a partial file was left behind"
    with pytest.raises(InputError, match=r"o.xyz: not an image file name we can write \('.xyz'"):
        write_image(tmp_path / "o.xyz", Picture(textured_image(8, 8)))


def cut_out(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A composite and the alpha of its pasted object as a person cuts it out: soft at the edge."""
    photo = scene_photo(h, w, seed=2)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h * 0.5) / (h * 0.3)) ** 2 + ((xx - w * 0.45) / (w * 0.25)) ** 2
    alpha = (np.clip((1.15 - inside) / 0.3, 0, 1) * 255).astype(np.uint8)
    pasted = np.where(alpha[..., None] > 0, photo * np.array([0.5, 0.75, 1.35]), photo)
    return np.clip(pasted, 0, 255).astype(np.uint8), alpha


def test_a_mask_with_varying_alpha_is_read_by_its_alpha_whatever_its_colours(tmp_path):
    rgb, alpha = cut_out(40, 60)
    noise = np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint8)
    for name, outside in (("black", 0), ("noise", noise)):
        colours = np.where(alpha[..., None] > 0, rgb, outside).astype(np.uint8)
        Image.fromarray(np.dstack([colours, alpha]), "RGBA").save(tmp_path / f"{name}.png")
        assert np.array_equal(read_mask8(tmp_path / f"{name}.png"), alpha), name
    Image.fromarray(np.dstack([alpha, alpha]), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_mask8(tmp_path / "la.png"), alpha)
    palette = Image.fromarray((alpha > 127).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 200, 10, 10])
    palette.save(tmp_path / "p.png", transparency=0)  # index 0 transparent: the object is opaque red
    assert np.array_equal(read_mask8(tmp_path / "p.png"), np.where(alpha > 127, 255, 0))
    # Uniform alpha: the brightness, as for a mask without alpha (a white-on-black mask saved as RGBA).
    white = np.repeat(alpha[..., None], 3, 2)
    Image.fromarray(np.dstack([white, np.full_like(alpha, 255)]), "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_mask8(tmp_path / "opaque.png"), alpha)


def test_a_cut_out_mask_gives_the_white_on_black_masks_output(tmp_path):
    rgb, alpha = cut_out(96, 128)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(alpha).save(tmp_path / "white.png")
    noise = np.random.default_rng(1).integers(0, 256, rgb.shape, dtype=np.uint8)
    outside = {"black": np.zeros_like(rgb), "noise": noise}
    for name, colours in outside.items():
        Image.fromarray(np.dstack([np.where(alpha[..., None] > 0, rgb, colours), alpha]), "RGBA").save(
            tmp_path / f"{name}.png")
    outputs = {}
    for name in ("white", *outside):
        out = tmp_path / f"out-{name}.png"
        mask = tmp_path / f"{name}.png"
        assert main(["run", str(tmp_path / "c.png"), "--mask", str(mask), "-o", str(out), "-q"]) == 0
        outputs[name] = np.asarray(Image.open(out))
    assert not np.array_equal(outputs["white"], rgb), "the object did not move"
    assert np.array_equal(outputs["white"][alpha == 0], rgb[alpha == 0])
    for name in outside:
        assert np.array_equal(outputs[name], outputs["white"]), f"the cut-out with {name} outside differs"


@pytest.mark.parametrize("name, mode", [("p.jpg", "RGB"), ("g.png", "L"), ("a.png", "RGBA"), ("o.jpg", "RGB")])
def test_a_picture_read_as_a_pillow_image_is_the_array_and_writes_the_same_file(tmp_path, name, mode):
    """The batch reads an 8-bit picture as Pillow's image (`as_image`) and writes that image: its pixels, alpha,
    grayness and metadata are the array's, and every output format gets the same bytes; the image read is
    left unchanged by writing it (an alpha is added to a copy)."""
    from PIL import ImageOps

    rgb = scene_photo(40, 56, seed=2)
    img = Image.fromarray(rgb).convert(mode)
    if mode == "RGBA":
        img.putalpha(Image.fromarray(np.tile(np.arange(56, dtype=np.uint8) * 4, (40, 1))))
    exif = Image.Exif()
    exif[0x0112] = 6 if name == "o.jpg" else 1  # a rotated photo: the orientation is applied as it is read
    exif[0x010F] = "Maker"
    img.save(tmp_path / name, exif=exif.tobytes())
    plain, kept = read_image(tmp_path / name), read_image(tmp_path / name, as_image=True)
    assert isinstance(kept.rgb, Image.Image) and kept.rgb.mode == "RGB" and kept.size == plain.size
    assert np.array_equal(np.asarray(kept.rgb), plain.rgb) and kept.gray == plain.gray
    assert kept.meta == plain.meta and kept.jpeg == plain.jpeg
    assert (kept.alpha is None) == (plain.alpha is None) and (plain.alpha is None or
                                                              np.array_equal(kept.alpha, plain.alpha))
    before = np.asarray(kept.rgb).copy()
    for out in ("o.png", "o.jpg", "o.tif", "o.webp"):
        write_image(tmp_path / f"array-{out}", plain)
        write_image(tmp_path / f"image-{out}", kept)
        assert (tmp_path / f"array-{out}").read_bytes() == (tmp_path / f"image-{out}").read_bytes(), out
    assert kept.rgb.mode == "RGB" and np.array_equal(np.asarray(kept.rgb), before)
    assert ImageOps.exif_transpose(Image.open(tmp_path / name)).size == kept.size


def test_an_image_of_another_mode_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="x.png: can only write an RGB Pillow image, got mode CMYK"):
        write_image(tmp_path / "x.png", Picture(Image.new("CMYK", (4, 4))))
    assert not (tmp_path / "x.png").exists()


def _cmyk_jpeg(path):
    Image.fromarray(scene_photo(40, 56, seed=3)).convert("CMYK").save(path, icc_profile=b"\0" * 128)


def _jpeg_tiff(path):
    Image.fromarray(scene_photo(40, 56, seed=3)).save(path, compression="jpeg")


def _keyed_png(path):
    Image.fromarray(scene_photo(40, 56, seed=3)).save(path, transparency=(10, 20, 30))


def _group4_tiff(path):
    Image.fromarray(scene_photo(40, 56, seed=3)).convert("1").save(path, compression="group4")


def _commented_jpeg(path):
    Image.fromarray(scene_photo(40, 56, seed=3)).save(path, comment=b"from the camera")


@pytest.mark.parametrize("name, make", [("c.jpg", _cmyk_jpeg), ("j.tif", _jpeg_tiff), ("k.png", _keyed_png),
                                        ("g4.tif", _group4_tiff), ("n.jpg", _commented_jpeg)])
def test_a_pillow_picture_writes_what_its_meta_says_not_what_its_file_did(tmp_path, name, make):
    """Pillow's writers take their defaults from an image's `info`, which holds its file's settings: a picture
    read as an image must write as the array does (no CMYK profile, no JPEG compression in a TIFF, no colour
    key, no 1-bit Group 4 encoder error, no comment)."""
    make(tmp_path / name)
    plain, kept = read_image(tmp_path / name), read_image(tmp_path / name, as_image=True)
    for out in ("o.png", "o.jpg", "o.tif", "o.webp"):
        write_image(tmp_path / f"array-{out}", plain)
        write_image(tmp_path / f"image-{out}", kept)
        assert (tmp_path / f"array-{out}").read_bytes() == (tmp_path / f"image-{out}").read_bytes(), out
    stray = Image.open(tmp_path / name)
    stray.load()
    stray = stray.convert("RGB") if stray.mode != "RGB" else stray
    stray.info["comment"] = b"not mine"
    write_image(tmp_path / "stray.jpg", Picture(stray))
    assert "comment" not in Image.open(tmp_path / "stray.jpg").info and stray.info["comment"] == b"not mine"
