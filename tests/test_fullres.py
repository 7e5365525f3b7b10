"""Full resolution: background bit-identical, foreground a colour transform of its own full-res pixels."""
import numpy as np
import pytest
from conftest import ellipse_mask, scene_photo, textured_image
from PIL import Image

from engine.errors import InputError
from engine.runtime.backends import load
from engine.runtime.fullres import apply_affine, apply_residual, blend, to_network


@pytest.fixture(scope="module")
def big():
    real = textured_image(2000, 3000, seed=1)
    mask = ellipse_mask(2000, 3000)
    comp = real.copy()
    fg = mask > 0
    comp[fg] = np.clip(comp[fg] * np.array([0.55, 0.7, 1.1]), 0, 255).astype(np.uint8)  # a bad paste
    return comp, mask, real


def test_shipped_model_at_full_resolution(big):
    comp, mask, real = big
    with load("onnxruntime") as backend:
        out = backend.harmonize(comp, mask)
    bg = mask == 0
    assert out.shape == comp.shape and out.dtype == np.uint8
    assert np.array_equal(out[bg], comp[bg]), "background pixels changed"
    # The foreground is one 3x4 colour map of the composite's own full-resolution pixels, so every
    # bit of texture is kept: a least-squares affine fit explains it to within rounding.
    fg = (mask > 0) & (out.min(-1) > 0) & (out.max(-1) < 255)
    x = np.c_[comp[fg].astype(np.float64), np.ones(fg.sum())]
    coef, *_ = np.linalg.lstsq(x, out[fg].astype(np.float64), rcond=None)
    rms = np.sqrt(np.mean((x @ coef - out[fg]) ** 2))
    assert rms < 0.6, f"foreground is not a colour transform of the input (residual RMS {rms:.2f})"
    assert np.abs(out[mask > 0].astype(int) - comp[mask > 0]).mean() > 1, "the model changed nothing"


def test_shipped_model_moves_a_bad_paste_towards_the_scene(big):
    comp, mask, real = big
    with load("onnxruntime") as backend:
        out = backend.harmonize(comp, mask)
    fg = mask > 0
    err = lambda a: np.mean((a[fg].astype(float) - real[fg]) ** 2)  # noqa: E731
    assert err(out) < 0.7 * err(comp), f"fMSE {err(out):.1f} vs composite {err(comp):.1f}"


def test_apply_affine_known_answer():
    rgb = textured_image(5, 7)
    mask = np.zeros((5, 7), np.float32)
    mask[1:4, 2:5] = 1.0
    mask[0, 0] = 0.5
    params = np.array([[0.5, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, 1, -0.2]], np.float32)
    out = apply_affine(rgb, mask, params.ravel())
    x = rgb.astype(np.float64) / 255
    mapped = np.clip(x @ params[:, :3].T.astype(np.float64) + params[:, 3], 0, 1)
    want = np.round((x + mask[..., None] * (mapped - x)) * 255).astype(np.uint8)
    assert np.abs(out.astype(int) - want).max() <= 1
    assert np.array_equal(out[mask == 0], rgb[mask == 0])


def test_colour_map_exact_known_answer_rounds_half_up():
    """Numbers chosen so that every result is exact in binary: off-diagonal terms (a transposed matrix gives
    other values), results on .5 (truncation would give one less), clipping, and a half mask."""
    rgb = np.array([[[100, 50, 20], [200, 200, 200], [4, 2, 6]]], np.uint8)
    mask = np.array([[1.0, 1.0, 0.5]], np.float32)
    params = np.array([[0.5, 0.25, 0.0, 0.0],  # r' = r/2 + g/4
                       [0.0, 1.0, 0.5, 0.0],   # g' = g + b/2
                       [0.125, 0.0, 0.5, 0.0]], np.float32)  # b' = r/8 + b/2
    out = apply_affine(rgb, mask, params.ravel())
    # pixel 0: r' = 62.5 -> 63, g' = 60, b' = 12.5 + 10 = 22.5 -> 23
    # pixel 1: r' = 150, g' = 300 -> 255 (clipped), b' = 25 + 100 = 125
    # pixel 2, half mask: x + (y - x) / 2 with y = (2.5, 5, 3.5): r 3.25 -> 3, g 3.5 -> 4, b 4.75 -> 5
    assert out.tolist() == [[[63, 60, 23], [150, 255, 125], [3, 4, 5]]]


