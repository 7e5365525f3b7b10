#!/usr/bin/env python3
"""Filters > Harmonize Layer: recolour the selected layer to match the image under it.

The object is the layer's mask, else the selection, else the layer's alpha. The engine (a running
`harmonize serve`, else the engine's interpreter for this one call) does the work; this side reads
pixels, writes the new layer above the source in one undo step, and shows progress and errors.
Standard library only: GIMP's Python has no numpy.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shim and client sit beside this file

import client  # noqa: E402
from gimpfu_shim import PF_OPTION, PF_SLIDER, UserError, main, register  # noqa: E402
from protocol import BACKENDS  # noqa: E402


def harmonize_layer(host, image, layer, strength=1.0, backend="auto"):
    """Add a harmonized copy of `layer` directly above it; returns the new layer."""
    if isinstance(backend, int):  # gimpfu's PF_OPTION gives an index
        backend = BACKENDS[backend]
    if not host.is_rgb(image):
        raise UserError("Harmonize Layer needs an RGB image; convert it with Image > Mode > RGB.")
    rect = host.canvas_region(image, layer)
    if rect is None:
        raise UserError("The layer lies entirely outside the canvas.")
    host.progress(0.0, "Harmonize Layer")
    rgb = host.read_rgb(layer, rect)
    source, mask = host.read_mask(image, layer, rect)
    if mask.count(0) == len(mask):
        raise UserError(f"The {source} is empty inside the canvas: nothing marks the object.")
    background = host.read_background(image, layer)
    host.progress(0.25)
    config = client.read_config(host.plugin_folder())
    try:
        width, height = host.canvas_size(image)
        out = client.harmonize(width, height, rect, background, rgb, mask, strength, backend, config)
    except client.EngineError as exc:
        raise UserError(f"Harmonize Layer: {exc}") from None
    host.progress(0.8)
    with host.undo_group(image):
        new = host.add_copy_above(image, layer, f"{host.name(layer)} (harmonized)")
        host.write_rgb(new, rect, out)
    host.progress(1.0)
    return new


register(
    "python-fu-harmonize-layer",
    "Harmonize the layer with the image under it",
    "Recolours the selected layer (its object: the layer mask, else the selection, else its alpha) so that "
    "its lighting and colours match the image under it, as a new layer above it.",
    "fmm-harmonize", "fmm-harmonize", "2026",
    "Harmonize Layer", "RGB*",
    [
        (PF_SLIDER, "strength", "Strength", 1.0, (0.0, 1.0, 0.05)),
        (PF_OPTION, "backend", "Engine backend", 0, list(BACKENDS)),
    ],
    [],
    harmonize_layer,
    menu="<Image>/Filters",
)

if __name__ == "__main__":
    main()
