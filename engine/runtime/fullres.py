"""Full resolution: the network runs at a working size; its answer is applied to the full image here.

Only foreground pixels (mask > 0) are ever written, so the background comes back bit-identical. The
"affine" head's colour map is applied to the full-resolution pixels, keeping all their texture; the
"image" head's low-resolution colour change (output minus input) is upsampled and added.
numpy and Pillow only: this is the runtime path of every backend.

A picture is uint8, or uint16 for a file of 16 bits per sample: the network and the Lab transfer see its
8-bit reduction (its high bytes, as Pillow reads such a file), and the colour map they give is applied to
the full-precision samples.

A mask is uint8 (0..255, as read from its file) or float in [0, 1]; the same weights come of both. Nothing
here makes a float copy of the whole picture: work happens inside the object's box, a band of rows at a
time, so memory stays a small multiple of the picture's own bytes.

The batch hands over an 8-bit file's picture as Pillow decoded it (an RGB `Image`, `Pixels`), and it stays
in Pillow's memory to the encoder: the Lab statistics read it a band at a time and Pillow applies the colour
map (`map_image`, within one level of apply_affine's rounding). A numpy copy of a 12 MP picture each way, and
the numpy colour map, took 110 of a picture's 630 ms of CPU in a 2-core batch (measured).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..imageio import foreground
from .color import lab_to_rgb, move_lab_statistics, rgb_to_lab

Pixels = np.ndarray | Image.Image  # uint8 or uint16 (H, W, 3), or an 8-bit RGB Pillow image
LAB_SAMPLES = 65536  # pixels per side for the Lab statistics and the fit: plenty, and fast at 50 MP
BAND_ROWS = 128  # rows of the object's box worked on at a time


def as_mask8(mask: np.ndarray) -> np.ndarray:
    """A mask as uint8 0..255 (a float mask in [0, 1] rounded)."""
    if mask.dtype == np.uint8:
        return mask
    return np.round(np.clip(mask, 0.0, 1.0) * 255).astype(np.uint8)


def eight_bit(rgb: Pixels) -> Pixels:
    """An RGB picture at 8 bits: itself (uint8, or a Pillow image), or a uint16 picture's high bytes."""
    return rgb if not isinstance(rgb, np.ndarray) or rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)


def rows(rgb: Pixels, top: int, bottom: int) -> np.ndarray:
    """Rows top..bottom of a picture as an array (H', W, 3): a view of an array, a copy of an image's rows."""
    if isinstance(rgb, np.ndarray):
        return rgb[top:bottom]
    return np.asarray(rgb.crop((0, top, rgb.width, min(bottom, rgb.height))))


def weights(mask: np.ndarray) -> np.ndarray:
    """Blending weights in [0, 1] as float32, from a uint8 or float mask (a band of it)."""
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    return np.clip(mask.astype(np.float32, copy=False), 0.0, 1.0)


