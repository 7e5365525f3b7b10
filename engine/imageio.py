"""Reading images and masks with clear errors, and writing outputs atomically (numpy and Pillow only)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_path
from .errors import InputError
from .paths import is_local

Image.MAX_IMAGE_PIXELS = 200_000_000  # Pillow's own bomb guard; MAX_PIXELS below is checked first
MAX_PIXELS = 100_000_000  # default limit for one picture: editor images reach 50 MP
MB_PER_MEGAPIXEL = 20  # peak memory of read, harmonize and write: 19.4 MB per megapixel at 50 MP


@dataclass
class Picture:
    """An RGB image as uint8 (H, W, 3), with the alpha channel kept aside when the file had one."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None


def _open(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Decode an image; its size is checked from the header first, so a huge one costs no memory."""
    try:
        source = path if is_local(path) else path.open("rb")  # a URL is read through its filesystem
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
    return ImageOps.exif_transpose(img)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float grayscale modes scaled to 8 bit (Pillow's own convert would clip them)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Picture:
    """An image file as 8-bit RGB (grayscale, palette, 16-bit and CMYK converted), alpha kept aside;
    InputError when it has more than `max_pixels` pixels (None: no limit)."""
    img = _to_8bit(_open(path, max_pixels))
    alpha = None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        alpha = np.asarray(img)[..., 3].copy()
    return Picture(np.ascontiguousarray(np.asarray(img.convert("RGB"))), alpha)


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as float32 (H, W) in [0, 1], 1 = foreground; `size` (W, H) must match if given.

    An RGBA or LA mask uses its alpha channel when the colour channels are constant.
    """
    img = _to_8bit(_open(path, max(MAX_PIXELS, size[0] * size[1]) if size else MAX_PIXELS))
    if img.mode in ("RGBA", "LA") and np.ptp(np.asarray(img.convert("L"))) == 0:
        img = img.getchannel("A")
    mask = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if size is not None and img.size != tuple(size):
        raise InputError(
            f"{path}: mask is {img.size[0]}x{img.size[1]} but the image is {size[0]}x{size[1]}"
        )
    return mask


def check_mask(mask: np.ndarray, name: str = "mask") -> None:
    """Refuse a mask with no foreground or no background: there is nothing to harmonize."""
    fg = mask > 0.5
    if not fg.any():
        raise InputError(f"{name}: mask is empty (no foreground pixel above 0.5)")
    if fg.all():
        raise InputError(f"{name}: mask covers the whole image; there is no background to match")


SAVE_OPTIONS = {".jpg": dict(quality=95), ".jpeg": dict(quality=95), ".webp": dict(quality=95)}


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """Write an RGB(A) uint8 image atomically: a temporary file in the same folder, then a rename."""
    path = Path(path) if isinstance(path, str) else path
    ext = path.suffix.lower()
    if ext not in Image.registered_extensions():
        raise InputError(f"{path}: unknown image format {ext!r}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{path}: can only write uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    img = Image.fromarray(rgb, "RGB")
    if alpha is not None and ext not in (".jpg", ".jpeg"):
        img.putalpha(Image.fromarray(alpha, "L"))
    options = dict(format=Image.registered_extensions()[ext], **SAVE_OPTIONS.get(ext, {}))
    if not is_local(path):  # an object store: one put, whole or not at all
        buf = io.BytesIO()
        img.save(buf, **options)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        return
    with atomic_path(path) as tmp:
        img.save(tmp, **options)
