#!/usr/bin/env python3
"""Filters > Harmonize Layer: recolour the selected layer to match the image under it.

The object is the layer's mask, else the selection, else the layer's alpha. The engine (a `harmonize
serve` that the first call starts and later calls reuse) does the work; this side reads pixels, writes
the new layer above the source in one undo step, and shows progress and errors. Standard library only:
GIMP's Python has no numpy.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shim and client sit beside this file

import client  # noqa: E402
from gimpfu_shim import PF_OPTION, PF_SLIDER, UserError, main, register  # noqa: E402
from protocol import DEVICES, Request  # noqa: E402

LABELS = {"auto": "Auto", "cpu": "CPU", "gpu": "GPU"}


def offered_devices(folder: str) -> list:
    """The devices this engine can run (recorded by `harmonize gimp install`), in menu order."""
    try:
        recorded = client.read_config(folder).get("devices") or ()
    except client.EngineError:
        recorded = ()
    return [d for d in DEVICES if d in recorded] or ["auto", "cpu"]


def harmonize_layer(host, image, layer, strength=1.0, device="auto"):
    """Add a harmonized copy of `layer` directly above it; returns the new layer."""
    if isinstance(device, int):  # gimpfu's PF_OPTION gives an index
        device = offered_devices(host.plugin_folder())[device]
    if not host.is_rgb(image):
        raise UserError("Harmonize Layer needs an RGB image; convert it with Image > Mode > RGB.")
    rect = host.canvas_region(image, layer)
    if rect is None:
        raise UserError("The layer lies entirely outside the canvas.")
    host.progress(0.0, "Harmonize Layer")
    fmt, linear = host.pixel_format(image)  # the new layer keeps the source's precision
    rgb = host.read_rgb(layer, rect, fmt, linear)
    source, mask = host.read_mask(image, layer, rect)
    if mask.count(0) == len(mask):
        raise UserError(f"The {source} is empty inside the canvas: nothing marks the object.")
    background = host.read_background(image, layer)
    host.progress(0.25)
    config = client.read_config(host.plugin_folder())
    request = Request(*host.canvas_size(image), rect, background, rgb, mask, strength, device, fmt, linear)
    try:
        result = while_pulsing(host, "Harmonize Layer: waiting for the engine",
                               lambda status: client.harmonize(request, config, status))
    except client.EngineError as exc:
        raise UserError(f"Harmonize Layer: {exc}") from None
    host.progress(0.8)
    where = LABELS.get(result.device, "?")
    with host.undo_group(image):
        new = host.add_copy_above(image, layer, f"{host.name(layer)} (harmonized, {where})")
        host.write_rgb(new, rect, result.rgb, fmt, linear)
    host.progress(1.0)
    host.progress_text(f"Harmonized on the {where} ({result.backend})")
    return new


def while_pulsing(host, text, work):
    """`work(status)` on a thread while GIMP's progress bar pulses (GIMP is only called from this thread);
    the bar shows `text`, then whatever `status` was last told."""
    texts, result = [text], {}

    def target():
        try:
            result["value"] = work(texts.append)
        except BaseException as exc:  # re-raised below, on GIMP's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    shown = None
    while thread.is_alive():
        if texts[-1] != shown:
            shown = texts[-1]
            host.progress_text(shown)
        host.progress_pulse()
        thread.join(0.1)
    if "error" in result:
        raise result["error"]
    return result["value"]


register(
    "python-fu-harmonize-layer",
    "Harmonize the layer with the image under it",
    "Recolours the selected layer (its object: the layer mask, else the selection, else its alpha) so that "
    "its lighting and colours match the image under it, as a new layer above it.",
    "fmm-harmonize", "fmm-harmonize", "2026",
    # "...": the item opens a dialog. "_" marks the mnemonics: Z is free in GIMP's Filters menu (H is
    # En_hance's), and T and D are none of the dialog's own buttons' (_OK, _Cancel, _Reset, _Load Saved
    # Settings, _Save Settings, _Help).
    "Harmoni_ze Layer...", "RGB*",
    [
        (PF_SLIDER, "strength", "S_trength", 1.0, (0.0, 1.0, 0.05)),
        (PF_OPTION, "device", "_Device", 0,
         [LABELS[d] for d in offered_devices(os.path.dirname(os.path.abspath(__file__)))]),
    ],
    [],
    harmonize_layer,
    menu="<Image>/Filters",
)

if __name__ == "__main__":
    main()
