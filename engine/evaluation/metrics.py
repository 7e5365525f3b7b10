"""Harmonization metrics (MSE and fMSE on 0..255, PSNR with peak 255) and colour-transfer baselines."""
from __future__ import annotations

import numpy as np


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


# sRGB (D65) <-> CIE Lab, for Reinhard colour transfer.
_M = np.array([[0.4124564, 0.3575761, 0.1804375],
               [0.2126729, 0.7151522, 0.0721750],
               [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float sRGB (..., 3) to Lab."""
    c = rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab (..., 3) to uint8 sRGB."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = np.clip(xyz @ np.linalg.inv(_M).T, 0, 1)
    c = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(c * 255 + 0.5, 0, 255).astype(np.uint8)


def move_lab_statistics(lab_f: np.ndarray, lab_b: np.ndarray, strength: float) -> np.ndarray:
    """Foreground Lab pixels (N, 3) with their mean and std moved `strength` of the way to those of the
    background pixels (M, 3)."""
    mf, sf = lab_f.mean(0), lab_f.std(0) + 1e-6
    mb, sb = lab_b.mean(0), lab_b.std(0) + 1e-6
    target_m, target_s = mf + strength * (mb - mf), sf + strength * (sb - sf)
    return (lab_f - mf) / sf * target_s + target_m


def reinhard(rgb: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Move the foreground's Lab mean and std `strength` of the way to the background's (Reinhard 2001)."""
    fg = mask > 0.5
    if not fg.any() or fg.all():
        return rgb.copy()
    out = rgb.copy()
    out[fg] = lab_to_rgb(move_lab_statistics(rgb_to_lab(rgb[fg]), rgb_to_lab(rgb[~fg]), strength))
    return out