def test_residual_upsampling_adds_only_a_smooth_change():
    rgb = textured_image(600, 800)
    mask = ellipse_mask(600, 800)
    before, _ = to_network(rgb, mask, 64)
    after = np.clip(before[0] + 0.1, 0, 1)
    out = apply_residual(rgb, mask, before[0], after)
    diff = out.astype(int) - rgb
    assert np.array_equal(out[mask == 0], rgb[mask == 0])
    inner = diff[250:350, 300:400]
    assert 20 <= inner.mean() <= 28 and inner.std() < 3, "detail lost or change not applied"


def test_residual_known_answer():
    """The image head's change: a constant change of 0.1 adds 25.5 levels (rounded half up to 26); a
    gradient is upsampled bilinearly, as Pillow does it."""
    rgb = np.full((8, 8, 3), 100, np.uint8)
    mask = np.ones((8, 8), np.float32)
    before = np.zeros((3, 4, 4), np.float32)
    assert (apply_residual(rgb, mask, before, before + 0.1) == 126).all()
    ramp = np.stack([np.tile(np.linspace(0, 0.3, 4, dtype=np.float32), (4, 1))] * 3)
    want = np.asarray(Image.fromarray(ramp[0], "F").resize((8, 8), Image.BILINEAR)) * 255 + 100
    got = apply_residual(rgb, mask, before, ramp)
    assert np.array_equal(got[..., 0], np.floor(want + 0.5).astype(np.uint8))


def test_blend_and_strength():
    rgb, result = textured_image(4, 4), np.full((4, 4, 3), 200, np.uint8)
    mask = np.ones((4, 4), np.float32)
    assert np.array_equal(blend(rgb, result, mask, 0.0), rgb)
    half = blend(rgb, result, mask, 0.5).astype(int)
    assert np.abs(half - (rgb.astype(int) + 200) / 2).max() <= 1
    with pytest.raises(ValueError, match="strength"):
        blend(rgb, result, mask, 1.5)


def test_backend_refuses_bad_input():
    with load("onnxruntime") as backend:
        with pytest.raises(InputError, match="mask is 5x4, image is 6x4"):
            backend.harmonize(textured_image(4, 6), np.ones((4, 5), np.float32))
        with pytest.raises(InputError, match="empty"):
            backend.harmonize(textured_image(4, 6), np.zeros((4, 6), np.float32))
        with pytest.raises(InputError, match="uint8"):
            backend.harmonize(textured_image(4, 6).astype(np.float32), np.ones((4, 6), np.float32))


def test_lab_transfer_map_is_close_to_the_lab_transfer_it_fits():
    """The 3x4 map that stands in for the half-strength Lab statistics transfer reproduces it on a paste
    with a colour cast, and a strided sample of a big picture gives the map of all its pixels."""
    from engine.evaluation.metrics import reinhard
    from engine.runtime.fullres import lab_transfer_map

    rgb = scene_photo(200, 260, seed=4)
    mask = ellipse_mask(200, 260)
    fg = mask > 0.5
    rgb[fg] = np.clip(rgb[fg] * np.array([0.6, 0.8, 1.3]), 0, 255).astype(np.uint8)
    want = reinhard(rgb, mask, 0.5)
    got = apply_affine(rgb, mask, lab_transfer_map(rgb, mask))
    assert np.array_equal(got[~fg], rgb[~fg])
    err = np.abs(got[fg].astype(float) - want[fg]).mean()
    moved = np.abs(want[fg].astype(float) - rgb[fg]).mean()
    assert err < 0.1 * moved, f"map off the Lab transfer by {err:.2f} levels where it moves {moved:.1f}"
    big = np.asarray(Image.fromarray(rgb).resize((1300, 1000), Image.NEAREST))
    big_mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize((1300, 1000), Image.NEAREST)) / 255.0
    import engine.runtime.fullres as fullres

    sampled = lab_transfer_map(big, big_mask)
    saved, fullres.LAB_SAMPLES = fullres.LAB_SAMPLES, 10**9
    try:
        every = lab_transfer_map(big, big_mask)
    finally:
        fullres.LAB_SAMPLES = saved
    # The coefficients of nearly collinear channels may trade off; the colours they give must agree.
    a, b = apply_affine(big, big_mask, sampled), apply_affine(big, big_mask, every)
    assert np.abs(a.astype(float) - b).mean() < 0.25 and np.abs(a.astype(float) - b).max() <= 3


