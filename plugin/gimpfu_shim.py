"""A small gimpfu-compatible shim: `register`, `main`, `PF_*` and the host adapters the plug-in needs.

On GIMP 3 (Python 3 through GObject Introspection) it builds the Gimp.PlugIn and procedure from the
`register` call and implements the host adapters with Gimp and Gegl. Outside GIMP, `register`
still records the procedure, so the plug-in's logic can be imported and tested against a fake host.
GIMP 2.10's Python-Fu is Python 2 and is not supported. Standard library only besides GIMP's modules.
"""
from __future__ import annotations

import array
import contextlib
import sys

try:
    import gi

    gi.require_version("Gimp", "3.0")
    gi.require_version("Gegl", "0.4")
    from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: F401

    GIMP3 = True
except (ImportError, ValueError):
    Gimp = None
    GIMP3 = False

PF_FLOAT, PF_SLIDER, PF_OPTION, PF_STRING = "float", "slider", "option", "string"


def plain(label: str) -> str:
    """A label without its mnemonic's underscore: "S_trength" is "Strength"."""
    return label.replace("_", "")


def title(label: str) -> str:
    """A menu label as a dialog title: "Harmoni_ze Layer..." is "Harmonize Layer"."""
    return plain(label).removesuffix("...")


class UserError(Exception):
    """A problem to show the user as a message (the procedure then returns EXECUTION_ERROR)."""


_REGISTERED: list[dict] = []


def register(proc_name, blurb, help_text, author, copyright_, date, label, imagetypes, params, results,
             function, menu="<Image>/Filters"):
    """gimpfu's register: remember the procedure; `main` hands it to GIMP."""
    _REGISTERED.append(dict(name=proc_name.replace("_", "-"), blurb=blurb, help=help_text, author=author,
                            copyright=copyright_, date=date, label=label, imagetypes=imagetypes,
                            params=params, function=function, menu=menu))


if not GIMP3:

    def main():
        raise RuntimeError("Harmonize Layer needs GIMP 3.0 (Python 3 through GObject Introspection)")

else:

    def _add_argument(procedure, kind, name, label, default, extra):
        # the label is the dialog's, with its mnemonic ("S_trength"); the blurb (a tooltip) goes without
        nick, blurb = name.replace("_", "-"), plain(label)
        if kind in (PF_FLOAT, PF_SLIDER):
            lo, hi = extra[0], extra[1]
            procedure.add_double_argument(nick, label, blurb, lo, hi, default, GObject.ParamFlags.READWRITE)
        elif kind == PF_OPTION:
            choice = Gimp.Choice.new()
            for i, option in enumerate(extra):  # the label's lower case is the value a script passes
                choice.add(option.lower(), i, option, "")
            procedure.add_choice_argument(nick, label, blurb, choice, extra[default].lower(),
                                          GObject.ParamFlags.READWRITE)
        else:
            procedure.add_string_argument(nick, label, blurb, default, GObject.ParamFlags.READWRITE)

    def _dialog(procedure, config, spec):
        """The procedure's dialog, with gimpfu's widgets: a PF_SLIDER is a slider (GimpScaleEntry), where
        ProcedureDialog makes a spin entry of a double, and a PF_OPTION a combo box with its label, where
        ProcedureDialog makes a radio frame of up to three choices (whose title GIMP 3.2 leaves without
        a mnemonic)."""
        gi.require_version("GimpUi", "3.0")
        gi.require_version("Gtk", "3.0")
        from gi.repository import GimpUi, Gtk

        GimpUi.init(spec["name"])
        dialog = GimpUi.ProcedureDialog.new(procedure, config, title(spec["label"]))
        for kind, name, _label, _default, extra in spec["params"]:
            if kind == PF_SLIDER:
                step = extra[2] if len(extra) > 2 else (extra[1] - extra[0]) / 100
                dialog.get_scale_entry(name.replace("_", "-"), 1.0).set_increments(step, step * 5)
            elif kind == PF_OPTION:
                dialog.get_widget(name.replace("_", "-"), Gtk.ComboBox)
        dialog.fill(None)
        return dialog

    def _run(spec):
        def run(procedure, run_mode, image, drawables, config, data):
            if run_mode == Gimp.RunMode.INTERACTIVE:
                dialog = _dialog(procedure, config, spec)
                ok = dialog.run()
                dialog.destroy()
                if not ok:
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            values = []
            for _kind, name, _label, _default, _extra in spec["params"]:
                value = config.get_property(name.replace("_", "-"))
                values.append(value)
            if len(drawables) != 1:
                return _error(procedure, "select exactly one layer")
            try:
                spec["function"](GimpHost(), image, drawables[0], *values)
            except UserError as exc:
                return _error(procedure, str(exc))
            except Exception as exc:  # any other failure is still shown as a message, not only a traceback
                return _error(procedure, f"{title(spec['label'])} failed: {type(exc).__name__}: {exc}")
            return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

        return run

    def _error(procedure, message):
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(
            GLib.quark_from_string("fmm-harmonize"), message, 0))

    def main():
        """gimpfu's main: register a Gimp.PlugIn holding every registered procedure and run it."""
        specs = {s["name"]: s for s in _REGISTERED}

        class ShimPlugIn(Gimp.PlugIn):
            def do_query_procedures(self):
                return list(specs)

            def do_set_i18n(self, name):
                return False

            def do_create_procedure(self, name):
                spec = specs[name]
                procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, _run(spec), None)
                procedure.set_image_types(spec["imagetypes"])
                procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
                procedure.set_menu_label(spec["label"])
                procedure.add_menu_path(spec["menu"])
                procedure.set_documentation(spec["blurb"], spec["help"], name)
                procedure.set_attribution(spec["author"], spec["copyright"], spec["date"])
                for kind, pname, label, default, extra in spec["params"]:
                    _add_argument(procedure, kind, pname, label, default, extra)
                return procedure

        Gimp.main(ShimPlugIn.__gtype__, sys.argv)


