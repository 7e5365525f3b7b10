"""What the engine does with one Harmonize Layer request (engine/gimp/layer.py), in every precision GIMP
keeps layers in: the colour map found at 8 bits, applied to the layer's own values, and every pixel outside
the object given back bit for bit."""
import numpy as np
import pytest
from conftest import ellipse_mask, scene_photo

from engine.gimp.layer import DTYPES, answer, harmonize_over
from engine.runtime.backends import load
from plugin.protocol import Request


def test_harmonize_over_maps_every_pixel_the_mask_touches_even_faintly():
    """A layer's pixel whose mask is 1 of 255 is still the layer's: mapped, and composited by GIMP through
    that mask; a pixel at 0 is left exactly as it was."""
    canvas = np.full((6, 8, 3), 50, np.uint8)
    layer = np.full((3, 4, 3), 200, np.uint8)
    mask8 = np.array([[0, 1, 255, 255], [0, 255, 255, 128], [0, 0, 1, 0]], np.uint8)

    def darker(rgb, mask, strength):  # a stand-in backend: every masked pixel of the canvas halved
        out = rgb.copy()
        out[mask > 0] //= 2
        return out

    out = harmonize_over(darker, canvas, layer, mask8, (2, 1, 4, 3), 1.0)
    assert np.array_equal(out[mask8 > 0], np.full((np.count_nonzero(mask8), 3), 100))
    assert np.array_equal(out[mask8 == 0], layer[mask8 == 0])


@pytest.fixture(scope="module")
def backend():
    with load("onnxruntime") as b:
        yield b


def pasted(h=40, w=50):
    """A photo, and a cut of it with a colour cast as a smooth perceptual float layer, and its mask."""
    photo = scene_photo(90, 120, seed=5)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    smooth = 0.35 + 0.3 * np.stack([xx, yy, (xx + yy) / 2], -1)  # values between the 8-bit steps
    layer = np.clip(smooth * np.array([0.7, 0.85, 1.3]), 0, 1)
    mask8 = (ellipse_mask(h, w) * 255).astype(np.uint8)
    mask8[:, :3] = 0
    return photo, layer, mask8


def stored(v, fmt, linear):
    """Perceptual [0, 1] floats as a layer of `fmt` stores them."""
    from engine.runtime.color import srgb_to_linear

    v = srgb_to_linear(v) if linear else v
    if fmt in ("float", "double"):
        return v.astype(DTYPES[fmt])
    return np.round(v * np.iinfo(DTYPES[fmt]).max).astype(DTYPES[fmt])


def perceptual(a, fmt, linear):
    from engine.runtime.color import linear_to_srgb

    v = a.astype(np.float64) / (1 if fmt in ("float", "double") else np.iinfo(DTYPES[fmt]).max)
    return linear_to_srgb(v) if linear else v


@pytest.mark.parametrize("linear", [False, True], ids=["perceptual", "linear"])
@pytest.mark.parametrize("fmt", ["u8", "u16", "u32", "float", "double"])
def test_every_precision_keeps_its_values_outside_and_moves_them_inside_as_8_bits_would(backend, fmt, linear):
    photo, v, mask8 = pasted()
    h, w = mask8.shape
    x, y = 40, 30
    layer = stored(v, fmt, linear)
    request = Request(120, 90, (x, y, w, h), photo.tobytes(), layer.tobytes(), mask8.tobytes(), 1.0, "auto", fmt,
                      linear)
    result = answer(backend, request)
    out = np.frombuffer(result.rgb, DTYPES[fmt]).reshape(h, w, 3)
    assert out.dtype == layer.dtype and out.shape == layer.shape
    assert out[mask8 == 0].tobytes() == layer[mask8 == 0].tobytes(), "pixels outside the object changed"
    # Inside, what the 8-bit path makes of the same layer rounded to 8 bits, to within an 8-bit step or two
    layer8 = np.round(perceptual(layer, fmt, linear) * 255).astype(np.uint8)
    want = harmonize_over(backend.harmonize, photo, layer8, mask8, (x, y, w, h), 1.0)
    got = perceptual(out, fmt, linear) * 255
    fg = mask8 > 0
    assert np.abs(got[fg] - want[fg]).max() <= 2.0, np.abs(got[fg] - want[fg]).max()
    assert np.abs(got[fg] - perceptual(layer, fmt, linear)[fg] * 255).mean() > 5, "the object did not move"
    if fmt != "u8":  # the map goes to the layer's own values: the object keeps its finer steps
        assert len(np.unique(out[fg][:, 0])) > len(np.unique(want[fg][:, 0])) * 2


def test_an_8_bit_perceptual_layer_is_what_harmonize_run_makes_of_the_composite(backend):
    photo, v, mask8 = pasted()
    h, w = mask8.shape
    layer = np.round(v * 255).astype(np.uint8)
    request = Request(120, 90, (40, 30, w, h), photo.tobytes(), layer.tobytes(), mask8.tobytes(), 0.6)
    out = np.frombuffer(answer(backend, request).rgb, np.uint8).reshape(h, w, 3)
    composite, full = photo.copy(), np.zeros((90, 120), np.float32)
    composite[30:30 + h, 40:40 + w][mask8 > 0] = layer[mask8 > 0]
    full[30:30 + h, 40:40 + w] = mask8 > 0
    assert np.array_equal(out[mask8 > 0], backend.harmonize(composite, full, 0.6)[30:30 + h, 40:40 + w][mask8 > 0])
