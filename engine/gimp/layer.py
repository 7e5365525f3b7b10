"""What the engine does with one Harmonize Layer request (plugin/protocol.py Request): the layer composed
over the canvas under it, harmonized by a backend, and its new RGB in the layer's own precision.

8-bit perceptual layers go through `harmonize_over` exactly as `harmonize run` would harmonize the
composite. Layers of higher precision (16- and 32-bit integer, half and single float, linear or
perceptual) are shown to the network and the colour statistics at 8 bits, as every picture is, and the
colour map that comes back is applied to their full-precision values; pixels outside the object come back
bit for bit as they came.
"""
from __future__ import annotations

import numpy as np

from plugin.protocol import FORMATS, Request, Result

from ..runtime.color import linear_to_srgb, srgb_to_linear
from ..runtime.fullres import weights

DTYPES = {"u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "float": np.float32, "double": np.float64}
assert DTYPES.keys() == FORMATS.keys()


def harmonize_over(harmonize, canvas: np.ndarray, layer: np.ndarray, mask8: np.ndarray,
                   rect: tuple[int, int, int, int], strength: float) -> np.ndarray:
    """A layer's new RGB in `rect` (x, y, w, h), harmonized by `harmonize(rgb, mask, strength)` (a
    backend's) against the canvas under it.

    The layer's own colours are mapped wherever its mask is above zero, and GIMP composites the new
    layer through the same mask: so a feathered edge is not blended twice, and nothing of the
    background leaks into the layer."""
    x, y, w, h = rect
    fg = mask8 > 0
    composite, full_mask = _over(canvas, layer, fg, rect)
    out = layer.copy()
    np.copyto(out, harmonize(composite, full_mask, strength)[y:y + h, x:x + w], where=fg[..., None])
    return out


def _over(canvas: np.ndarray, layer8: np.ndarray, fg: np.ndarray, rect: tuple[int, int, int, int]):
    """The canvas with the layer's 8-bit colours where `fg` (its mask above zero) holds, and `fg` as a uint8
    mask (255 inside) of the canvas's size: the composite the network is shown. uint8, not float: the same
    weights, a quarter of the memory, and the mask's checks read its extremes (fullres)."""
    x, y, w, h = rect
    composite = canvas.copy()
    np.copyto(composite[y:y + h, x:x + w], layer8, where=fg[..., None])
    full_mask = np.zeros(canvas.shape[:2], np.uint8)
    full_mask[y:y + h, x:x + w] = fg * np.uint8(255)
    return composite, full_mask


def answer(backend, request: Request) -> Result:
    """The backend's answer to one request: the layer's new RGB in its rect and format."""
    W, H, (_, _, w, h) = request.width, request.height, request.rect
    canvas = np.frombuffer(request.background, np.uint8).reshape(H, W, 3)
    layer = np.frombuffer(request.rgb, DTYPES[request.format]).reshape(h, w, 3)
    mask8 = np.frombuffer(request.mask, np.uint8).reshape(h, w)
    if request.format == "u8" and not request.linear:
        out = harmonize_over(backend.harmonize, canvas, layer, mask8, request.rect, request.strength)
    else:
        out = _harmonize_precise(backend, canvas, layer, mask8, request)
    return Result(out.tobytes(), backend.name, backend.device)


def _perceptual(layer: np.ndarray, fmt: str, linear: bool) -> np.ndarray:
    """A layer's samples as perceptual (sRGB-curved) float64, 1.0 = white."""
    v = layer.astype(np.float64)
    if fmt not in ("float", "double"):
        v /= np.iinfo(DTYPES[fmt]).max
    return np.sign(v) * linear_to_srgb(np.abs(v)) if linear else v  # float layers may hold values past 0..1


def _stored(v: np.ndarray, fmt: str, linear: bool) -> np.ndarray:
    """Perceptual float samples back in the layer's format: the inverse of `_perceptual`."""
    if linear:
        v = np.sign(v) * srgb_to_linear(np.abs(v))
    if fmt in ("float", "double"):
        return v.astype(DTYPES[fmt])
    top = np.iinfo(DTYPES[fmt]).max
    return np.round(np.clip(v, 0.0, 1.0) * top).astype(DTYPES[fmt])


def _harmonize_precise(backend, canvas: np.ndarray, layer: np.ndarray, mask8: np.ndarray,
                       request: Request) -> np.ndarray:
    """The colour map found for the layer at 8 bits, applied to its full-precision values inside the mask."""
    x, y, w, h = request.rect
    v = _perceptual(layer, request.format, request.linear)
    layer8 = np.round(np.clip(v, 0.0, 1.0) * 255).astype(np.uint8)
    fg = mask8 > 0
    composite, full_mask = _over(canvas, layer8, fg, request.rect)
    p = backend.prepare(composite, full_mask)
    found = backend.answer(p)
    if backend.head == "affine":  # the 3x4 map on [0, 1] RGB, as fullres.apply_affine applies it to 8 bits
        a = np.asarray(found, np.float64).reshape(3, 4)
        target = v @ a[:, :3].T + a[:, 3]
    else:  # an image head's change, as it moved the 8-bit pixels
        moved = backend.finish(p, found)[y:y + h, x:x + w]
        target = v + (moved.astype(np.float64) - layer8) / 255.0
    mixed = v + (target - v) * (request.strength * weights(mask8)[..., None])
    out = layer.copy()
    np.copyto(out, _stored(mixed, request.format, request.linear), where=fg[..., None])
    return out