# GIMP's sample types as the wire names them (plugin/protocol.py FORMATS): half floats travel as float, which
# holds each of them exactly, so a pixel read and written back unchanged stays the same half.
SAMPLES = {"u8": "u8", "u16": "u16", "u32": "u32", "half": "float", "float": "float", "double": "double"}
TYPECODES = {"u8": "B", "u16": "H", "u32": "I", "float": "f", "double": "d"}  # the same samples as array's


def babl_format(fmt: str, linear: bool, alpha: bool) -> str:
    """The Babl format name of RGB(A) samples `fmt`, in linear light or perceptual ("R'G'B'A u16")."""
    return ("RGB" if linear else "R'G'B'") + ("A" if alpha else "") + " " + fmt


def drop_alpha(rgba: bytes, fmt: str) -> bytes:
    """The RGB samples of RGBA ones."""
    src = array.array(TYPECODES[fmt], rgba)
    rgb = array.array(TYPECODES[fmt], bytes(len(rgba) // 4 * 3))
    for c in range(3):
        rgb[c::3] = src[c::4]
    return rgb.tobytes()


def put_rgb(rgba: bytes, rgb: bytes, fmt: str) -> bytes:
    """RGBA samples with their RGB replaced by `rgb`'s and their alpha kept."""
    out, src = array.array(TYPECODES[fmt], rgba), array.array(TYPECODES[fmt], rgb)
    for c in range(3):
        out[c::4] = src[c::3]
    return out.tobytes()


class GimpHost:
    """Host adapters on GIMP 3. Rectangles are (x, y, w, h) in image coordinates; a layer's pixels are bytes
    in its image's precision (`pixel_format`), masks and the background are u8."""

    def is_rgb(self, image) -> bool:
        return image.get_base_type() == Gimp.ImageBaseType.RGB

    def pixel_format(self, image) -> tuple[str, bool]:
        """(samples, linear) of the image's precision: "u16-non-linear" is ("u16", False)."""
        depth, _, trc = image.get_precision().value_nick.partition("-")
        return SAMPLES[depth], trc == "linear"

    def canvas_size(self, image):
        return image.get_width(), image.get_height()

    def name(self, layer) -> str:
        return layer.get_name()

    def canvas_region(self, image, layer):
        """The part of the layer inside the canvas, or None."""
        ok, ox, oy = layer.get_offsets()
        x0, y0 = max(ox, 0), max(oy, 0)
        x1 = min(ox + layer.get_width(), image.get_width())
        y1 = min(oy + layer.get_height(), image.get_height())
        return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None

    def _get(self, drawable, rect, fmt, image_coords=True):
        x, y, w, h = rect
        if image_coords:
            ok, ox, oy = drawable.get_offsets()
            x, y = x - ox, y - oy
        buf = drawable.get_buffer()
        return bytes(buf.get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))

    def read_rgb(self, layer, rect, fmt: str = "u8", linear: bool = False) -> bytes:
        if not layer.has_alpha():
            return self._get(layer, rect, babl_format(fmt, linear, False))
        # NOTE: one read in the layer's own format, split here: asking GEGL for "A u8" separately
        # costs about 0.7 s on a 12-megapixel layer.
        rgba = self._get(layer, rect, babl_format(fmt, linear, True))
        if (fmt, linear) == ("u8", False):
            self._alpha = (layer, rect, rgba[3::4])
        return drop_alpha(rgba, fmt)

    def read_mask(self, image, layer, rect) -> tuple[str, bytes]:
        """(source, mask u8): the layer mask, else the selection, else the layer's alpha."""
        mask = layer.get_mask()
        if mask is not None:  # a layer mask has its layer's offsets
            return "layer mask", self._get(mask, rect, "Y' u8")
        if not Gimp.Selection.is_empty(image):
            selection = image.get_selection()
            return "selection", self._get(selection, rect, "Y' u8", image_coords=False)
        if layer.has_alpha():
            cached = getattr(self, "_alpha", None)
            if cached is not None and cached[0] == layer and cached[1] == rect:
                return "alpha", cached[2]
            return "alpha", self._get(layer, rect, "A u8")
        raise UserError("Nothing marks the object: give the layer a layer mask, make a selection, "
                        "or add an alpha channel with transparency around the object.")

    def read_background(self, image, layer) -> bytes:
        """What is visible on the whole canvas with the layer hidden (RGB u8)."""
        visible = layer.get_visible()
        layer.set_visible(False)
        try:
            flat = Gimp.Layer.new_from_visible(image, image, "fmm-background")
            try:
                rect = (0, 0, image.get_width(), image.get_height())
                return self._get(flat, rect, "R'G'B' u8", image_coords=False)
            finally:
                flat.delete()
        finally:
            layer.set_visible(visible)

    def add_copy_above(self, image, layer, name):
        copy = layer.copy()
        copy.set_name(name)
        image.insert_layer(copy, layer.get_parent(), image.get_item_position(layer))
        return copy

    def write_rgb(self, layer, rect, rgb: bytes, fmt: str = "u8", linear: bool = False) -> None:
        """Replace the layer's colour in `rect` (samples `fmt`, as read), keeping its alpha."""
        x, y, w, h = rect
        ok, ox, oy = layer.get_offsets()
        buf = layer.get_buffer()
        r = Gegl.Rectangle.new(x - ox, y - oy, w, h)
        if layer.has_alpha():
            rgba = bytes(buf.get(r, 1.0, babl_format(fmt, linear, True), Gegl.AbyssPolicy.NONE))
            buf.set(r, babl_format(fmt, linear, True), put_rgb(rgba, rgb, fmt))
        else:
            buf.set(r, babl_format(fmt, linear, False), rgb)
        buf.flush()
        layer.update(x - ox, y - oy, w, h)

    @contextlib.contextmanager
    def undo_group(self, image):
        image.undo_group_start()
        try:
            yield
        finally:
            image.undo_group_end()

    def progress(self, fraction: float, text: str | None = None) -> None:
        if text is not None:
            Gimp.progress_init(text)
        Gimp.progress_update(fraction)

    def progress_text(self, text: str) -> None:
        Gimp.progress_set_text(text)

    def progress_pulse(self) -> None:
        Gimp.progress_pulse()

    def plugin_folder(self) -> str:
        import os

        return os.path.dirname(os.path.abspath(sys.argv[0]))
