"""Pictures come back with what they came with: colour profile, EXIF, XMP, dpi, PNG text, a JPEG's own
encoding, grayscale; pixels are never converted between colour spaces."""
import io
import struct
import warnings

import numpy as np
import pytest
from conftest import ellipse_mask, scene_photo
from PIL import Image, ImageCms, PngImagePlugin

from engine.cli import main

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'


def display_p3_profile() -> bytes:
    """A real ICC v2 matrix/TRC RGB profile with Display P3's primaries (D50-adapted) and gamma 2.2: a
    colour space other than sRGB, so a converting pipeline would change every pixel."""
    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    def desc(text):
        a = text.encode() + b"\0"
        return b"desc" + bytes(4) + struct.pack(">I", len(a)) + a + bytes(8) + bytes(3) + bytes(67)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0233) + bytes(2)
    tags = [(b"desc", desc("Display P3 (test)")), (b"cprt", b"text" + bytes(4) + b"none\0"),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
            (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)), (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


P3 = display_p3_profile()


def exif(orientation=None) -> Image.Exif:
    e = Image.Exif()
    e[0x010F] = "Camera Maker"  # Make
    e[0x0132] = "2024:05:06 07:08:09"  # DateTime
    if orientation:
        e[0x0112] = orientation
    return e


def composite(tmp_path, ext, **save):
    """A scene with a recoloured object, saved with the given metadata; returns paths and pixels."""
    photo = scene_photo(96, 128, seed=4)
    mask = (ellipse_mask(96, 128) * 255).astype(np.uint8)
    pasted = photo.copy()
    pasted[mask > 0] = np.clip(photo[mask > 0] * np.array([0.5, 0.7, 1.3]), 0, 255).astype(np.uint8)
    src, m = tmp_path / f"c{ext}", tmp_path / "m.png"
    Image.fromarray(pasted).save(src, **save)
    Image.fromarray(mask).save(m)
    return src, m, mask


def assert_carried(img: Image.Image) -> None:
    """The profile, dpi and EXIF that composite() and the 16-bit test give their pictures are in `img`."""
    assert img.info["icc_profile"] == P3
    assert tuple(round(v) for v in img.info["dpi"]) == (300, 300)
    e = img.getexif()
    assert e[0x010F] == "Camera Maker" and e[0x0132] == "2024:05:06 07:08:09"


def run(src, m, out):
    assert main(["run", str(src), "--mask", str(m), "-o", str(out), "-q"]) == 0


def test_the_test_profile_is_a_real_non_srgb_profile():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(P3))
    assert ImageCms.getProfileDescription(profile).strip() == "Display P3 (test)"
    srgb = ImageCms.createProfile("sRGB")
    orange = Image.new("RGB", (1, 1), (200, 100, 50))
    assert ImageCms.profileToProfile(orange, profile, srgb).getpixel((0, 0)) != (200, 100, 50), "not sRGB"


@pytest.mark.parametrize("ext, save", [
    (".jpg", dict(quality=88)), (".png", {}), (".tif", {}),
], ids=["jpeg", "png", "tiff"])
def test_profile_exif_xmp_and_dpi_survive(tmp_path, ext, save):
    src, m, mask = composite(tmp_path, ext, icc_profile=P3, exif=exif().tobytes(), dpi=(300, 300),
                             **({"xmp": XMP} if ext == ".jpg" else {}), **save)
    out = tmp_path / f"out{ext}"
    run(src, m, out)
    with Image.open(out) as img:
        assert_carried(img)
        if ext == ".jpg":
            assert img.info["xmp"] == XMP


def test_a_p3_picture_is_harmonized_in_its_own_space_background_and_profile_unchanged(tmp_path):
    src, m, mask = composite(tmp_path, ".png", icc_profile=P3)
    run(src, m, tmp_path / "out.png")
    before, after = np.asarray(Image.open(src)), Image.open(tmp_path / "out.png")
    assert after.info["icc_profile"] == P3
    after = np.asarray(after)
    assert np.array_equal(after[mask == 0], before[mask == 0]), "the background changed"
    assert not np.array_equal(after[mask > 0], before[mask > 0])


