"""The plug-in's logic against a fake GIMP host and a real engine server, for every mask source."""
import sys

import numpy as np
import pytest
from conftest import ROOT, ellipse_mask, scene_photo
from fake_gimp import FakeHost, Image, Layer

from engine.runtime.backends import load

sys.path.insert(0, str(ROOT / "plugin"))  # as GIMP runs it: the plug-in's folder on the path
import harmonize_layer as plug  # noqa: E402
from gimpfu_shim import UserError  # noqa: E402


@pytest.fixture
def host(engine_address, tmp_path):
    (tmp_path / "engine.json").write_text(f'{{"address": "{engine_address}", "python": "/nonexistent/python"}}')
    return FakeHost(str(tmp_path))


def scene(source: str, offsets=(30, 20), size=(60, 80)):
    """A photo with a pasted copy of part of it recoloured; returns image, layer, object mask, target."""
    photo = scene_photo(120, 160, seed=3)
    h, w = size
    ox, oy = offsets
    target = np.full((h, w, 3), 128, np.uint8)  # the photo under the layer (where inside the canvas)
    ys, xs = slice(max(oy, 0), min(oy + h, 120)), slice(max(ox, 0), min(ox + w, 160))
    target[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox] = photo[ys, xs]
    pasted = np.clip(target * np.array([0.5, 0.65, 1.25]), 0, 255).astype(np.uint8)
    m = (ellipse_mask(h, w) * 255).astype(np.uint8)
    image = Image(160, 120)
    image.layers.append(Layer("photo", photo))
    if source == "alpha":
        layer = Layer("object", pasted, alpha=m, offsets=offsets)
    elif source == "layer mask":
        layer = Layer("object", pasted, offsets=offsets, mask=m)
    else:
        layer = Layer("object", pasted, offsets=offsets)
        image.selection = np.zeros((120, 160), np.uint8)
        sel = image.selection[ys, xs]
        sel[...] = m[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox]
    image.layers.insert(0, layer)
    return image, layer, m, target


@pytest.mark.parametrize("offsets", [(30, 20), (-15, 70)], ids=["inside", "partly outside"])
@pytest.mark.parametrize("source", ["alpha", "layer mask", "selection"])
def test_harmonize_layer(host, source, offsets):
    image, layer, m, target = scene(source, offsets)
    before = [(la.rgb.copy(), None if la.alpha is None else la.alpha.copy()) for la in image.layers]
    new = plug.harmonize_layer(host, image, layer, 1.0, "auto")
    assert image.layers[0] is new and image.layers[1] is layer, "new layer must sit directly above the source"
    assert new.name == "object (harmonized, CPU)" and new.offsets == layer.offsets
    assert image.undo_groups == 1 and image.undo_depth == 0 and host.progress_values[-1] == 1.0
    for la, (rgb, _alpha) in zip(image.layers[1:], before, strict=True):
        assert np.array_equal(la.rgb, rgb), f"{la.name} was modified"
    rect = host.canvas_region(image, layer)
    x, y, w, h = rect
    sl = host._local(layer, rect)
    inside = m[sl] > 0
    assert np.array_equal(new.rgb[sl][~inside], layer.rgb[sl][~inside]), "pixels outside the mask changed"
    if new.alpha is not None:
        assert np.array_equal(new.alpha, layer.alpha)
    # The reference, composed here without the plug-in: the photo with the layer's pixels inside the mask,
    # harmonized by the engine directly; the new layer must hold exactly that inside the mask.
    photo = image.layers[-1].rgb
    composite = photo.copy()
    composite[y:y + h, x:x + w][inside] = layer.rgb[sl][inside]
    canvas_mask = np.zeros(photo.shape[:2], np.float32)
    canvas_mask[y:y + h, x:x + w] = inside
    with load("onnxruntime") as backend:
        want = backend.harmonize(composite, canvas_mask)[y:y + h, x:x + w]
    assert np.array_equal(new.rgb[sl][inside], want[inside]), f"{source}: not the engine's answer for this scene"
    err = lambda a: np.abs(a[sl][inside].astype(float) - target[sl][inside]).mean()  # noqa: E731
    assert err(new.rgb) < err(layer.rgb), f"{source}: error {err(new.rgb):.1f} vs {err(layer.rgb):.1f}"


def test_strength_zero_changes_nothing(host):
    image, layer, m, target = scene("alpha")
    new = plug.harmonize_layer(host, image, layer, 0.0, 1)  # PF_OPTION gives an index: 1 = CPU
    assert np.array_equal(new.rgb, layer.rgb)