def test_shipped_model_is_the_ensemble_of_its_network_and_the_lab_transfer():
    """Every backend averages the network's colour map with the Lab transfer's at the model's lab_mix."""
    from engine.runtime.backends import load
    from engine.runtime.fullres import lab_transfer_map, to_network

    rgb = textured_image(90, 120, seed=3)
    mask = ellipse_mask(90, 120)
    onnx = load("onnxruntime")
    w = onnx.lab_mix
    assert 0 < w < 1, f"the shipped model is not an ensemble (lab_mix {w})"
    image, m = to_network(rgb, mask, onnx.size)
    ensemble = (1 - w) * onnx.infer(image, m)[0] + w * lab_transfer_map(rgb, mask)
    assert np.array_equal(onnx.harmonize(rgb, mask), apply_affine(rgb, mask, ensemble))
    pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
    assert load("torch").lab_mix == w, "the shipped checkpoint and its ONNX disagree on lab_mix"


@pytest.mark.parametrize("depth, mask_kind", [(np.uint8, "uint8"), (np.uint8, "float"), (np.uint16, "uint8")])
def test_the_torch_colour_map_is_numpys(depth, mask_kind):
    """What the torch backend applies on a GPU (run here on the CPU, the same code) is apply_affine's picture
    within one level, with the background bit-identical; an empty mask changes nothing."""
    pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
    from engine.runtime.backends.torch_backend import apply_affine_torch

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, np.iinfo(depth).max, (90, 130, 3), dtype=depth)
    m = ellipse_mask(90, 130) * rng.uniform(0.2, 1.0, (90, 130))  # soft, so the blend weights matter
    mask = (m * 255).round().astype(np.uint8) if mask_kind == "uint8" else m.astype(np.float32)
    params = np.array([0.9, 0.1, 0.0, 0.05, -0.1, 1.2, 0.1, -0.02, 0.0, 0.2, 0.7, 0.1], np.float32)
    want, got = apply_affine(rgb, mask, params), apply_affine_torch(rgb, mask, params, "cpu")
    assert got.dtype == depth and np.abs(got.astype(int) - want).max() <= 1
    assert (got != rgb).any(axis=2)[mask > 0].mean() > 0.9, "the object was recoloured"
    assert np.array_equal(got[mask == 0], rgb[mask == 0])
    assert np.array_equal(apply_affine_torch(rgb, np.zeros_like(mask), params, "cpu"), rgb)


