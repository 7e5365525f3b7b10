"""Full resolution: the network runs at a working size; its answer is applied to the full image here.

Only foreground pixels (mask > 0) are ever written, so the background comes back bit-identical. The
"affine" head's colour map is applied to the full-resolution pixels, keeping all their texture; the
"image" head's low-resolution colour change (output minus input) is upsampled and added.
numpy and Pillow only: this is the runtime path of every backend.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .color import lab_to_rgb, move_lab_statistics, rgb_to_lab

LAB_SAMPLES = 65536  # pixels per side for the Lab statistics and the fit: plenty, and fast at 50 MP


def to_network(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (1, 3, S, S) and (1, 1, S, S) float32 from uint8 RGB and a [0, 1] mask."""
    small = Image.fromarray(rgb).resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    image = np.asarray(small, np.float32).transpose(2, 0, 1)[None] / 255.0
    m8 = Image.fromarray(np.round(mask * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    m = np.asarray(m8, np.float32)
    binary = m > 127.5
    if not binary.any():  # an object too small to survive the resize: keep its strongest pixels
        binary = m >= m.max()
    return np.ascontiguousarray(image), binary.astype(np.float32)[None, None]


def foreground_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of mask > 0 as slices, or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _mix(rgb: np.ndarray, mask: np.ndarray, target) -> np.ndarray:
    """rgb moved mask-weighted towards target(x, box) (float32, 0..255) inside the mask's bounding box.

    NOTE: dense arithmetic over the box beats gathering the masked pixels; where the mask is 0 the
    value is x + 0.5, which truncates back to x exactly, so the background stays bit-identical."""
    out = rgb.copy()
    box = foreground_box(mask > 0)
    if box is None:
        return out
    x = rgb[box].astype(np.float32)
    mixed = target(x, box)
    mixed -= x
    mixed *= mask[box][..., None]
    mixed += x
    mixed += 0.5
    out[box] = np.clip(mixed, 0, 255).astype(np.uint8)
    return out


def apply_affine(rgb: np.ndarray, mask: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply a 3x4 colour map (12 numbers, row-major, on RGB in [0, 1]) to the masked pixels."""
    a = np.asarray(params, np.float32).reshape(3, 4)

    def mapped(x, box):
        y = x @ a[:, :3].T
        y += a[:, 3] * 255.0
        return np.clip(y, 0.0, 255.0, out=y)

    return _mix(rgb, mask, mapped)


def lab_transfer_map(rgb: np.ndarray, mask: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """The 3x4 colour map (12 numbers, as the affine head's) closest, in least squares over the
    foreground's pixels, to moving their Lab mean and std `strength` of the way to the background's.

    One RGB map instead of the per-pixel Lab round trip: it scores as well (docs/results.md) at a fraction
    of the cost (a few thousand pixels of Lab)."""
    fg = (mask > 0.5).ravel()
    pixels = rgb.reshape(-1, 3)

    def sample(idx: np.ndarray) -> np.ndarray:
        return pixels[idx[:: max(1, len(idx) // LAB_SAMPLES)]]

    f, b = sample(np.flatnonzero(fg)), sample(np.flatnonzero(~fg))
    if not len(f) or not len(b):
        return np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], np.float32)
    moved = lab_to_rgb(move_lab_statistics(rgb_to_lab(f), rgb_to_lab(b), strength))
    x = np.concatenate([f / 255.0, np.ones((len(f), 1))], 1)
    a, *_ = np.linalg.lstsq(x, moved / 255.0, rcond=None)  # (4, 3): x @ a ~ moved
    return a.T.reshape(12).astype(np.float32)


def apply_residual(rgb: np.ndarray, mask: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Add the network's low-resolution colour change (after - before, (3, S, S)) to the masked pixels."""
    h, w = rgb.shape[:2]

    def changed(x, box):
        delta = [np.asarray(Image.fromarray(c.astype(np.float32), "F").resize((w, h), Image.BILINEAR))[box]
                 for c in (after - before)]
        return x + np.stack(delta, -1) * 255.0

    return _mix(rgb, mask, changed)


def blend(rgb: np.ndarray, result: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Move only the masked pixels `strength` (0..1) of the way from `rgb` to `result`."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be within 0..1, not {strength}")
    if strength == 1.0:
        return result
    fg = (mask > 0).astype(np.float32)
    return _mix(rgb, fg, lambda x, box: x + strength * (result[box].astype(np.float32) - x))


def harmonize_over(harmonize, canvas: np.ndarray, layer: np.ndarray, mask8: np.ndarray,
                   rect: tuple[int, int, int, int], strength: float) -> np.ndarray:
    """A layer's new RGB in `rect` (x, y, w, h), harmonized by `harmonize(rgb, mask, strength)` (a
    backend's) against the canvas under it: what the GIMP plug-in's engine call returns.

    The layer's own colours are mapped wherever its mask is above zero, and GIMP composites the new
    layer through the same mask: so a feathered edge is not blended twice, and nothing of the
    background leaks into the layer."""
    x, y, w, h = rect
    fg = (mask8 > 0)[..., None]
    composite = canvas.copy()
    np.copyto(composite[y:y + h, x:x + w], layer, where=fg)
    full_mask = np.zeros(canvas.shape[:2], np.float32)
    full_mask[y:y + h, x:x + w] = fg[..., 0]
    out = layer.copy()
    np.copyto(out, harmonize(composite, full_mask, strength)[y:y + h, x:x + w], where=fg)
    return out