def test_user_errors_leave_the_image_alone(host, tmp_path):
    image, layer, m, _ = scene("alpha")
    image.base = "GRAY"
    with pytest.raises(UserError, match="RGB image"):
        plug.harmonize_layer(host, image, layer)
    image.base = "RGB"
    layer.offsets = (500, 500)
    with pytest.raises(UserError, match="outside the canvas"):
        plug.harmonize_layer(host, image, layer)
    layer.offsets = (30, 20)
    layer.alpha = None
    with pytest.raises(UserError, match="Nothing marks the object"):
        plug.harmonize_layer(host, image, layer)
    layer.alpha = np.zeros_like(m)
    with pytest.raises(UserError, match="alpha is empty"):
        plug.harmonize_layer(host, image, layer)
    layer.alpha = m
    (tmp_path / "engine.json").write_text('{"address": "%s", "python": "/nonexistent/python"}' % (tmp_path / "no.sock"))
    with pytest.raises(UserError, match="cannot start the engine"):
        plug.harmonize_layer(FakeHost(str(tmp_path)), image, layer)
    assert len(image.layers) == 2 and image.undo_depth == 0


def test_engine_error_reaches_the_user(host):
    image, layer, m, _ = scene("alpha")
    layer.alpha = np.full_like(m, 255)
    image.layers[1].visible = False
    layer.offsets = (0, 0)
    layer.rgb = np.resize(layer.rgb, (120, 160, 3))
    layer.alpha = np.full((120, 160), 255, np.uint8)
    with pytest.raises(UserError, match="whole image"):
        plug.harmonize_layer(host, image, layer)
    assert len(image.layers) == 2


def test_an_engine_crash_reaches_the_user_as_text(host, monkeypatch):
    """Not only the engine's own errors: a RuntimeError (a CUDA call, say) comes back as a message."""
    from engine.runtime.backends.base import Backend

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Backend, "harmonize", crash)
    image, layer, m, _ = scene("alpha")
    with pytest.raises(UserError, match="RuntimeError: CUDA error: an illegal memory access"):
        plug.harmonize_layer(host, image, layer)
    assert len(image.layers) == 2 and image.undo_depth == 0


def test_the_plugin_offers_the_engine_devices_it_recorded(tmp_path):
    """The plug-in cannot import the engine, the engine takes the device names from the plug-in's protocol,
    and the menu offers only what `harmonize gimp install` found this engine can run."""
    from engine.gimp.devices import devices

    assert set(devices()) <= set(plug.DEVICES) and devices()[:2] == ("auto", "cpu")
    assert plug.offered_devices(str(tmp_path)) == ["auto", "cpu"], "nothing recorded: no GPU offered"
    (tmp_path / "engine.json").write_text('{"devices": ["gpu", "auto", "cpu", "tpu"]}')
    assert plug.offered_devices(str(tmp_path)) == ["auto", "cpu", "gpu"]
    (tmp_path / "engine.json").write_text('{"devices": ["auto", "cpu"]}')
    assert plug.offered_devices(str(tmp_path)) == ["auto", "cpu"]


@pytest.mark.parametrize("precision", [("u16", False), ("float", True)], ids=["u16 perceptual", "float linear"])
def test_harmonize_layer_keeps_the_precision_of_the_image(host, precision):
    """The layer is read, sent and written in its image's precision: the new layer holds the same samples
    outside the object, and inside, values finer than 8 bits."""
    from fake_gimp import DTYPES, perceptual8

    from engine.runtime.color import srgb_to_linear

    image, layer, m, _ = scene("alpha")
    fmt, linear = precision
    image.precision = precision
    for la in image.layers:
        v = la.rgb / 255.0 + np.linspace(0, 0.003, la.rgb.shape[1])[None, :, None]  # between the 8-bit steps
        v = srgb_to_linear(v) if linear else v
        la.rgb = v.astype(np.float32) if fmt == "float" else np.round(v * 65535).astype(DTYPES[fmt])
    source = layer.rgb.copy()
    new = plug.harmonize_layer(host, image, layer)
    assert new.rgb.dtype == source.dtype and np.array_equal(layer.rgb, source)
    assert new.rgb[m == 0].tobytes() == source[m == 0].tobytes(), "pixels outside the object changed"
    moved = new.rgb[m > 0].astype(np.float64) - source[m > 0]
    assert np.abs(moved).mean() > (0.01 if fmt == "float" else 500), "the object did not move"
    seen = perceptual8(new.rgb[m > 0], precision)  # as 0..255: values the 8-bit path makes are whole numbers
    assert np.count_nonzero(np.abs(seen - np.round(seen)) > 0.01) > seen.size / 2, "quantized to 8 bits"
