"""Reading images and masks with clear errors, and writing outputs atomically (numpy and Pillow only).

A picture keeps what its file carried (ICC profile, EXIF, XMP, dpi, PNG text) and is written back with
it where the output format can hold it; pixels are never converted between colour spaces, so a Display P3
or Adobe RGB photo is harmonized in its own space and comes back tagged with the same profile. A JPEG
written from a JPEG reuses the input's quantization tables and subsampling, so the untouched background
changes as little as JPEG allows. A grayscale picture comes back grayscale.

A PNG or TIFF of 16 bits per sample (RGB, RGBA, grayscale with or without alpha) is read and written at 16
bits, through the `16bit` extra (imagecodecs for PNG, tifffile for TIFF: Pillow reads such RGB files as 8-bit);
without it such a picture is refused, never quietly reduced.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError

from .atomic import atomic_path, put_whole
from .errors import InputError, MissingDependencyError, require
from .paths import is_local, store_errors

Image.MAX_IMAGE_PIXELS = 200_000_000  # Pillow's own bomb guard; MAX_PIXELS below is checked first
MAX_PIXELS = 100_000_000  # default limit for one picture: editor images reach 50 MP
MB_PER_MEGAPIXEL = 16  # a whole `harmonize run` process's peak per megapixel of its picture (docs/running.md)
DEEP_EXTRA = "16bit"  # the extra that reads and writes 16 bits per sample (tifffile, imagecodecs)
MASK_RULE = ("a mask is white, or opaque, where the object is: a mask whose alpha varies (a cut-out) is read by its "
             "alpha, whatever its colours; any other mask by its brightness")


@dataclass
class Picture:
    """An RGB image as uint8 (H, W, 3), or uint16 for a file of 16 bits per sample, with the alpha channel
    (of the same type) kept aside when the file had one, and what else of its file an output should carry:
    `meta` (icc_profile, exif, xmp, dpi, text), whether it was grayscale, and a JPEG's encoding (`jpeg`:
    qtables, subsampling). `rgb` may instead be an 8-bit picture's RGB Pillow image (read_image's
    `as_image`), which the batch keeps from decoding to encoding."""

    rgb: np.ndarray | Image.Image
    alpha: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    gray: bool = False
    jpeg: dict | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow gives a size."""
        return self.rgb.size if isinstance(self.rgb, Image.Image) else (self.rgb.shape[1], self.rgb.shape[0])


GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")
PROFILE_MODES = ("RGB", "RGBA", "P", "PA", "L", "LA", "I;16", "I;16B", "I;16L")  # an ICC profile still fits after
# the conversion to 8 bit; a CMYK or Lab profile would not


def _metadata(img: Image.Image) -> dict:
    """What of a decoded file an output should carry (before EXIF orientation is applied)."""
    info = img.info
    meta = {k: info[k] for k in ("icc_profile", "dpi") if info.get(k)}
    if img.mode not in PROFILE_MODES:
        meta.pop("icc_profile", None)
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if xmp is None and hasattr(img, "tag_v2"):
        xmp = img.tag_v2.get(700)
    if xmp:
        meta["xmp"] = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    text = {k: v for k, v in getattr(img, "text", {}).items() if k != "XML:com.adobe.xmp"}
    if text:
        meta["text"] = text
    return meta


# TIFF tags that describe a file's layout, not the photo: a TIFF's own tags are its EXIF, and these must
# not travel into another file (with the orientation, which is applied on reading).
LAYOUT_TAGS = (0x0112, 254, 256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325,
               338, 339, 530, 531, 532, 700, 34675)


def _exif(img: Image.Image) -> bytes | None:
    """The file's EXIF (a TIFF's tags) without layout tags and orientation, or None when there is none."""
    exif = img.getexif()
    for tag in LAYOUT_TAGS:
        exif.pop(tag, None)
    return exif.tobytes() if len(exif) else None


