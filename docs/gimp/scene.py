"""Runs inside GIMP (python-fu-eval) for screenshots.sh: the example photo with its recoloured object
pasted as a layer with alpha, saved as scene.xcf with that layer selected. FMM_WORK is the folder."""
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

work = os.environ["FMM_WORK"]


def file(name: str) -> Gio.File:
    return Gio.File.new_for_path(os.path.join(work, name))


image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, file("photo.jpg"))
layer = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, file("object.png"))
image.insert_layer(layer, None, 0)
x, y = (int(v) for v in open(os.path.join(work, "offsets.txt")).read().split())
layer.set_offsets(x, y)
layer.set_name("pasted bus")
image.set_selected_layers([layer])
Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, file("scene.xcf"), None)
