"""Harmonization metrics (MSE and fMSE on 0..255, PSNR with peak 255) and colour-transfer baselines."""
from __future__ import annotations

import numpy as np

from ..runtime.color import lab_to_rgb, move_lab_statistics, rgb_to_lab


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels and channels, on 0..255."""
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with peak 255 (capped at 100 for identical images)."""
    e = mse(a, b)
    return 100.0 if e == 0 else float(10 * np.log10(255.0**2 / e))


def fmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Squared error summed over foreground pixels (mask > 0.5) and channels / (foreground pixels x 3)."""
    fg = mask > 0.5
    if not fg.any():
        return 0.0
    d = a[fg].astype(np.float64) - b[fg].astype(np.float64)
    return float(np.sum(d**2) / (fg.sum() * 3))


def reinhard(rgb: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Move the foreground's Lab mean and std `strength` of the way to the background's (Reinhard 2001)."""
    fg = mask > 0.5
    if not fg.any() or fg.all():
        return rgb.copy()
    out = rgb.copy()
    out[fg] = lab_to_rgb(move_lab_statistics(rgb_to_lab(rgb[fg]), rgb_to_lab(rgb[~fg]), strength))
    return out


def object_mean_lab(rgb: np.ndarray, fg: np.ndarray, limit: int = 65536) -> np.ndarray:
    """The mean Lab colour of the object's pixels (`fg` boolean), from at most `limit` of them evenly spread."""
    pixels = rgb[fg]
    return rgb_to_lab(pixels[:: max(1, len(pixels) // limit)]).mean(0)


def colour_shift(comp: np.ndarray, out: np.ndarray, real: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """How a method moved the object's mean Lab colour against how far the real photo needs it moved: the
    cosine of the two directions (nan when the method moved nothing, or when the needed move is under 0.5 Lab
    units, too small to have a direction) and the size of the method's move over the needed one (nan too when
    the needed move is under 0.5 units)."""
    fg = mask > 0.5
    if not fg.any():
        return float("nan"), float("nan")
    start = object_mean_lab(comp, fg)
    moved, needed = object_mean_lab(out, fg) - start, object_mean_lab(real, fg) - start
    size_moved, size_needed = float(np.linalg.norm(moved)), float(np.linalg.norm(needed))
    if size_needed < 0.5:
        return float("nan"), float("nan")
    cosine = float(moved @ needed / (size_moved * size_needed)) if size_moved > 0 else float("nan")
    return cosine, size_moved / size_needed
