"""Bad input gets a clear error naming the file; conversions are sensible; writes are atomic."""
from pathlib import Path

import numpy as np
import pytest
from conftest import textured_image
from PIL import Image

from engine.errors import InputError
from engine.imageio import Picture, check_mask, read_image, read_mask, write_image


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="bad.jpg: not a readable image"):
        read_image(bad)


def test_conversions(tmp_path):
    gray = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20
    Image.fromarray(gray).save(tmp_path / "g16.png")  # 16-bit grayscale
    pic = read_image(tmp_path / "g16.png")
    assert pic.rgb.dtype == np.uint8 and pic.rgb.shape == (48, 64, 3)
    assert pic.rgb[-1, -1, 0] == round(gray[-1, -1] / 65535 * 255)
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
    with pytest.raises(InputError, match=r"o\.png: can only write uint8 \(H, W, 3\) RGB, got float64 \(8, 8\)"):
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
