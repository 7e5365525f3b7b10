"""sRGB (D65) <-> CIE Lab, and moving a set of Lab pixels' statistics towards another's: the colour maths
that the full-resolution path (the Lab transfer in the shipped ensemble) and the baselines share."""
from __future__ import annotations

import numpy as np

SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
               [0.2126729, 0.7151522, 0.0721750],
               [0.0193339, 0.1191920, 0.9503041]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] to linear light."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to sRGB values."""
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float sRGB (..., 3) to Lab."""
    c = rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    lin = srgb_to_linear(c)
    xyz = lin @ SRGB_TO_XYZ.T / D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab (..., 3) to uint8 sRGB."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * D65_WHITE
    lin = np.clip(xyz @ np.linalg.inv(SRGB_TO_XYZ).T, 0, 1)
    return np.clip(linear_to_srgb(lin) * 255 + 0.5, 0, 255).astype(np.uint8)


def move_lab_statistics(lab_f: np.ndarray, lab_b: np.ndarray, strength: float) -> np.ndarray:
    """Foreground Lab pixels (N, 3) with their mean and std moved `strength` of the way to those of the
    background pixels (M, 3)."""
    mf, sf = lab_f.mean(0), lab_f.std(0) + 1e-6
    mb, sb = lab_b.mean(0), lab_b.std(0) + 1e-6
    target_m, target_s = mf + strength * (mb - mf), sf + strength * (sb - sf)
    return (lab_f - mf) / sf * target_s + target_m