@pytest.mark.parametrize("mask_kind, strength", [("uint8", 1.0), ("float", 1.0), ("uint8", 0.4)])
def test_the_batchs_pillow_colour_map_is_numpys(mask_kind, strength):
    """What the batch applies to a picture it keeps in Pillow's memory (map_image) is apply_affine's and blend's
    picture within one level, most samples exactly; the background bit-identical; an empty mask changes nothing;
    the input image is left as it was."""
    from engine.runtime.fullres import map_image

    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    m = ellipse_mask(90, 130) * rng.uniform(0.2, 1.0, (90, 130))
    mask = (m * 255).round().astype(np.uint8) if mask_kind == "uint8" else m.astype(np.float32)
    params = np.array([0.9, 0.1, 0.0, 0.05, -0.1, 1.2, 0.1, -0.02, 0.0, 0.2, 0.7, 0.1], np.float32)
    img = Image.fromarray(rgb)
    got = map_image(img, mask, params, strength)
    assert isinstance(got, Image.Image) and got.mode == "RGB" and np.array_equal(np.asarray(img), rgb)
    got = np.asarray(got)
    want = blend(rgb, apply_affine(rgb, mask, params), mask, strength)
    diff = np.abs(got.astype(int) - want)
    assert diff.max() <= 1 and diff[mask > 0].mean() < 0.2
    assert (got != rgb).any(axis=2)[mask > 0].mean() > 0.8, "the object was recoloured"
    assert np.array_equal(got[mask == 0], rgb[mask == 0])
    assert np.array_equal(np.asarray(map_image(img, np.zeros_like(mask), params)), rgb)
    with pytest.raises(ValueError, match="strength"):
        map_image(img, mask, params, 1.5)


def test_the_batchs_pillow_colour_map_known_answer():
    """Numbers exact in binary, as test_colour_map_exact_known_answer_rounds_half_up: a full mask gives the
    numpy path's picture bit for bit, rounding half up and clipping."""
    from engine.runtime.fullres import map_image

    rgb = np.array([[[100, 50, 20], [200, 200, 200], [4, 2, 6]]], np.uint8)
    params = np.array([[0.5, 0.25, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0], [0.125, 0.0, 0.5, 0.0]], np.float32)
    out = map_image(Image.fromarray(rgb), np.array([[255, 255, 0]], np.uint8), params.ravel())
    assert np.asarray(out).tolist() == [[[63, 60, 23], [150, 255, 125], [4, 2, 6]]]


def test_the_lab_map_of_a_pillow_picture_is_its_arrays():
    """The batch's Lab statistics read a Pillow picture a band of rows at a time: the same samples, the same
    map, as from the whole array (a picture taller than one band, so that the bands' joins count)."""
    from engine.runtime.fullres import BAND_ROWS, lab_transfer_map

    rgb = scene_photo(4 * BAND_ROWS * 2 + 77, 300, seed=8)
    mask = ellipse_mask(*rgb.shape[:2])
    assert np.array_equal(lab_transfer_map(Image.fromarray(rgb), mask), lab_transfer_map(rgb, mask))


def test_torch_on_a_gpu_maps_arrays_there_and_leaves_the_batchs_pillow_pictures_to_pillow():
    """Torch on a GPU (here its device said to be one, computing on the CPU) applies an array's colour map with
    torch, and a Pillow picture's with Pillow (map_image), which costs less than making it an array."""
    pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
    from engine.runtime.backends.torch_backend import apply_affine_torch
    from engine.runtime.fullres import map_image

    rgb = scene_photo(120, 160, seed=9)
    mask = (ellipse_mask(120, 160) * 255).astype(np.uint8)
    with load("torch", device="cpu") as backend:
        backend.device = "gpu"
        p, q = backend.prepare(rgb, mask), backend.prepare(Image.fromarray(rgb), mask)
        answer = backend.answer(p)
        assert np.array_equal(backend.finish(p, answer), apply_affine_torch(rgb, mask, answer, "cpu"))
        got = backend.finish(q, answer)
        assert isinstance(got, Image.Image)
        assert np.array_equal(np.asarray(got), np.asarray(map_image(Image.fromarray(rgb), mask, answer)))


def test_nan_in_a_float_mask_outside_the_object_changes_nothing_there():
    """Through the Python API a float mask may hold NaN: such pixels are no foreground, as before the box was
    read from the mask itself."""
    rgb = textured_image(60, 80)
    mask = ellipse_mask(60, 80).astype(np.float32)
    mask[:5, :5] = np.nan
    with load("onnxruntime") as backend:
        out = backend.harmonize(rgb, mask)
    assert np.array_equal(out[:5, :5], rgb[:5, :5])
    assert np.array_equal(out[mask == 0], rgb[mask == 0]) and (out != rgb).any()
