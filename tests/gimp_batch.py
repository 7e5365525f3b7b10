"""Runs inside a real GIMP 3 (python-fu-eval): build an image with a pasted layer, call the installed
Harmonize Layer through the PDB, and dump what came out as raw bytes for tests/test_gimp_real.py.

Reads <work>/case.json: {"source": "alpha" | "layer mask" | "selection", "offsets": [x, y], and optionally
"precision": a Gimp.Precision name such as "U16_NON_LINEAR", to which the image is converted, the object's
samples then set between the 8-bit steps}; the work folder holds photo.png (the scene), object.png (RGBA, the
pasted object) and mask.png (its mask).
"""
import array
import json
import os
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

WORK = os.environ.get("FMM_WORK", "/tmp/fmmtest")


def pixels(drawable, fmt, rect=None):
    x, y, w, h = rect or (0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))


def main():
    case = json.load(open(os.path.join(WORK, "case.json")))
    load = lambda name: Gio.File.new_for_path(os.path.join(WORK, name))  # noqa: E731
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, load("photo.png"))
    photo = image.get_layers()[0]
    layer = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, load("object.png"))
    image.insert_layer(layer, None, 0)
    layer.set_offsets(*case["offsets"])
    mask_layer = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, load("mask.png"))
    mask_bytes = pixels(mask_layer, "Y' u8")
    mask_layer.delete()
    w, h = layer.get_width(), layer.get_height()
    if case["source"] != "alpha":
        alpha = bytearray(pixels(layer, "R'G'B'A u8"))
        alpha[3::4] = b"\xff" * (w * h)  # an opaque layer: only the mask or selection marks the object
        layer.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", bytes(alpha))
    if case["source"] == "layer mask":
        mask = layer.create_mask(Gimp.AddMaskType.WHITE)
        layer.add_mask(mask)
        mask.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "Y' u8", mask_bytes)
        mask.get_buffer().flush()
    elif case["source"] == "selection":
        channel = Gimp.Channel.new(image, "sel", image.get_width(), image.get_height(), 100.0,
                                   Gegl.Color.new("black"))
        image.insert_channel(channel, None, 0)
        ox, oy = case["offsets"]
        canvas = bytearray(image.get_width() * image.get_height())
        for row in range(h):
            cy = oy + row
            if 0 <= cy < image.get_height():
                for col in range(w):
                    cx = ox + col
                    if 0 <= cx < image.get_width():
                        canvas[cy * image.get_width() + cx] = mask_bytes[row * w + col]
        whole = Gegl.Rectangle.new(0, 0, image.get_width(), image.get_height())
        channel.get_buffer().set(whole, "Y' u8", bytes(canvas))
        channel.get_buffer().flush()
        image.select_item(Gimp.ChannelOps.REPLACE, channel)
        image.remove_channel(channel)
    native = None
    if case.get("precision"):
        native = precise(image, layer, case["precision"])
    layers_before = len(image.get_layers())
    source_before = pixels(layer, "R'G'B'A u8")
    native_before = pixels(layer, native) if native else None
    photo_before = pixels(photo, "R'G'B'A u8")

    proc = Gimp.get_pdb().lookup_procedure("python-fu-harmonize-layer")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("strength", 1.0)
    start = time.perf_counter()
    result = proc.run(config)
    seconds = time.perf_counter() - start
    status = result.index(0)
    out = {"seconds": seconds, "status": "success" if status == Gimp.PDBStatusType.SUCCESS else str(status),
           "layers_before": layers_before, "layers": [la.get_name() for la in image.get_layers()]}
    if status != Gimp.PDBStatusType.SUCCESS:
        err = result.index(1) if result.length() > 1 else None
        out["error"] = str(getattr(err, "message", err))
    else:
        new = image.get_layers()[0]
        out["new_offsets"] = list(new.get_offsets()[1:])
        out["new_size"] = [new.get_width(), new.get_height()]
        out["has_mask"] = new.get_mask() is not None
        out["source_unchanged"] = pixels(layer, "R'G'B'A u8") == source_before
        out["photo_unchanged"] = pixels(photo, "R'G'B'A u8") == photo_before
        open(os.path.join(WORK, "new.rgba"), "wb").write(pixels(new, "R'G'B'A u8"))
        open(os.path.join(WORK, "source.rgba"), "wb").write(source_before)
        if native:
            out["precision_after"] = image.get_precision().value_name
            out["new_bpp"], out["source_bpp"] = new.get_bpp(), layer.get_bpp()
            out["source_native_unchanged"] = pixels(layer, native) == native_before
            open(os.path.join(WORK, "new.native"), "wb").write(pixels(new, native))
            open(os.path.join(WORK, "source.native"), "wb").write(native_before)
    json.dump(out, open(os.path.join(WORK, "result.json"), "w"))


def precise(image, layer, precision):
    """Convert the image to `precision` and set the object's samples between the 8-bit steps (in the layer's
    own format, which is returned), so that a plug-in that went through 8 bits would show."""
    image.convert_precision(getattr(Gimp.Precision, precision))
    depth, trc = precision.lower().split("_", 1)
    fmt = ("RGBA " if trc == "linear" else "R'G'B'A ") + depth
    samples = array.array({"u16": "H", "float": "f"}[depth], pixels(layer, fmt))
    w = layer.get_width()
    for i in range(len(samples)):
        if i % 4 != 3:  # colour, not alpha
            col = (i // 4) % w
            if depth == "u16":
                samples[i] = min(65535, samples[i] + 37 + (col * 11) % 200)
            else:
                samples[i] = samples[i] * (1.0 + 0.0007 * col) + 0.0003
    layer.get_buffer().set(Gegl.Rectangle.new(0, 0, w, layer.get_height()), fmt, samples.tobytes())
    layer.get_buffer().flush()
    return fmt


main()