def _jpeg_encoding(img: Image.Image) -> dict | None:
    """A JPEG's quantization tables and chroma subsampling, to write it back the way it was written."""
    if not isinstance(img, JpegImagePlugin.JpegImageFile) or not getattr(img, "quantization", None):
        return None
    encoding = {"qtables": [img.quantization[k] for k in sorted(img.quantization)]}
    sampling = JpegImagePlugin.get_sampling(img)
    if sampling != -1:
        encoding["subsampling"] = sampling
    return encoding


def _open(path: str | Path, max_pixels: int | None = None) -> tuple[Image.Image, bool]:
    """Decode an image, as stored (EXIF orientation not yet applied), and say whether it is a PNG or TIFF
    of more than 8 bits per sample (which Pillow decodes as 8 for RGB); its size is checked from the header
    first, so a huge one costs no memory."""
    try:  # a URL is read whole, in one GET, so that its store's errors are said once, here
        source = path if is_local(path) else io.BytesIO(_read_url(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    try:
        img = Image.open(source)
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            img.close()
            raise InputError(
                f"{path}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of {max_pixels / 1e6:.0f} "
                f"(it would need about {w * h / 1e6 * MB_PER_MEGAPIXEL / 1000:.1f} GB; --max-megapixels raises it)")
        deep = _more_than_8_bits(img)  # before load, which forgets how the file stores its samples
        _read_exif_directories(img)  # before load, which closes the file a TIFF's EXIF reads them from
        img.load()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:  # Pillow's message repeats the path and says no more
        raise InputError(f"{path}: not a readable image (an unknown format, or damaged)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    finally:
        if source is not path:
            source.close()
    return img, deep


EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005  # pointers to EXIF's sub-directories (Interop's is in Exif's)


def _read_exif_directories(img: Image.Image) -> None:
    """Have Pillow read the EXIF's sub-directories now and keep them: a TIFF's are read from the file when
    first asked for, and writing the EXIF asks for them after the file is closed (a TIFF with an Interop
    directory failed with "seek of closed file")."""
    exif = img.getexif()
    for tag in (EXIF_IFD, GPS_IFD, INTEROP_IFD):
        exif.get_ifd(tag)


def _more_than_8_bits(img: Image.Image) -> bool:
    """Whether a picture opened but not yet decoded is a PNG or TIFF of more than 8 bits per sample."""
    if img.format == "TIFF":
        return max(img.tag_v2.get(258, (1,))) > 8  # BitsPerSample (Pillow's raw mode is wrong for planar files)
    if img.format == "PNG" and img.tile:
        args = img.tile[0].args
        return ";16" in (args if isinstance(args, str) else args[0])  # e.g. RGB;16B
    return False


def _deep_samples(path: str | Path, fmt: str) -> tuple[np.ndarray, int | None]:
    """A 16-bit PNG's or TIFF's samples as stored, uint16 (H, W, 1 to 4), through the 16bit extra, and a
    TIFF's orientation tag (Pillow applies and forgets it as it decodes a TIFF); InputError for anything that
    cannot keep its depth (no extra, floating-point or 32-bit samples, CMYK, ...)."""
    try:
        lib = require("imagecodecs" if fmt == "PNG" else "tifffile", DEEP_EXTRA)
    except MissingDependencyError as exc:
        raise InputError(f"{path}: 16 bits per sample, which would be cut to 8 ({exc}); or save it at 8 bits "
                         "per sample") from None
    path = Path(path) if isinstance(path, str) else path
    orientation = None
    try:
        if fmt == "PNG":
            samples = lib.png_decode(path.read_bytes() if is_local(path) else _read_url(path))
        else:  # a local TIFF is read where it lies (no copy of the file in memory), a URL through its filesystem
            with lib.TiffFile(str(path) if is_local(path) else io.BytesIO(_read_url(path))) as tif:
                page = tif.pages.first
                if page.dtype != np.uint16 or page.photometric not in (1, 2):  # grayscale (black is 0) or RGB
                    raise InputError(
                        f"{path}: a TIFF of {page.dtype} samples, {page.photometric.name}: only 16-bit unsigned "
                        "RGB, RGBA and grayscale keep their depth here; save it as one of those, or at 8 bits")
                samples, orientation = page.asarray(), int(page.tags.valueof(274, 1))
                if page.axes.startswith("S"):  # planar: one plane per sample
                    samples = np.moveaxis(samples, 0, -1)
    except InputError:
        raise
    except (ValueError, KeyError, OSError, RuntimeError) as exc:  # tifffile and imagecodecs say what failed
        raise InputError(f"{path}: cannot read its 16-bit samples ({exc})") from None
    samples = samples[..., None] if samples.ndim == 2 else samples
    if samples.dtype != np.uint16 or samples.ndim != 3 or samples.shape[2] > 4:
        raise InputError(f"{path}: {samples.dtype} samples of shape {samples.shape}: only 16-bit RGB, RGBA and "
                         "grayscale keep their depth here")
    return samples, orientation


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Samples (H, W, C) as shown: an EXIF orientation applied as ImageOps.exif_transpose applies it."""
    turns = {2: lambda: a[:, ::-1], 3: lambda: a[::-1, ::-1], 4: lambda: a[::-1], 5: lambda: a.swapaxes(0, 1),
             6: lambda: np.rot90(a, -1), 7: lambda: np.rot90(a, 2).swapaxes(0, 1), 8: lambda: np.rot90(a)}
    return turns[orientation]() if orientation in turns else a


def _read_url(path: Path) -> bytes:
    with store_errors(path):
        return path.read_bytes()


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float grayscale modes scaled to 8 bit (Pillow's own convert would clip them)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def _upright(img: Image.Image) -> Image.Image:
    """The picture as it is shown: EXIF orientation applied (the picture itself when there is none)."""
    return ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS, as_image: bool = False) -> Picture:
    """An image file as RGB (grayscale, palette and CMYK converted; EXIF orientation applied), uint8, or
    uint16 for a PNG or TIFF of 16 bits per sample; alpha kept aside, with what an output should carry of
    the file; InputError when it has more than `max_pixels` pixels (None: no limit) or samples whose depth
    cannot be kept. With `as_image` an 8-bit file's RGB is the Pillow image it decoded to, not copied into an
    array (a 16-bit file's is an array all the same)."""
    stored, deep = _open(path, max_pixels)
    meta, gray = _metadata(stored), stored.mode in GRAY_MODES
    if deep:
        samples, orientation = _deep_samples(path, stored.format)
        samples = _orient(samples, orientation or stored.getexif().get(0x0112, 1))
        exif = _exif(stored)
        if exif:
            meta["exif"] = exif
        gray = samples.shape[2] <= 2
        rgb = np.repeat(samples[..., :1], 3, axis=2) if gray else np.ascontiguousarray(samples[..., :3])
        alpha = samples[..., -1].copy() if samples.shape[2] in (2, 4) else None
        return Picture(rgb, alpha, meta, gray)
    jpeg = _jpeg_encoding(stored) if stored.mode in ("RGB", "L") else None
    img = _to_8bit(_upright(stored))
    exif = _exif(stored)  # after the transpose: it edits the stored picture's own EXIF
    if exif:
        meta["exif"] = exif
    alpha = None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        alpha = np.asarray(img)[..., 3].copy()
    if img.mode != "RGB":
        img = img.convert("RGB")
    if as_image:
        # What Pillow read from the file stays in `meta`: a writer would take what is left in `info` for its
        # own defaults (a CMYK profile, a TIFF's JPEG compression, a PNG's transparent colour).
        img.info = {}
    return Picture(img if as_image else np.asarray(img), alpha, meta, gray, jpeg)


def read_mask8(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as uint8 (H, W), 255 = foreground, by MASK_RULE: a cut-out (its alpha varies) by its
    alpha, whatever its colours, any other by its brightness; `size` (W, H) must match if given."""
    img = _to_8bit(_upright(_open(path, max(MAX_PIXELS, size[0] * size[1]) if size else MAX_PIXELS)[0]))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = (img if img.mode in ("RGBA", "LA") else img.convert("RGBA")).getchannel("A")
        if np.ptp(np.asarray(alpha)):
            img = alpha
    if size is not None and img.size != tuple(size):
        raise InputError(
            f"{path}: mask is {img.size[0]}x{img.size[1]} but the image is {size[0]}x{size[1]}"
        )
    return np.asarray(img if img.mode == "L" else img.convert("L"))


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as float32 (H, W) in [0, 1], 1 = foreground; as read_mask8."""
    return read_mask8(path, size).astype(np.float32) / 255.0


def foreground(mask: np.ndarray) -> np.ndarray:
    """Where a mask (uint8 0..255, or float in [0, 1]) marks the object: above half."""
    return mask > (127 if mask.dtype == np.uint8 else 0.5)


def check_mask(mask: np.ndarray, name: str = "mask") -> None:
    """Refuse a mask (uint8 0..255, or float in [0, 1]) with no foreground or no background: there is
    nothing to harmonize."""
    if mask.dtype == np.uint8:  # a file's mask: its extremes say it without a boolean copy (12 MB at 12 MP)
        some, every = foreground(np.array([mask.max(), mask.min()], np.uint8))
    else:  # a float mask may hold NaN, which is no foreground
        fg = foreground(mask)
        some, every = fg.any(), fg.all()
    if not some:
        raise InputError(f"{name}: mask is empty (no foreground pixel above 0.5)")
    if every:
        raise InputError(f"{name}: mask covers the whole image; there is no background to match")


WRITABLE = {ext: fmt for ext, fmt in Image.registered_extensions().items()
            if fmt in ("JPEG", "PNG", "WEBP", "TIFF", "BMP")}  # what `run --format` and an output may name


def save_options(fmt: str, picture: Picture) -> dict:
    """Pillow's save options for a format: the picture's metadata where the format holds it, and a JPEG
    input's own encoding for a JPEG output (else quality 95)."""
    m = picture.meta
    keep = {"JPEG": ("icc_profile", "exif", "xmp", "dpi"), "WEBP": ("icc_profile", "exif", "xmp"),
            "PNG": ("icc_profile", "exif", "dpi"), "TIFF": ("icc_profile", "exif", "dpi"), "BMP": ("dpi",)}[fmt]
    options = {k: m[k] for k in keep if k in m}
    if fmt == "JPEG":
        options.update(picture.jpeg or {"quality": 95})
    elif fmt == "WEBP":
        options["quality"] = 95
    elif fmt == "PNG" and ("text" in m or "xmp" in m):
        info = PngImagePlugin.PngInfo()
        for k, v in m.get("text", {}).items():
            info.add_itxt(k, v) if isinstance(v, PngImagePlugin.iTXt) else info.add_text(k, v)
        if "xmp" in m:
            info.add_itxt("XML:com.adobe.xmp", m["xmp"].decode("utf-8", "replace"))
        options["pnginfo"] = info
    elif fmt == "TIFF" and ("xmp" in m or "exif" in m):
        # Pillow writes `tiffinfo` in place of `exif`, never both: the XMP goes in with the EXIF's own tags,
        # whose Exif and GPS sub-IFDs Pillow then writes too.
        tags = _nested_exif(m.get("exif"))
        if "xmp" in m:
            tags[700] = m["xmp"]
        options["exif"] = tags
    return options


def check_output_name(path: str | Path) -> str:
    """The Pillow format an output path's suffix names; InputError when it names none we write."""
    ext = Path(str(path)).suffix.lower()
    if ext not in WRITABLE:
        known = ", ".join(sorted(WRITABLE))
        raise InputError(f"{path}: not an image file name we can write ({'no suffix' if not ext else repr(ext)}; "
                         f"use one of {known}); to write into a folder, end -o with / or create it first")
    return WRITABLE[ext]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG file's chunks in order, as (type, the whole chunk: length, type, data, CRC)."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        chunks.append((data[pos + 4:pos + 8], data[pos:end]))
        pos = end
    return chunks


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Tags tifffile writes itself from the samples and its arguments: the rest of what Pillow writes is copied.
TIFFFILE_TAGS = (set(LAYOUT_TAGS) - {700, 34675}) | {282, 283, 296}


def _save_deep(target: Path | io.BytesIO, path: Path, fmt: str, picture: Picture) -> None:
    """Save a 16-bit picture into `target` as PNG or TIFF, through the 16bit extra, with the metadata Pillow
    would write at 8 bits: taken from a 1x1 picture Pillow saves with the same options, so both depths carry
    the same."""
    rgb, alpha = picture.rgb, picture.alpha
    if picture.gray:  # Pillow's convert("L") weights, in 1/65536: a pixel whose channels are equal keeps its value
        r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
        planes = [((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).astype(np.uint16)]
    else:
        planes = [rgb]
    if alpha is not None:
        planes.append(alpha)
    samples = np.ascontiguousarray(planes[0] if len(planes) == 1 else np.dstack(planes))  # (H, W[, C])
    probe = io.BytesIO()
    Image.new("L" if picture.gray else "RGB", (1, 1)).save(probe, format=fmt, **save_options(fmt, picture))
    try:
        lib = require("imagecodecs" if fmt == "PNG" else "tifffile", DEEP_EXTRA)
    except MissingDependencyError as exc:
        raise InputError(f"{path}: cannot write 16 bits per sample ({exc})") from None
    if fmt == "PNG":
        pixels = _png_chunks(lib.png_encode(samples))
        ancillary = [c for kind, c in _png_chunks(probe.getvalue()) if kind not in (b"IHDR", b"IDAT", b"IEND")]
        data = PNG_SIGNATURE + pixels[0][1] + b"".join(ancillary) + b"".join(c for _, c in pixels[1:])
        target.write_bytes(data) if isinstance(target, Path) else target.write(data)
        return
    with lib.TiffFile(io.BytesIO(probe.getvalue())) as tif:
        tags = {t.code: t for t in tif.pages.first.tags}
    extra = [(t.code, t.dtype, t.count, t.value, True) for t in tags.values()
             if t.code not in TIFFFILE_TAGS and not isinstance(t.value, dict)]  # a dict: a sub-IFD (Exif, GPS)
    subs = _sub_ifds(picture.meta.get("exif"))
    dpi = {}
    if 282 in tags and 283 in tags:
        dpi = dict(resolution=(tags[282].value, tags[283].value), resolutionunit=tags[296].value if 296 in tags else 2)
    lib.imwrite(target, samples, photometric="minisblack" if picture.gray else "rgb", metadata=None,
                software=False, extrasamples=("unassalpha",) if alpha is not None else None, byteorder="<",
                extratags=extra + [(code + 1, "I", 1, 0, True) for code in subs], **dpi)
    if subs:
        _link_sub_ifds(target, subs, lib)


def _sub_ifds(exif: bytes | None) -> dict[int, dict]:
    """The Exif and GPS directories of an EXIF block that hold tags, by pointer tag, the Interop one nested."""
    tags = _nested_exif(exif)
    subs = {code: dict(tags.get_ifd(code)) for code in (EXIF_IFD, GPS_IFD)}
    return {code: sub for code, sub in subs.items() if sub}


def _nested_exif(exif: bytes | None) -> Image.Exif:
    """An EXIF block's tags whose Exif directory holds the Interop directory itself, not its pointer: an offset
    into the block, which would point nowhere in a TIFF written from it (Pillow's writer copies it as it is)."""
    tags = Image.Exif()
    if exif:
        tags.load(exif)
    interop = dict(tags.get_ifd(INTEROP_IFD))  # read through the pointer, before it goes
    sub = tags.get_ifd(EXIF_IFD)  # the Exif object's own dict: changes to it are what gets written
    sub.pop(INTEROP_IFD, None)
    if interop:
        sub[INTEROP_IFD] = interop
    return tags


def _link_sub_ifds(target: Path | io.BytesIO, subs: dict[int, dict], lib) -> None:
    """Append the Exif and GPS sub-directories to a little-endian TIFF that tifffile wrote, and point its first
    directory at them. tifffile writes no such directory and refuses their tags, so each pointer was written as
    the tag after its own (a stand-in no reader knows, which keeps the entries in order) and is renamed here.
    Pillow writes the directories, as it does at 8 bits."""
    f = open(target, "r+b") if isinstance(target, Path) else target
    try:
        f.seek(0, io.SEEK_END)
        start = f.tell() + f.tell() % 2  # a directory begins on a word boundary
        f.write(b"\0" * (start - f.tell()))
        holder = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        for code, sub in subs.items():
            holder[code] = sub
        data = holder.tobytes(start)  # a directory of the pointers, which no IFD links to, then their directories
        f.write(data)
        entries = [data[2 + 12 * i:14 + 12 * i] for i in range(int.from_bytes(data[:2], "little"))]
        pointers = {int.from_bytes(e[:2], "little"): e[8:12] for e in entries}
        f.seek(0)
        with lib.TiffFile(f) as tif:
            if tif.is_bigtiff:
                raise InputError(f"{getattr(target, 'name', target)}: a BigTIFF cannot carry the EXIF sub-IFDs here")
            spots = [(t.code - 1, t.offset, t.valueoffset) for t in tif.pages.first.tags if t.code - 1 in subs]
        for code, entry, value in spots:
            f.seek(entry)
            f.write(code.to_bytes(2, "little"))
            f.seek(value)
            f.write(pointers[code])
    finally:
        if f is not target:
            f.close()


def write_image(path: str | Path, picture: Picture) -> None:
    """Write a picture atomically (a temporary file in the same folder, then a rename), with what its
    input carried: metadata, alpha where the format has it, grayscale if it was, and 16 bits per sample
    (PNG and TIFF only) if it has them."""
    path = Path(path) if isinstance(path, str) else path
    fmt = check_output_name(path)
    rgb, alpha = picture.rgb, picture.alpha
    if isinstance(rgb, Image.Image):
        if rgb.mode != "RGB":
            raise InputError(f"{path}: can only write an RGB Pillow image, got mode {rgb.mode}")
    elif rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{path}: can only write uint8 or uint16 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint16:
        if fmt not in ("PNG", "TIFF"):
            raise InputError(f"{path}: the picture has 16 bits per sample and {fmt} holds 8; write PNG or TIFF "
                             "(--format png or tif) to keep them")
        _store(path, lambda target: _save_deep(target, path, fmt, picture))
        return
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb, "RGB")
    if img.info:  # an image from elsewhere: its file's settings must not choose this file's (read_image)
        img = img.copy()
        img.info = {}
    if picture.gray:
        img = img.convert("L")
    if alpha is not None and fmt != "JPEG":
        if img is rgb:  # putalpha changes the image itself, which is the caller's
            img = img.copy()
        img.putalpha(Image.fromarray(alpha, "L"))
    options = dict(format=fmt, **save_options(fmt, picture))
    _store(path, lambda target: img.save(target, **options))


def _store(path: Path, save) -> None:
    """Run save(target) on a temporary file that is then renamed to `path`, or, for an object store, on a
    buffer written in one put, whole or not at all."""
    if not is_local(path):
        buf = io.BytesIO()
        save(buf)
        put_whole(path, buf.getvalue())
        return
    with atomic_path(path) as tmp:
        save(tmp)
