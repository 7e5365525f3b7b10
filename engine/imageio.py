"""Reading images and masks with clear errors, and writing outputs atomically (numpy and Pillow only).

A picture keeps what its file carried (ICC profile, EXIF, XMP, dpi, PNG text) and is written back with
it where the output format can hold it; pixels are never converted between colour spaces, so a Display P3
or Adobe RGB photo is harmonized in its own space and comes back tagged with the same profile. A JPEG
written from a JPEG reuses the input's quantization tables and subsampling, so the untouched background
changes as little as JPEG allows. A grayscale picture comes back grayscale.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from .atomic import atomic_path, put_whole
from .errors import InputError
from .paths import is_local, store_errors

Image.MAX_IMAGE_PIXELS = 200_000_000  # Pillow's own bomb guard; MAX_PIXELS below is checked first
MAX_PIXELS = 100_000_000  # default limit for one picture: editor images reach 50 MP
MB_PER_MEGAPIXEL = 16  # a whole `harmonize run` process's peak per megapixel of its picture (docs/running.md)


@dataclass
class Picture:
    """An RGB image as uint8 (H, W, 3), with the alpha channel kept aside when the file had one, and what
    else of its file an output should carry: `meta` (icc_profile, exif, xmp, dpi, text), whether it was
    grayscale, and a JPEG's encoding (`jpeg`: qtables, subsampling)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    gray: bool = False
    jpeg: dict | None = None
    decoded: Image.Image | None = field(default=None, repr=False, compare=False)  # the RGB as Pillow holds it


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


def _open(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Decode an image, as stored (EXIF orientation not yet applied); its size is checked from the header
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
    return img


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


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS, keep_decoded: bool = False) -> Picture:
    """An image file as 8-bit RGB (grayscale, palette, 16-bit and CMYK converted; EXIF orientation
    applied), alpha kept aside, with what an output should carry of the file; InputError when it has more
    than `max_pixels` pixels (None: no limit). `keep_decoded` keeps Pillow's RGB picture too, for a caller
    that resizes it (`Picture.decoded`)."""
    stored = _open(path, max_pixels)
    meta, gray = _metadata(stored), stored.mode in GRAY_MODES
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
    return Picture(np.asarray(img), alpha, meta, gray, jpeg, img if keep_decoded else None)


def read_mask8(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as uint8 (H, W), 255 = foreground; `size` (W, H) must match if given.

    An RGBA or LA mask uses its alpha channel when the colour channels are constant.
    """
    img = _to_8bit(_upright(_open(path, max(MAX_PIXELS, size[0] * size[1]) if size else MAX_PIXELS)))
    if img.mode in ("RGBA", "LA") and np.ptp(np.asarray(img.convert("L"))) == 0:
        img = img.getchannel("A")
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
    fg = foreground(mask)
    if not fg.any():
        raise InputError(f"{name}: mask is empty (no foreground pixel above 0.5)")
    if fg.all():
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
    elif fmt == "TIFF" and "xmp" in m:
        options["tiffinfo"] = {700: m["xmp"]}
    return options


def check_output_name(path: str | Path) -> str:
    """The Pillow format an output path's suffix names; InputError when it names none we write."""
    ext = Path(str(path)).suffix.lower()
    if ext not in WRITABLE:
        known = ", ".join(sorted(WRITABLE))
        raise InputError(f"{path}: not an image file name we can write ({'no suffix' if not ext else repr(ext)}; "
                         f"use one of {known}); to write into a folder, end -o with / or create it first")
    return WRITABLE[ext]


def write_image(path: str | Path, picture: Picture) -> None:
    """Write a picture atomically (a temporary file in the same folder, then a rename), with what its
    input carried: metadata, alpha where the format has it, grayscale if it was."""
    path = Path(path) if isinstance(path, str) else path
    fmt = check_output_name(path)
    rgb, alpha = picture.rgb, picture.alpha
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{path}: can only write uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    img = Image.fromarray(rgb, "RGB")
    if picture.gray:
        img = img.convert("L")
    if alpha is not None and fmt != "JPEG":
        img.putalpha(Image.fromarray(alpha, "L"))
    options = dict(format=fmt, **save_options(fmt, picture))
    if not is_local(path):  # an object store: one put, whole or not at all
        buf = io.BytesIO()
        img.save(buf, **options)
        put_whole(path, buf.getvalue())
        return
    with atomic_path(path) as tmp:
        img.save(tmp, **options)
