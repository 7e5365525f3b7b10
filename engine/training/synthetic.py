"""Synthetic training composites from the permissive photos of ../shared/data.

They follow the HCOCO recipe of iHarmony4: take a real photo, recolour one masked object the ways
real composites go wrong (the named edits of EDITS), and ask the network to undo it; the photo is
the target. numpy and Pillow only, deterministic per (seed, index).
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..errors import InputError
from ..runtime.color import SRGB_TO_XYZ, lab_to_rgb, linear_to_srgb, move_lab_statistics, rgb_to_lab, srgb_to_linear
from ..runtime.fullres import foreground_box


def _listed(root: Path, folder: str, permissive: bool) -> list[dict[str, str]]:
    """The rows of a licence-listed folder's images.csv (coco/, coco-more/) whose pictures may train shipped
    weights (commercial_ok and derivatives_ok), or, with `permissive` False, those that may not."""
    listing = root / folder / "images.csv"
    if not listing.exists():
        raise InputError(f"{listing}: not found; give a folder of training pictures as ../shared/data lays them out")
    with open(listing, newline="") as f:
        return [r for r in csv.DictReader(f)
                if (r["commercial_ok"] == "1" and r["derivatives_ok"] == "1") == permissive]


def _files(root: Path, folder: str, rows: list[dict[str, str]]) -> list[tuple[Path, list[Path]]]:
    """(photo, masks) of listed rows: the picture, and its objects' masks (<stem>_<k>.png)."""
    masks = root / folder / "masks"
    return [(root / folder / "images" / r["file"], sorted(masks.glob(f"{Path(r['file']).stem}_*.png"))) for r in rows]


def _licensed(root: Path, folder: str, permissive: bool) -> list[tuple[Path, list[Path]]]:
    """(photo, masks) of the pictures `_listed` gives."""
    return _files(root, folder, _listed(root, folder, permissive))


def permissive_sources(data_root: str | Path, more: bool = False, extra: bool = False) -> list[tuple[Path, list[Path]]]:
    """(photo, masks) for the pictures that may train shipped weights (../shared/data/README.md):
    coco/ and photos/, with `more` also coco-more/'s permissive part (312 photos, 531 masks), and with
    `extra` coco-extra/'s (471 photos, 14 of them with 26 masks; the rest get random object masks)."""
    root = Path(data_root)
    sources = _licensed(root, "coco", True)
    sources += [(p, []) for p in sorted((root / "photos").glob("*.jpg"))]  # after coco/, as the shipped runs drew them
    if more:
        sources += _licensed(root, "coco-more", True)
    if extra:
        sources += _licensed(root, "coco-extra", True)
    if not sources:
        raise InputError(f"{root}: no permissive training photos found")
    return sources


def mask_categories(data_root: str | Path) -> dict[Path, str]:
    """Each object mask's COCO category (masks.csv of coco/ and coco-more/), by the mask's path."""
    root, categories = Path(data_root), {}
    for folder in ("coco", "coco-more", "coco-extra"):
        if (root / folder / "masks.csv").exists():
            with open(root / folder / "masks.csv", newline="") as f:
                categories.update({root / folder / "masks" / r["mask"]: r["category"] for r in csv.DictReader(f)})
    return categories


def heldout_sources(data_root: str | Path, folders: tuple[str, ...] = ("coco-more",)) -> list[tuple[Path, list[Path]]]:
    """(photo, masks) of the pictures of `folders` that no shipped weights may train on (and so no run does),
    which makes them a fair held-out set for choosing models."""
    return [source for folder in folders for source in _licensed(Path(data_root), folder, False)]


def reference_pixels(photo: np.ndarray) -> np.ndarray:
    """A sparse sample of a uint8 photo's pixels as float (N, 3) in [0, 1]: the colours an edit moves
    an object towards."""
    return photo.reshape(-1, 3)[::97].astype(np.float32) / 255


# The shares of the held-out composites made each of iHarmony4's ways (`write_heldout`, recipe "iharmony4").
HELDOUT_RECIPES = {"transfer": 0.6, "restyle": 0.3, "time of day": 0.1}