def to_network(rgb: Pixels, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (1, 3, S, S) and (1, 1, S, S) float32 from 8-bit RGB (an array or an image) and its mask."""
    picture = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    small = picture.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    image = np.asarray(small, np.float32).transpose(2, 0, 1)[None] / 255.0
    m8 = Image.fromarray(as_mask8(mask)).resize((size, size), Image.BILINEAR)
    m = np.asarray(m8, np.float32)
    binary = m > 127.5
    if not binary.any():  # an object too small to survive the resize: keep its strongest pixels
        binary = m >= m.max()
    return np.ascontiguousarray(image), binary.astype(np.float32)[None, None]


@dataclass
class Prepared:
    """One picture made ready for a backend: what the network takes at its working size, and what the
    full-resolution step needs. Made apart from the network (a batch makes the next one on another
    thread while the network runs)."""

    rgb: Pixels  # (H, W, 3) uint8 or uint16 at full resolution, or an 8-bit RGB image
    mask: np.ndarray  # (H, W) uint8 0..255, or float in [0, 1]
    image: np.ndarray  # (1, 3, S, S) float32, the network's input
    small_mask: np.ndarray  # (1, 1, S, S) float32
    lab_map: np.ndarray | None = None  # (12,) the Lab transfer's colour map, for a model that mixes it in


def prepare(rgb: Pixels, mask: np.ndarray, size: int, lab: bool = False) -> Prepared:
    """The network's inputs at `size`, and the Lab transfer's map when `lab`, from the picture's 8 bits
    (`eight_bit`)."""
    rgb8 = eight_bit(rgb)
    image, small_mask = to_network(rgb8, mask, size)
    return Prepared(rgb, mask, image, small_mask, lab_transfer_map(rgb8, mask) if lab else None)


def foreground_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of mask > 0 as slices, or None for an empty mask. A uint8 or boolean mask is read as it
    is (a boolean copy of a 12 MP one is 12 MB of fresh pages); a float one may hold NaN, which is not > 0."""
    if mask.dtype not in (np.uint8, np.bool_):
        mask = mask > 0
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(ys):
        return None
    return slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def peak(rgb: np.ndarray) -> int:
    """The largest sample of a uint8 or uint16 picture: 255 or 65535."""
    return int(np.iinfo(rgb.dtype).max)


def _mix(rgb: np.ndarray, mask: np.ndarray, target) -> np.ndarray:
    """A copy of rgb (uint8 or uint16) moved mask-weighted towards target(x, box) (float32, 0..the type's
    peak) inside the mask's bounding box, a band of rows at a time.

    Dense arithmetic over the box beats gathering the masked pixels; where the mask is 0 the value is
    x + 0.5, which truncates back to x exactly, so the background stays bit-identical."""
    out = rgb.copy()
    box = foreground_box(mask)
    if box is None:
        return out
    ys, xs = box
    for top in range(ys.start, ys.stop, BAND_ROWS):
        band = (slice(top, min(top + BAND_ROWS, ys.stop)), xs)
        x = rgb[band].astype(np.float32)
        mixed = target(x, band)
        mixed -= x
        mixed *= weights(mask[band])[..., None]
        mixed += x
        mixed += 0.5
        out[band] = np.clip(mixed, 0, peak(rgb), out=mixed).astype(rgb.dtype)
    return out


def apply_affine(rgb: np.ndarray, mask: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply a 3x4 colour map (12 numbers, row-major, on RGB in [0, 1]) to the masked pixels."""
    a, top = np.asarray(params, np.float32).reshape(3, 4), peak(rgb)
    matrix, offset = np.ascontiguousarray(a[:, :3].T), a[:, 3] * np.float32(top)

    def mapped(x, box):
        y = x @ matrix
        y += offset
        return np.clip(y, 0.0, float(top), out=y)

    return _mix(rgb, mask, mapped)


def check_strength(strength: float) -> None:
    """ValueError unless a blend's strength is within 0..1."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be within 0..1, not {strength}")


def map_image(img: Image.Image, mask: np.ndarray, params: np.ndarray, strength: float = 1.0) -> Image.Image:
    """apply_affine for an 8-bit RGB Pillow image, by Pillow, `strength` (0..1) of the way: a new image.
    Pillow rounds the mapped colour before it blends it in, so a pixel under a soft edge may differ from
    apply_affine's by one level; where the mask is 0 the picture is untouched."""
    check_strength(strength)
    out = img.copy()
    box = foreground_box(mask)
    if box is None:
        return out
    ys, xs = box
    corner = (int(xs.start), int(ys.start), int(xs.stop), int(ys.stop))
    a = np.asarray(params, np.float64).reshape(3, 4)
    matrix = tuple(float(v) for row in a for v in (*row[:3], row[3] * 255.0))  # Pillow maps 0..255 values
    m8 = as_mask8(mask[box])
    if strength < 1.0:
        m8 = (m8 * np.float32(strength) + np.float32(0.5)).astype(np.uint8)
    out.paste(img.crop(corner).convert("RGB", matrix), corner[:2], Image.fromarray(m8, "L"))
    return out


def lab_transfer_map(rgb: Pixels, mask: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """The 3x4 colour map (12 numbers, as the affine head's) closest, in least squares over the
    foreground's pixels, to moving their Lab mean and std `strength` of the way to the background's.

    One RGB map instead of the per-pixel Lab round trip: it scores as well (docs/results.md) at a fraction
    of the cost (a few thousand pixels of Lab)."""
    f, b = _samples(rgb, mask)
    if not len(f) or not len(b):
        return np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], np.float32)
    moved = lab_to_rgb(move_lab_statistics(rgb_to_lab(f), rgb_to_lab(b), strength))
    x = np.concatenate([f / 255.0, np.ones((len(f), 1))], 1)
    a, *_ = np.linalg.lstsq(x, moved / 255.0, rcond=None)  # (4, 3): x @ a ~ moved
    return a.T.reshape(12).astype(np.float32)


def _samples(rgb: Pixels, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every n-th pixel (in raster order) of the mask's foreground, and every m-th of its background, n and m
    chosen so that about LAB_SAMPLES of each are taken. Read a band of rows at a time (`rows`), so that no
    index or boolean copy of the whole picture is made (a 12 MP picture's would be 12 to 100 MB of fresh pages)."""
    bands = [(top, foreground(mask[top:top + BAND_ROWS])) for top in range(0, mask.shape[0], BAND_ROWS)]
    inside = sum(int(np.count_nonzero(fg)) for _, fg in bands)
    steps = (max(1, inside // LAB_SAMPLES), max(1, (mask.size - inside) // LAB_SAMPLES))
    taken, seen = ([], []), [0, 0]
    for top, fg in bands:
        pixels = rows(rgb, top, top + BAND_ROWS).reshape(-1, 3)
        for side, where in enumerate((fg, ~fg)):
            idx = np.flatnonzero(where)
            first = (-seen[side]) % steps[side]  # the band's first pixel whose rank is a multiple of the step
            taken[side].append(pixels[idx[first::steps[side]]])
            seen[side] += len(idx)
    return tuple(np.concatenate(t) if t else np.zeros((0, 3), np.uint8) for t in taken)


def apply_residual(rgb: np.ndarray, mask: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Add the network's low-resolution colour change (after - before, (3, S, S)) to the masked pixels."""
    h, w = rgb.shape[:2]

    def changed(x, box):
        delta = [np.asarray(Image.fromarray(c.astype(np.float32), "F").resize((w, h), Image.BILINEAR))[box]
                 for c in (after - before)]
        return x + np.stack(delta, -1) * float(peak(rgb))

    return _mix(rgb, mask, changed)


def blend(rgb: np.ndarray, result: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Move only the masked pixels `strength` (0..1) of the way from `rgb` to `result`."""
    check_strength(strength)
    if strength == 1.0:
        return result
    fg = (mask > 0).astype(np.float32)
    return _mix(rgb, fg, lambda x, box: x + strength * (result[box].astype(np.float32) - x))
