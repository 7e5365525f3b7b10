"""A fake GIMP host for the plug-in's logic: images and layers as numpy arrays, the GimpHost interface."""
from __future__ import annotations

import contextlib

import numpy as np

from engine.gimp.layer import DTYPES  # the wire's sample names as numpy dtypes


def perceptual8(rgb, precision):
    """A layer's samples as perceptual 0..255 floats, as GIMP shows them in an 8-bit view."""
    from engine.runtime.color import linear_to_srgb

    fmt, linear = precision
    if (fmt, linear) == ("u8", False):
        return rgb
    v = rgb.astype(np.float64) / (1 if fmt in ("float", "double") else np.iinfo(DTYPES[fmt]).max)
    return np.clip(linear_to_srgb(v) if linear else v, 0, 1) * 255


class Layer:
    def __init__(self, name, rgb, alpha=None, offsets=(0, 0), mask=None):
        self.name, self.rgb, self.alpha, self.offsets, self.mask = name, rgb.copy(), alpha, offsets, mask
        self.visible = True

    def copy(self):
        return Layer(self.name, self.rgb, None if self.alpha is None else self.alpha.copy(), self.offsets,
                     None if self.mask is None else self.mask.copy())


class Image:
    def __init__(self, width, height, base="RGB", precision=("u8", False)):
        self.width, self.height, self.base = width, height, base
        self.precision = precision  # (samples, linear), as GimpHost.pixel_format gives it; layers hold that dtype
        self.layers: list[Layer] = []  # top first, like GIMP
        self.selection = None  # (H, W) u8 or None
        self.undo_depth = 0
        self.undo_groups = 0


class FakeHost:
    """The GimpHost interface over Image and Layer; records progress and refuses to nest undo groups."""

    def __init__(self, folder="/nonexistent"):
        self.folder = folder
        self.progress_values: list[float] = []
        self.progress_texts: list[str] = []
        self.pulses = 0

    def is_rgb(self, image):
        return image.base == "RGB"

    def pixel_format(self, image):
        return image.precision

    def canvas_size(self, image):
        return image.width, image.height

    def name(self, layer):
        return layer.name

    def canvas_region(self, image, layer):
        ox, oy = layer.offsets
        h, w = layer.rgb.shape[:2]
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, image.width), min(oy + h, image.height)
        return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None

    def _local(self, layer, rect):
        x, y, w, h = rect
        ox, oy = layer.offsets
        return slice(y - oy, y - oy + h), slice(x - ox, x - ox + w)

    def read_rgb(self, layer, rect, fmt="u8", linear=False):
        assert layer.rgb.dtype == DTYPES[fmt], f"read as {fmt}, stored as {layer.rgb.dtype}"
        return layer.rgb[self._local(layer, rect)].tobytes()

    def read_mask(self, image, layer, rect):
        from gimpfu_shim import UserError

        if layer.mask is not None:
            return "layer mask", layer.mask[self._local(layer, rect)].tobytes()
        x, y, w, h = rect
        if image.selection is not None and image.selection.any():
            return "selection", image.selection[y:y + h, x:x + w].tobytes()
        if layer.alpha is not None:
            return "alpha", layer.alpha[self._local(layer, rect)].tobytes()
        raise UserError("Nothing marks the object")

    def flatten(self, image, skip=None):
        """What is visible: layers composited bottom-up through alpha and mask (white canvas below)."""
        out = np.full((image.height, image.width, 3), 255.0)
        for layer in reversed(image.layers):
            if layer is skip or not layer.visible:
                continue
            rect = self.canvas_region(image, layer)
            if rect is None:
                continue
            x, y, w, h = rect
            sl = self._local(layer, rect)
            a = np.ones((h, w)) if layer.alpha is None else layer.alpha[sl] / 255.0
            if layer.mask is not None:
                a = a * layer.mask[sl] / 255.0
            region = out[y:y + h, x:x + w]
            out[y:y + h, x:x + w] = region + a[..., None] * (perceptual8(layer.rgb[sl], image.precision) - region)
        return np.round(out).astype(np.uint8)

    def read_background(self, image, layer):
        return self.flatten(image, skip=layer).tobytes()

    def add_copy_above(self, image, layer, name):
        assert image.undo_depth > 0, "layer added outside the undo group"
        new = layer.copy()
        new.name = name
        image.layers.insert(image.layers.index(layer), new)
        return new

    def write_rgb(self, layer, rect, rgb, fmt="u8", linear=False):
        x, y, w, h = rect
        layer.rgb[self._local(layer, rect)] = np.frombuffer(rgb, DTYPES[fmt]).reshape(h, w, 3)

    @contextlib.contextmanager
    def undo_group(self, image):
        image.undo_depth += 1
        image.undo_groups += 1
        try:
            yield
        finally:
            image.undo_depth -= 1

    def progress(self, fraction, text=None):
        self.progress_values.append(fraction)
        if text is not None:
            self.progress_texts.append(text)

    def progress_text(self, text):
        self.progress_texts.append(text)

    def progress_pulse(self):
        self.pulses += 1

    def plugin_folder(self):
        return self.folder