def write_heldout(data_root: str | Path, out: str | Path, count: int = 120, seed: int = 2026,
                  recipe: str = "edits") -> Path:
    """`count` full-resolution composites from held-out photos, one object (3 to 60 % of the photo) of each,
    written as a MANIFEST.csv folder that `harmonize eval` reads; returns the manifest. Recipe "edits" (the
    120 of earlier rounds): coco-more's held-out photos, the object recoloured by strong edits towards another
    photo. Recipe "iharmony4": coco/'s and coco-more's held-out photos, made as iHarmony4's were (HELDOUT_RECIPES):
    the object recoloured by one of the TRANSFERS from an object of its category in another photo (HCOCO,
    HFlickr), or photo and object each given their own edit, the edited photo the target (HAdobe5k), or the
    object lit at another hour (Hday2night); the subset column names the way. The manifest is written last,
    so a folder without one is unfinished."""
    from ..atomic import atomic_path

    if recipe not in ("edits", "iharmony4"):
        raise InputError(f"recipe must be edits or iharmony4, not {recipe!r}")
    out = Path(out)
    if (out / "MANIFEST.csv").exists():
        raise InputError(f"{out}: already holds a MANIFEST.csv; give an empty folder")
    sources = heldout_sources(data_root, ("coco-more",) if recipe == "edits" else ("coco", "coco-more"))
    categories = mask_categories(data_root)
    rng = np.random.default_rng(seed)
    rng.shuffle(sources)
    by_category: dict[str, list[Path]] = {}
    for _, masks in sources:
        for m in masks:
            by_category.setdefault(categories.get(m), []).append(m)
    rows, used = [], set()
    # iharmony4 goes through the photos twice, a second object of each the second time, for 500 composites
    for photo_path, masks in sources if recipe == "edits" else sources + sources:
        masks = [m for m in masks if m not in used]
        if len(rows) >= count:
            break
        if not masks:
            continue
        photo = np.asarray(Image.open(photo_path).convert("RGB"))
        chosen = masks[rng.integers(len(masks))]
        used.add(chosen)
        m = Image.open(chosen).convert("L").resize(photo.shape[1::-1], Image.NEAREST)
        m = np.asarray(m) > 127
        if not 0.03 <= m.mean() <= 0.6:
            continue
        ref = np.asarray(Image.open(sources[rng.integers(len(sources))][0]).convert("RGB"))
        if recipe == "edits":
            real = photo.astype(np.float32) / 255
            comp = real.copy()
            comp[m] = recolour(real[m], reference_pixels(ref), rng, strong=True)
            subset = "heldout"
        else:
            subset, plan = _iharmony4_plan(photo, m, ref, chosen, by_category.get(categories.get(chosen), []), rng)
            comp, _, real = (a.transpose(1, 2, 0) for a in render(plan))
            photo = (real * 255 + 0.5).astype(np.uint8)
        folder = out / (photo_path.stem if recipe == "edits" else chosen.stem)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((comp * 255 + 0.5).astype(np.uint8)).save(folder / "composite.png")
        Image.fromarray(photo).save(folder / "real.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / "mask.png")
        rows.append(dict(sample_dir=folder.name, subset=subset, composite="composite.png", mask="mask.png",
                         real="real.png"))
    if not rows:
        raise InputError(f"{data_root}: no held-out photo with a usable object mask")
    with atomic_path(out / "MANIFEST.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return out / "MANIFEST.csv"


def _iharmony4_plan(photo: np.ndarray, m: np.ndarray, reference: np.ndarray, mask_path: Path,
                    same_category: list[Path], rng: np.random.Generator) -> tuple[str, Plan]:
    """One held-out composite's way (HELDOUT_RECIPES) and Plan: a transfer from another object of the
    category (an ordinary edit when it has none), a restyle, or another hour's light."""
    plan = Plan(photo, m, reference_pixels(reference))
    way = list(HELDOUT_RECIPES)[rng.choice(len(HELDOUT_RECIPES), p=list(HELDOUT_RECIPES.values()))]
    donors = [d for d in same_category if d.name.rsplit("_", 1)[0] != mask_path.name.rsplit("_", 1)[0]]
    if way == "transfer" and donors:
        donor_mask = donors[rng.integers(len(donors))]
        donor_photo = donor_mask.parent.parent / "images" / (donor_mask.name.rsplit("_", 1)[0] + ".jpg")
        img = np.asarray(Image.open(donor_photo).convert("RGB"))
        dm = np.asarray(Image.open(donor_mask).convert("L").resize(img.shape[1::-1], Image.NEAREST)) > 127
        name = list(TRANSFERS)[rng.integers(len(TRANSFERS))]
        plan.transfer = (name, img[dm][::7].astype(np.float32) / 255, TRANSFERS[name].draw(rng))
        return f"heldout {name}", plan
    if way == "restyle":
        plan.restyle, plan.edits = draw_edits(rng), draw_edits(rng)
        return "heldout restyle", plan
    if way == "time of day":
        plan.edits = [("time of day", LIGHTING["time of day"].draw({}, rng))]
        return "heldout time of day", plan
    plan.edits = draw_edits(rng, strong=True)
    return "heldout edits", plan


def pack_sources(data_root: str | Path, out: str | Path, size: int, quality: int = 90,
                 short: int | None = None) -> int:
    """Copy the permissive pictures (coco/, coco-more/, coco-extra/ and photos/, with their listings) into `out`
    at the resolution SyntheticComposites(size) works from (short side 2 x size; `short` to make it smaller),
    small enough to carry to a training machine: photos as JPEG of `quality`, masks exactly as the stream
    reads them at that resolution. Returns the bytes written."""
    root, out = Path(data_root), Path(out)
    short = short or 2 * size
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: not empty; give a new folder")
    for folder in ("coco", "coco-more", "coco-extra"):
        rows = _listed(root, folder, True)
        keep = {r["file"] for r in rows}
        with open(root / folder / "masks.csv", newline="") as f:
            masks = [r for r in csv.DictReader(f) if r["image"] in keep]
        (out / folder / "masks").mkdir(parents=True, exist_ok=True)
        for name, table in (("images.csv", rows), ("masks.csv", masks)):
            with open(out / folder / name, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)
        for photo, mask_paths in _files(root, folder, rows):
            _pack_photo(photo, out / folder / "images" / photo.name, short, quality)
            for m in mask_paths:
                _resize_short(Image.open(m).convert("L"), short).save(out / folder / "masks" / m.name)
    for photo in sorted((root / "photos").glob("*.jpg")):
        _pack_photo(photo, out / "photos" / photo.name, short, quality)
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def _pack_photo(src: Path, dst: Path, short: int, quality: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    _resize_short(Image.open(src).convert("RGB"), short).save(dst, quality=quality)


def _resize_short(img: Image.Image, short: int) -> Image.Image:
    s = short / min(img.size)
    return img if s >= 1 else img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


# Ranges of each edit: (normal, strong). Strong edits are about as far off as real composites are.
RANGES = {
    "transfer": ((0.4, 1.0), (0.7, 1.0)), "gain": ((0.75, 1.3), (0.6, 1.5)), "stops": ((-0.9, 0.7), (-1.3, 1.0)),
    "gamma": ((0.6, 1.6), (0.45, 2.0)), "saturation": ((0.3, 1.7), (0.15, 2.0)), "hue": ((-30, 30), (-50, 50)),
    "contrast": ((0.6, 1.4), (0.45, 1.6)),
}


# Each edit is drawn, then applied: draw(ranges, rng) gives its parameters as a tuple of floats, before
# any pixel is touched, so that the batched path (batched.py) can apply the same draws on a torch device;
# apply(pixels (N, 3), reference pixels (M, 3), parameters) edits the pixels.
class Edit(NamedTuple):
    draw: Callable[[dict, np.random.Generator], tuple[float, ...]]
    apply: Callable[[np.ndarray, np.ndarray, tuple[float, ...]], np.ndarray]


def _transfer(x, reference, p):  # colour statistics transferred (partly) from another photo
    mu, sd = x.mean(0), x.std(0) + 1e-3
    rmu, rsd = reference.mean(0), reference.std(0) + 1e-3
    return x + p[0] * (((x - mu) / sd * rsd + rmu) - x)


def _white_balance(x, reference, p):
    return x * np.asarray(p, np.float32)


def _exposure(x, reference, p):
    return x * np.float32(p[0])


def _gamma(x, reference, p):  # a tone curve
    return np.clip(x, 0, 1) ** np.float32(p[0])


def _saturation(x, reference, p):
    y = _luma(x)[:, None]
    return y + np.float32(p[0]) * (x - y)


def hue_rotation(degrees: float) -> np.ndarray:
    """The 3x3 rotation of RGB about the grey axis by `degrees` (float64)."""
    t = np.deg2rad(degrees)
    k = np.ones(3, np.float32) / np.sqrt(3)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], np.float32)
    return np.eye(3, dtype=np.float32) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


def _hue(x, reference, p):  # a rotation about the grey axis
    return x @ hue_rotation(p[0]).T


def _contrast(x, reference, p):
    m = x.mean(0)
    return m + np.float32(p[0]) * (x - m)


def _uniform(key: str):
    return lambda r, rng: (rng.uniform(*r[key]),)


# The ways a pasted object's colours go wrong, by name. Their order and draws are part of the random
# streams: append, never reorder.
EDITS = {
    "transfer": Edit(_uniform("transfer"), _transfer),
    "white balance": Edit(lambda r, rng: tuple(float(g) for g in rng.uniform(*r["gain"], size=3)), _white_balance),
    "exposure": Edit(lambda r, rng: (2.0 ** rng.uniform(*r["stops"]),), _exposure),
    "gamma": Edit(_uniform("gamma"), _gamma),
    "saturation": Edit(_uniform("saturation"), _saturation),
    "hue": Edit(_uniform("hue"), _hue),
    "contrast": Edit(_uniform("contrast"), _contrast),
}


def planckian_xy(kelvin):
    """CIE 1931 xy of a black body's light at `kelvin` (1667 to 25000 K; a number or an array of them): Kim et
    al.'s cubic fit of the Planckian locus (2002)."""
    t = np.asarray(kelvin, np.float64)
    if np.any(t < 1667) or np.any(t > 25000):
        raise ValueError(f"the Planckian fit holds from 1667 to 25000 K, not {kelvin}")
    x = np.where(t <= 4000, -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910,
                 -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390)
    y = np.where(t <= 2222, -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683,
                 np.where(t <= 4000, -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867,
                          3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483))
    return (float(x), float(y)) if x.ndim == 0 else (x, y)


DAYLIGHT_KELVIN = 6504  # the scene's light: daylight, on the Planckian locus


def light_gains(kelvin) -> np.ndarray:
    """Linear-RGB gains (green 1) that turn a surface lit by daylight into the same surface lit by a black
    body at `kelvin` (a number: (3,); an array of n: (n, 3)): the ratio of the two lights' whites in linear sRGB."""
    def white(t):
        x, y = (np.asarray(v, np.float64) for v in planckian_xy(t))
        return np.linalg.solve(SRGB_TO_XYZ, np.stack([x / y, np.ones_like(x), (1 - x - y) / y]))
    gains = (white(kelvin).T / white(DAYLIGHT_KELVIN)).T
    return (gains / gains[1]).T


def _time_of_day(x, reference, p):  # the object lit at another hour: its light's colour and strength
    lin = srgb_to_linear(np.clip(x, 0, 1)) * (light_gains(p[0]) * 2.0 ** p[1])
    return linear_to_srgb(np.clip(lin, 0, 1)).astype(np.float32)


# How Hday2night's composites were made, where the object comes from a photo of the same scene at another
# time of day: here its light changes colour temperature (2500 to 12000 K, evenly on a log scale) and
# strength (-2 to +0.5 stops). Not among EDITS, so drawn only when asked (`time_of_day`).
LIGHTING = {
    "time of day": Edit(lambda r, rng: (float(np.exp(rng.uniform(np.log(2500), np.log(12000)))),
                                        rng.uniform(-2.0, 0.5)), _time_of_day),
}
EDIT_NAMES = list(EDITS) + list(LIGHTING)  # every edit a Plan may name, in the batched path's order


def reinhard(x: np.ndarray, reference: np.ndarray, params=None) -> np.ndarray:
    """Reinhard's transfer: pixels (N, 3) in [0, 1] given the Lab mean and std of the reference's (M, 3)."""
    return lab_to_rgb(move_lab_statistics(rgb_to_lab(x), rgb_to_lab(reference), 1.0)) / np.float32(255)


def _match_1d(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each value replaced by the reference's value at the same quantile (ties keep their order)."""
    ranks = np.empty(len(values), np.float64)
    ranks[np.argsort(values, kind="stable")] = np.linspace(0.0, 1.0, len(values)) if len(values) > 1 else 0.0
    return np.interp(ranks, np.linspace(0.0, 1.0, len(reference)), np.sort(reference))


def histogram_match(x: np.ndarray, reference: np.ndarray, params=None) -> np.ndarray:
    """Histogram matching per RGB channel: every channel's distribution becomes the reference's."""
    return np.stack([_match_1d(x[:, c], reference[:, c]) for c in range(3)], 1).astype(np.float32)


IDT_ITERATIONS = 8


def idt_rotations(rng: np.random.Generator, iterations: int = IDT_ITERATIONS) -> np.ndarray:
    """The random orthonormal axes of `pitie_idt`'s iterations: (iterations, 3, 3) float64."""
    return np.stack([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(iterations)])


def pitie_idt(x: np.ndarray, reference: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Pitié's iterative distribution transfer: along each of the `rotations`' orthonormal axes (see
    `idt_rotations`), each projection matched to the reference's, until the 3D distribution follows
    (Pitié, Kokaram, Dahyot 2005)."""
    y = x.astype(np.float64)
    ref = reference.astype(np.float64)
    for rotation in rotations:
        py, pr = y @ rotation, ref @ rotation
        y = np.stack([_match_1d(py[:, k], pr[:, k]) for k in range(3)], 1) @ rotation.T
    return np.clip(y, 0, 1).astype(np.float32)


class Transfer(NamedTuple):
    draw: Callable[[np.random.Generator], np.ndarray | None]
    apply: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


# How HCOCO's and HFlickr's composites were made: the object recoloured towards a reference object of its
# category in another photo, by one of several colour transfers (DoveNet, Cong et al. CVPR 2020).
TRANSFERS = {
    "reinhard": Transfer(lambda rng: None, reinhard),
    "histogram": Transfer(lambda rng: None, histogram_match),
    "idt": Transfer(idt_rotations, pitie_idt),
}


def draw_edits(rng: np.random.Generator, strong: bool = False) -> list[tuple[str, tuple[float, ...]]]:
    """Random EDITS, of how composites go wrong, as (name, parameters): 1 to 3 edits, or with `strong`
    2 to 4 edits over wider ranges."""
    r = {k: v[int(strong)] for k, v in RANGES.items()}
    names = list(EDITS)
    picks = rng.choice(len(names), size=rng.integers(2, 5) if strong else rng.integers(1, 4), replace=False)
    return [(names[e], EDITS[names[e]].draw(r, rng)) for e in picks]


def apply_edits(fg: np.ndarray, reference: np.ndarray, edits: list[tuple[str, tuple[float, ...]]]) -> np.ndarray:
    """Foreground pixels (N, 3) in [0, 1] with `edits` (from `draw_edits`) applied in turn, clipped."""
    x = fg.astype(np.float32)
    for name, params in edits:
        x = (EDITS.get(name) or LIGHTING[name]).apply(x, reference, params)
    return np.clip(x, 0, 1).astype(np.float32)  # float64 scalars (the hue rotation) promote


def recolour(fg: np.ndarray, reference: np.ndarray, rng: np.random.Generator, strong: bool = False) -> np.ndarray:
    """Recolour foreground pixels (N, 3) in [0, 1] by random EDITS (`draw_edits`)."""
    return apply_edits(fg, reference, draw_edits(rng, strong))


def random_blob_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An object-like random mask: a few overlapping ellipses, covering roughly 5 to 45 % of the image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros((h, w), bool)
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    for _ in range(rng.integers(1, 5)):
        ry, rx = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
        oy, ox = cy + rng.normal(0, 0.1 * h), cx + rng.normal(0, 0.1 * w)
        mask |= ((yy - oy) / ry) ** 2 + ((xx - ox) / rx) ** 2 <= 1
    return mask


def _view_around(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a view 1 to 1.6 times the object's box each way (as far as the
    photo allows), placed at random where it holds the whole box."""
    h, w = mask.shape
    box = foreground_box(mask)
    if box is None:
        return 0, 0, h, w
    (by0, by1), (bx0, bx1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
    ch = int(np.clip((by1 - by0) * rng.uniform(1.0, 1.6), 8, h))
    cw = int(np.clip((bx1 - bx0) * rng.uniform(1.0, 1.6), 8, w))
    y0 = rng.integers(max(0, by1 - ch), min(by0, h - ch) + 1)
    x0 = rng.integers(max(0, bx1 - cw), min(bx0, w - cw) + 1)
    return int(y0), int(x0), ch, cw


@dataclass
class Plan:
    """One synthetic composite before its pixels are made: the view of the photo (uint8 (size, size, 3)),
    the object's mask (bool), the reference pixels an edit moves colours towards, and every random
    choice: the target's own edits (restyle), the object's edits or its colour transfer (name, donor
    pixels, parameters), how much of the edit a mild composite keeps, and the mirror flip."""

    photo: np.ndarray
    mask: np.ndarray
    reference: np.ndarray
    restyle: list[tuple[str, tuple[float, ...]]] | None = None
    edits: list[tuple[str, tuple[float, ...]]] | None = None
    transfer: tuple[str, np.ndarray, np.ndarray | None] | None = None
    mild: float | None = None
    flip: bool = False


def render(plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Plan's (composite, mask, real) as float32 (3|1, size, size): the reference the batched path
    (batched.render_batch) is tested against."""
    photo, m = plan.photo.astype(np.float32) / 255, plan.mask
    real = photo
    if plan.restyle is not None:
        real = apply_edits(photo.reshape(-1, 3), plan.reference, plan.restyle).reshape(photo.shape)
    comp = real.copy()
    if plan.transfer is not None:
        name, donor, params = plan.transfer
        comp[m] = TRANSFERS[name].apply(photo[m], donor, params)
    else:
        comp[m] = apply_edits(photo[m], plan.reference, plan.edits)
    if plan.mild is not None:
        comp[m] = real[m] + np.float32(plan.mild) * (comp[m] - real[m])
    if plan.flip:
        comp, m, real = comp[:, ::-1], m[:, ::-1], real[:, ::-1]
    comp, real = (np.ascontiguousarray(a.transpose(2, 0, 1)) for a in (comp, real))
    return comp, m[None].astype(np.float32), real


class SyntheticComposites:
    """Deterministic synthetic training triples at `size` x `size` from the permissive photos.

    Each sample: a random view of a photo (60 to 100 % of its short side, aspect jittered, resized to
    size x size as inference does), an object mask (COCO, or a random shape on photos without one),
    and the object recoloured. A `mild` share of them keep only 0 to 30 % of their edit: real
    composites are sometimes nearly right, and the network must learn to leave those alone. A
    `restyle` share follow HAdobe5k instead: the whole photo gets one random edit (the target) and
    the object another (two retouchers' versions), so the target is no longer always a natural
    photo and only the background tells the network which style is right. A `closeup` share are
    viewed close around the object (its box 1 to 1.6 times over each way), so that it fills much of
    the picture as pasted layers often do. A `same_category` share are made as iHarmony4's HCOCO
    was: the object takes the colours of an object of the same COCO category in another photo (a
    person takes those of another person), by one of the colour `transfers` (TRANSFERS: Reinhard's Lab
    statistics, histogram matching, Pitié's iterative distribution transfer), the edit real pastes most
    resemble. A `time_of_day` share are made as Hday2night was: the object lit at another hour
    (LIGHTING). Returns (composite, mask, real) as float32 (3|1, size, size).
    """

    def __init__(self, data_root: str | Path, size: int = 128, seed: int = 0, strong: bool = False,
                 mild: float = 0.0, restyle: float = 0.0, closeup: float = 0.0, more: bool = False,
                 same_category: float = 0.0, transfers: tuple[str, ...] = ("reinhard",), time_of_day: float = 0.0,
                 extra: bool = False):
        for name, share in (("mild", mild), ("restyle", restyle), ("closeup", closeup),
                            ("same_category", same_category), ("time_of_day", time_of_day)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {share}")
        self.size, self.seed, self.strong, self.mild, self.restyle = size, seed, strong, mild, restyle
        unknown = [t for t in transfers if t not in TRANSFERS]
        if unknown or not transfers:
            raise ValueError(f"transfers must name some of {', '.join(TRANSFERS)}, not {', '.join(unknown) or 'none'}")
        self.closeup, self.same_category, self.transfers = closeup, same_category, tuple(transfers)
        self.time_of_day = time_of_day
        self.items, self.categories = [], []
        categories = mask_categories(data_root)
        for photo, masks in permissive_sources(data_root, more, extra):
            img = _resize_short(Image.open(photo).convert("RGB"), 2 * size)
            ms = [np.asarray(_resize_short(Image.open(m).convert("L"), 2 * size), np.uint8) for m in masks]
            self.items.append((np.asarray(img), ms))
            self.categories.append([categories.get(m) for m in masks])
        self.object_masks = [m for _, ms in self.items for m in ms]
        self.by_category: dict[str, list[tuple[int, int]]] = {}  # category -> (item, mask) of each object
        for i, cats in enumerate(self.categories):
            for k, cat in enumerate(cats):
                if cat is not None:
                    self.by_category.setdefault(cat, []).append((i, k))

    def __len__(self) -> int:
        return 10**9  # an endless stream; the trainer counts steps

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return render(self.draw(index))

    def draw(self, index: int) -> Plan:
        """Sample `index`'s every random choice, and its view of the photo: what `render` (here) or
        `batched.render_batch` (on a torch device, a batch at a time) turns into a composite."""
        rng = np.random.default_rng((self.seed, index))
        for _ in range(20):
            plan = self._try(rng)
            if plan is not None:
                return plan
        raise RuntimeError("could not draw a synthetic composite with a usable mask")

    def _try(self, rng: np.random.Generator) -> Plan | None:
        item = rng.integers(len(self.items))
        img, masks = self.items[item]
        h, w = img.shape[:2]
        category = None
        if masks:
            k = rng.integers(len(masks))
            mask, category = masks[k] > 127, self.categories[item][k]
        elif rng.random() < 0.5 or not self.object_masks:
            mask = random_blob_mask(h, w, rng)
        else:  # an object's outline from another photo, stretched onto this one
            other = self.object_masks[rng.integers(len(self.object_masks))]
            mask = np.asarray(Image.fromarray(other).resize((w, h), Image.NEAREST)) > 127
        if self.closeup and rng.random() < self.closeup:  # drawn only when asked, as for mild
            y0, x0, ch, cw = _view_around(mask, rng)
        else:
            ch = int(min(h, w) * rng.uniform(0.6, 1.0))
            cw = int(np.clip(ch * rng.uniform(0.75, 1.33), 8, w))
            ch = min(ch, h)
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        box = (x0, y0, x0 + cw, y0 + ch)
        s = (self.size, self.size)
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(s, Image.BILINEAR, box=box)) > 127
        if not 0.01 <= m.mean() <= 0.8:
            return None
        photo = np.asarray(Image.fromarray(img).resize(s, Image.BICUBIC, box=box))
        plan = Plan(photo, m, reference_pixels(self.items[rng.integers(len(self.items))][0]))
        if self.restyle and rng.random() < self.restyle:  # drawn only when asked, as for mild
            plan.restyle = draw_edits(rng)
        if self.time_of_day and rng.random() < self.time_of_day:  # drawn only when asked, as for mild
            plan.edits = [("time of day", LIGHTING["time of day"].draw({}, rng))]
        elif (donor := self._same_category_pixels(category, item, rng)) is not None:
            # one method draws nothing, so the streams of reinhard-only runs are unchanged
            name = self.transfers[0 if len(self.transfers) == 1 else rng.integers(len(self.transfers))]
            plan.transfer = (name, donor, TRANSFERS[name].draw(rng))
        else:
            plan.edits = draw_edits(rng, self.strong)
        if self.mild and rng.random() < self.mild:  # drawn only when asked, so mild=0 streams are unchanged
            plan.mild = rng.uniform(0.0, 0.3)
        plan.flip = bool(rng.random() < 0.5)
        return plan

    def _same_category_pixels(self, category: str | None, item: int, rng: np.random.Generator):
        """A sample of the pixels of an object of `category` in another photo, drawn with probability
        `same_category`; None when not drawn or when no other photo has one."""
        if not self.same_category or rng.random() >= self.same_category:  # drawn only when asked, as for mild
            return None
        donors = [(i, k) for i, k in self.by_category.get(category, ()) if i != item]
        if not donors:
            return None
        i, k = donors[rng.integers(len(donors))]
        img, masks = self.items[i]
        return img[masks[k] > 127][::7].astype(np.float32) / 255