def test_png_text_and_xmp_survive(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Ada")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    src, m, _ = composite(tmp_path, ".png", pnginfo=info)
    run(src, m, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as img:
        assert img.text["Author"] == "Ada" and img.text["XML:com.adobe.xmp"] == XMP.decode()


def test_jpeg_to_jpeg_keeps_the_input_quantization_tables_and_subsampling(tmp_path):
    src, m, mask = composite(tmp_path, ".jpg", quality=83, subsampling=1)  # 4:2:2, not what we would choose
    run(src, m, tmp_path / "out.jpg")
    from PIL import JpegImagePlugin

    with Image.open(src) as a, Image.open(tmp_path / "out.jpg") as b:
        assert b.quantization == a.quantization
        assert JpegImagePlugin.get_sampling(b) == JpegImagePlugin.get_sampling(a) == 1
    run(src, m, tmp_path / "out.png")  # another format: our own settings, and the background exact
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png"))[mask == 0],
                          np.asarray(Image.open(src))[mask == 0])


def test_orientation_is_applied_once_and_reset(tmp_path):
    src, m, _ = composite(tmp_path, ".jpg", exif=exif(orientation=6).tobytes())  # stored sideways
    Image.open(m).transpose(Image.Transpose.ROTATE_90).save(m)  # the mask as stored, sideways too
    run(src, m, tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as img:
        assert img.size == (96, 128), "the output is upright"
        e = img.getexif()
        assert e.get(0x0112, 1) == 1 and e[0x010F] == "Camera Maker", "orientation reset, the rest kept"


def test_a_grayscale_picture_stays_grayscale(tmp_path):
    photo = scene_photo(96, 128, seed=4)
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    mask = (ellipse_mask(96, 128) * 255).astype(np.uint8)
    pasted = gray.copy()
    pasted[mask > 0] = (pasted[mask > 0] * 0.6).astype(np.uint8)
    Image.fromarray(pasted).save(tmp_path / "g.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    run(tmp_path / "g.png", tmp_path / "m.png", tmp_path / "out.png")
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "L"
    assert np.array_equal(np.asarray(out)[mask == 0], pasted[mask == 0])
    Image.fromarray(pasted).save(tmp_path / "g.jpg", quality=90)
    run(tmp_path / "g.jpg", tmp_path / "m.png", tmp_path / "out.jpg")
    assert Image.open(tmp_path / "out.jpg").mode == "L"


def test_a_cmyk_profile_is_not_put_on_rgb_output(tmp_path):
    cmyk = Image.new("CMYK", (128, 96), (10, 40, 80, 5))
    fake = b"\0" * 128  # a CMYK picture's profile describes CMYK: it must not tag the RGB output
    cmyk.save(tmp_path / "c.jpg", icc_profile=fake)
    Image.fromarray((ellipse_mask(96, 128) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    run(tmp_path / "c.jpg", tmp_path / "m.png", tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as img:
        assert img.mode == "RGB" and "icc_profile" not in img.info


@pytest.mark.parametrize("ext", [".png", ".tif"], ids=["png", "tiff"])
def test_a_16_bit_picture_keeps_profile_exif_with_its_sub_ifds_dpi_and_text(tmp_path, ext):
    pytest.importorskip("tifffile", reason="the 16bit extra is not installed")
    from engine.imageio import Picture, read_image, write_image

    photo = scene_photo(96, 128, seed=4).astype(np.uint16) * 257 + 100
    mask = (ellipse_mask(96, 128) * 255).astype(np.uint8)
    photo[mask > 0] //= 2
    tags = exif()
    tags.get_ifd(0x8769)[0x829A] = 0.004  # ExposureTime, in the Exif sub-IFD, which tifffile cannot write
    tags.get_ifd(0x8769)[0x927C] = b"maker's own bytes"  # MakerNote
    tags.get_ifd(0x8825)[2] = (52.0, 31.0, 12.5)  # GPSLatitude, in the GPS sub-IFD
    meta = dict(icc_profile=P3, exif=tags.tobytes(), dpi=(300, 300), text={"Author": "Ada"})
    src, m, out = tmp_path / f"c{ext}", tmp_path / "m.png", tmp_path / f"out{ext}"
    write_image(src, Picture(photo, meta=meta))
    Image.fromarray(mask).save(m)
    run(src, m, out)
    for path in (src, out):  # the input is what it claims to be, and the output carries the same
        with Image.open(path) as img:
            assert_carried(img)
            if ext == ".png":
                assert img.text["Author"] == "Ada"
            assert img.getexif().get_ifd(0x8769) == {0x829A: 0.004, 0x927C: b"maker's own bytes"}, path.name
            assert img.getexif().get_ifd(0x8825) == {2: (52.0, 31.0, 12.5)}, path.name
        pic = read_image(path)
        assert pic.rgb.dtype == np.uint16 and pic.meta["icc_profile"] == P3


def test_a_tiff_keeps_its_exif_with_its_sub_ifds_and_its_xmp_together(tmp_path):
    """Pillow writes a TIFF's `tiffinfo` in place of its EXIF: XMP once took the place of the camera's tags."""
    tags = exif()
    tags.get_ifd(0x8769)[0x829A] = 0.004  # ExposureTime, in the Exif sub-IFD
    tags.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef, in the GPS sub-IFD
    tags[700] = XMP
    src, m, _ = composite(tmp_path, ".tif", icc_profile=P3, exif=tags.tobytes(), dpi=(300, 300))
    with Image.open(src) as img:
        assert img.tag_v2[700] == XMP and img.getexif().get_ifd(0x8769)[0x829A] == 0.004, "the input holds both"
    run(src, m, tmp_path / "out.tif")
    with Image.open(tmp_path / "out.tif") as img:
        assert_carried(img)
        assert img.tag_v2[700] == XMP
        assert img.getexif().get_ifd(0x8769)[0x829A] == 0.004 and img.getexif().get_ifd(0x8825)[1] == "N"


def exif_with_interop() -> bytes:
    """An EXIF block as cameras write it, whose Exif directory points to an Interop directory."""
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    ifd[0x010F] = "Camera Maker"
    ifd[0x8769] = {0x829A: 0.004, 0xA005: {1: "R98"}}  # ExposureTime; InteroperabilityIndex
    return b"II*\x00\x08\x00\x00\x00" + ifd.tobytes(8)


def test_exif_with_an_interop_directory_is_read_and_kept(tmp_path):
    """A TIFF whose EXIF has an Interop directory was refused ("seek of closed file": Pillow read that directory
    from the file after decoding had closed it); a 16-bit TIFF output keeps the directory, nested in the Exif
    one, where its old offset would point nowhere."""
    src, m, _ = composite(tmp_path, ".tif", exif=exif_with_interop())
    run(src, m, tmp_path / "out.tif")
    with Image.open(tmp_path / "out.tif") as img:
        assert img.getexif()[0x010F] == "Camera Maker" and img.getexif().get_ifd(0x8769)[0x829A] == 0.004
    # a camera's JPEG to an 8-bit TIFF and back: Pillow's TIFF writer copied the pointer as it was, to nowhere
    src, m, _ = composite(tmp_path, ".jpg", exif=b"Exif\0\0" + exif_with_interop())
    run(src, m, tmp_path / "camera.tif")
    run(tmp_path / "camera.tif", m, tmp_path / "back.jpg")
    for out in ("camera.tif", "back.jpg"):
        with warnings.catch_warnings(), Image.open(tmp_path / out) as img:
            warnings.simplefilter("error")  # "Corrupt EXIF data" where the pointer is stale
            tags = img.getexif()
            assert tags.get_ifd(0x8769)[0x829A] == 0.004 and tags.get_ifd(0xA005) == {1: "R98"}, out
    pytest.importorskip("tifffile", reason="the 16bit extra is not installed")
    from engine.imageio import Picture, write_image

    deep = scene_photo(40, 56, seed=5).astype(np.uint16) * 257
    write_image(tmp_path / "deep.png", Picture(deep, meta={"exif": exif_with_interop()}))
    mask = np.zeros((40, 56), np.uint8)
    mask[10:30, 15:40] = 255
    Image.fromarray(mask).save(tmp_path / "dm.png")
    run(tmp_path / "deep.png", tmp_path / "dm.png", tmp_path / "deep.tif")
    with Image.open(tmp_path / "deep.tif") as img:
        tags = img.getexif()
        assert tags[0x010F] == "Camera Maker" and tags.get_ifd(0x8769)[0x829A] == 0.004
        assert tags.get_ifd(0xA005) == {1: "R98"}
