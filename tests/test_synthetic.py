"""Synthetic training composites (engine/synthetic.py): deterministic, the object alone recoloured,
each recipe option doing what it says, and only permissively licensed pictures."""
import numpy as np
import pytest
from conftest import DATA, needs_data


@needs_data
def test_synthetic_composites_are_deterministic_and_recolour_only_the_object():
    from engine.training.synthetic import SyntheticComposites

    a = SyntheticComposites(DATA, size=64, seed=3)
    comp, mask, real = a[5]
    again = a[5]
    assert all(np.array_equal(x, y) for x, y in zip((comp, mask, real), again, strict=True))
    assert not np.array_equal(a[6][0], comp)
    assert comp.shape == real.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    outside = mask[0] == 0
    assert np.array_equal(comp[:, outside], real[:, outside]), "background must stay the photo"
    changed = [np.abs(a[i][0] - a[i][2]).max() > 0.01 for i in range(10)]
    assert sum(changed) >= 8, "most synthetic composites must actually be recoloured"


@needs_data
def test_mild_composites_keep_at_most_30_percent_of_their_edit():
    from engine.training.synthetic import SyntheticComposites

    normal = SyntheticComposites(DATA, size=64, seed=3)
    mild = SyntheticComposites(DATA, size=64, seed=3, mild=1.0)
    for i in range(6):
        (c0, _, r0), (c1, _, r1) = normal[i], mild[i]
        # the same object and edit, then scaled; the flip may differ, so compare flip-free errors
        assert np.array_equal(np.sort(r0.ravel()), np.sort(r1.ravel()))
        err0 = np.sum((c0 - r0) ** 2)
        assert np.sum((c1 - r1) ** 2) <= 0.3**2 * err0 + 1e-6
    with pytest.raises(ValueError, match="mild"):
        SyntheticComposites(DATA, size=64, mild=1.5)


@needs_data
def test_restyled_composites_target_an_edited_photo_with_the_composites_background():
    from engine.training.synthetic import SyntheticComposites

    plain = SyntheticComposites(DATA, size=64, seed=4)
    restyled = SyntheticComposites(DATA, size=64, seed=4, restyle=1.0)
    edited = 0
    for i in range(6):
        comp, mask, real = restyled[i]
        assert comp.dtype == real.dtype == mask.dtype == np.float32
        outside = mask[0] == 0
        assert np.array_equal(comp[:, outside], real[:, outside]), "the background is the target's"
        photo = plain[i][2]  # the same view of the same photo, unedited (the flip may differ)
        edited += not np.allclose(np.sort(real.ravel()), np.sort(photo.ravel()), atol=0.01)
    assert edited >= 5, "restyled targets must be edited photos"


def test_closeup_views_hold_the_whole_object():
    from engine.training.synthetic import _view_around

    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = np.zeros((90, 120), bool)
        y, x = rng.integers(0, 80), rng.integers(0, 110)
        mask[y:y + rng.integers(3, 40), x:x + rng.integers(3, 60)] = True
        y0, x0, ch, cw = _view_around(mask, rng)
        assert 0 <= y0 and y0 + ch <= 90 and 0 <= x0 and x0 + cw <= 120, "the view stays inside the photo"
        assert mask[y0:y0 + ch, x0:x0 + cw].sum() == mask.sum(), "the view holds the whole object"
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert ch <= max(8, 1.6 * len(rows)) and cw <= max(8, 1.6 * len(cols))
    assert _view_around(np.zeros((9, 7), bool), rng) == (0, 0, 9, 7)


@needs_data
def test_closeup_composites_show_larger_objects():
    from engine.training.synthetic import SyntheticComposites

    plain = SyntheticComposites(DATA, size=64, seed=4)
    close = SyntheticComposites(DATA, size=64, seed=4, closeup=1.0)
    share = lambda d: np.mean([d[i][1].mean() for i in range(24)])  # noqa: E731
    assert share(close) > 1.5 * share(plain)
    with pytest.raises(ValueError, match="closeup"):
        SyntheticComposites(DATA, size=64, closeup=-0.1)


@needs_data
def test_only_permissive_pictures_train():
    import csv

    from engine.training.synthetic import permissive_sources

    rows = {r["file"]: r for r in csv.DictReader(open(DATA / "coco" / "images.csv"))}
    sources = permissive_sources(DATA)
    for photo, _ in sources:
        if photo.parent.name == "images":
            assert rows[photo.name]["commercial_ok"] == "1" and rows[photo.name]["derivatives_ok"] == "1"
    permissive = {f for f, r in rows.items() if r["commercial_ok"] == "1" and r["derivatives_ok"] == "1"
                  and int(r["n_masks"]) > 0}
    assert {p.name for p, _ in sources if p.parent.name == "images"} == permissive, "every permissive photo, no other"
    photos = {p.name for p in (DATA / "photos").glob("*.jpg")}
    assert {p.name for p, _ in sources if p.parent.name == "photos"} == photos


@needs_data
def test_more_data_adds_only_coco_mores_permissive_photos():
    import csv

    from engine.training.synthetic import permissive_sources

    base, more = permissive_sources(DATA), permissive_sources(DATA, more=True)
    assert more[: len(base)] == base, "the shipped runs' stream must stay a prefix"
    added = more[len(base):]
    rows = {r["file"]: r for r in csv.DictReader(open(DATA / "coco-more" / "images.csv", newline=""))}
    permissive = {f: int(r["n_masks"]) for f, r in rows.items()
                  if r["commercial_ok"] == "1" and r["derivatives_ok"] == "1" and int(r["n_masks"]) > 0}
    assert {p.name for p, _ in added} == set(permissive), "every permissive coco-more photo with a mask, no other"
    assert {p.name: len(m) for p, m in added} == permissive, "each with all of its masks"
    for photo, masks in added:
        assert photo.parent.parent.name == "coco-more"
        assert rows[photo.name]["commercial_ok"] == "1" and rows[photo.name]["derivatives_ok"] == "1"
        assert all(m.name.startswith(photo.stem + "_") for m in masks)


def test_each_named_edit_changes_colours_and_strong_edits_reach_further():
    """Every entry of EDITS is an edit (it moves the pixels); strong ranges move them further on average."""
    from engine.training.synthetic import EDITS, RANGES

    rng = np.random.default_rng(0)
    fg = rng.uniform(0.2, 0.8, (400, 3)).astype(np.float32)
    reference = rng.uniform(0.0, 0.4, (400, 3)).astype(np.float32)
    for name, edit in EDITS.items():
        moved = {}
        for strong in (0, 1):
            r = {k: v[strong] for k, v in RANGES.items()}
            draws = [edit.draw(r, np.random.default_rng(s)) for s in range(40)]
            moved[strong] = np.mean([np.abs(edit.apply(fg, reference, p) - fg).mean() for p in draws])
        assert moved[0] > 1e-3, f"{name} left the pixels as they were"
        assert moved[1] > moved[0], f"strong {name} moved pixels {moved[1]:.4f}, normal {moved[0]:.4f}"


@needs_data
def test_heldout_composites_use_only_non_permissive_photos_and_change_only_the_object(tmp_path, capsys):
    import csv

    from engine.cli import main
    from engine.training.datasets import load_triple, read_triples
    from engine.training.synthetic import heldout_sources, permissive_sources

    assert main(["heldout", "--data", str(DATA), "-o", str(tmp_path / "h"), "--count", "3"]) == 0
    assert f"harmonize eval {tmp_path / 'h'}" in capsys.readouterr().out
    triples = read_triples(tmp_path / "h")
    assert len(triples) == 3
    trainable = {p.stem for p, _ in permissive_sources(DATA, more=True)}
    held = {p.stem for p, _ in heldout_sources(DATA)}
    for t in triples:
        assert t.composite.parent.name not in trainable and t.composite.parent.name in held
        comp, mask, real = load_triple(t)
        assert 0.03 <= mask.mean() <= 0.6
        assert np.array_equal(comp[mask == 0], real[mask == 0]), "the background was changed"
        assert np.abs(comp[mask == 1].astype(int) - real[mask == 1]).mean() > 1, "the object was not recoloured"
    with open(tmp_path / "h" / "MANIFEST.csv") as f:
        assert [r["subset"] for r in csv.DictReader(f)] == ["heldout"] * 3
    assert main(["heldout", "--data", str(DATA), "-o", str(tmp_path / "h")]) == 2  # never over a finished set
    assert "already holds a MANIFEST.csv" in capsys.readouterr().err


@needs_data
def test_iharmony4_heldout_composites_are_made_each_of_its_ways_from_photos_no_run_trains_on(tmp_path):
    """--recipe iharmony4: transfers from an object of the same category in another held-out photo, restyles
    (target and object each edited) and another hour's light, from coco/'s and coco-more/'s held-out photos,
    every triple named apart from the others (each folder holds composite.png)."""
    import csv

    from PIL import Image

    from engine.training.datasets import load_triple, read_triples
    from engine.training.synthetic import heldout_sources, permissive_sources, write_heldout

    write_heldout(DATA, tmp_path / "h", count=24, seed=5, recipe="iharmony4")
    triples = read_triples(tmp_path / "h")
    assert len(triples) == 24 and len({t.name for t in triples}) == 24
    trainable = {p.stem for p, _ in permissive_sources(DATA, more=True, extra=True)}
    held = {p.stem for p, _ in heldout_sources(DATA, ("coco", "coco-more"))}
    with open(tmp_path / "h" / "MANIFEST.csv") as f:
        subsets = [r["subset"] for r in csv.DictReader(f)]
    assert {"heldout restyle"} < set(subsets) and any(s.startswith("heldout ") for s in subsets)
    for t, subset in zip(triples, subsets, strict=True):
        photo = t.composite.parent.name.rsplit("_", 1)[0]
        assert photo not in trainable and photo in held
        comp, mask, real = load_triple(t)
        assert 0.03 <= mask.mean() <= 0.6
        assert np.array_equal(comp[mask == 0], real[mask == 0]), "the background differs from the target's"
        assert np.abs(comp[mask == 1].astype(int) - real[mask == 1]).mean() > 0.5, subset
        source = next(p for p, _ in heldout_sources(DATA, ("coco", "coco-more")) if p.stem == photo)
        original = np.asarray(Image.open(source).convert("RGB"))
        restyled = np.abs(real.astype(int) - original).mean() > 0.5
        assert restyled == (subset == "heldout restyle"), subset  # only a restyle edits the target


def _tiny_coco(root, objects):
    """A coco/ folder of permissive 64 x 64 photos, one object each: {stem: (background, object, category)}."""
    import csv

    from PIL import Image

    (root / "coco" / "images").mkdir(parents=True)
    (root / "coco" / "masks").mkdir()
    images, masks = [], []
    for stem, (background, colour, category) in objects.items():
        rng = np.random.default_rng(len(images))
        img = np.clip(np.array(background, np.float32) + rng.normal(0, 12, (64, 64, 3)), 0, 255)
        m = np.zeros((64, 64), np.uint8)
        m[12:52, 16:48] = 255
        img[m > 0] = np.clip(np.array(colour, np.float32) + rng.normal(0, 20, (1280, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(root / "coco" / "images" / f"{stem}.png")
        Image.fromarray(m).save(root / "coco" / "masks" / f"{stem}_0.png")
        images.append(dict(file=f"{stem}.png", commercial_ok=1, derivatives_ok=1))
        masks.append(dict(mask=f"{stem}_0.png", image=f"{stem}.png", category=category))
    for name, rows in (("images.csv", images), ("masks.csv", masks)):
        with open(root / "coco" / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("transfers", [("reinhard",), ("histogram",), ("idt",), ("reinhard", "histogram", "idt")])
def test_same_category_composites_take_the_colours_of_the_same_kind_of_object_in_another_photo(tmp_path, transfers):
    """HCOCO's recipe: a person takes the Lab mean of the other photo's person, by each transfer; the only
    car has no other car, so it gets an ordinary edit; the background stays the photo's."""
    from PIL import Image

    from engine.evaluation.metrics import rgb_to_lab
    from engine.training.synthetic import SyntheticComposites

    objects = {"a": ((40, 160, 40), (200, 120, 90), "person"), "b": ((40, 40, 160), (90, 110, 200), "person"),
               "c": ((160, 160, 40), (120, 120, 120), "car")}
    _tiny_coco(tmp_path, objects)
    data = SyntheticComposites(tmp_path, size=32, seed=1, same_category=1.0, transfers=transfers)

    def object_lab(stem):  # the donor's pixels as the dataset samples them
        img = np.asarray(Image.open(tmp_path / "coco" / "images" / f"{stem}.png"), np.float32) / 255
        m = np.asarray(Image.open(tmp_path / "coco" / "masks" / f"{stem}_0.png")) > 127
        return rgb_to_lab(img[m][::7]).mean(0)

    seen = set()
    for i in range(30):
        comp, mask, real = data[i]
        fg, bg = mask[0] > 0.5, mask[0] < 0.5
        assert np.array_equal(comp[:, bg], real[:, bg])
        photo = min(objects, key=lambda s: np.abs(real[:, bg].mean(1) * 255 - objects[s][0]).sum())
        seen.add(photo)
        got = rgb_to_lab(comp[:, fg].T).mean(0)
        if photo == "c":
            assert np.abs(comp - real).max() > 0.01, "the car must still be recoloured"
            continue
        donor = {"a": "b", "b": "a"}[photo]
        assert np.abs(got - object_lab(donor)).max() < 2.0, f"sample {i}: {photo}'s person, Lab mean {got}"
        assert np.abs(got - object_lab(photo)).max() > 10.0
    assert seen == set(objects)
    with pytest.raises(ValueError, match="same_category"):
        SyntheticComposites(tmp_path, size=32, same_category=-0.1)


# --- The colour transfers HCOCO and HFlickr were made with, each against a known answer ---

def test_reinhard_gives_the_reference_lab_mean_and_std():
    from engine.runtime.color import rgb_to_lab
    from engine.training.synthetic import reinhard

    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.5, (4000, 3)).astype(np.float32)
    ref = np.clip(rng.normal([0.6, 0.4, 0.3], 0.05, (3000, 3)), 0, 1).astype(np.float32)
    got, want = rgb_to_lab(reinhard(x, ref)), rgb_to_lab(ref)
    assert np.abs(got.mean(0) - want.mean(0)).max() < 0.5 and np.abs(got.std(0) - want.std(0)).max() < 0.5


def test_histogram_matching_known_answer():
    from engine.training.synthetic import histogram_match

    x = np.array([[0.3, 0.9, 0.1], [0.1, 0.8, 0.2], [0.2, 0.7, 0.3]], np.float32)
    ref = np.array([[0.5, 0.0, 0.9], [0.6, 0.1, 0.8], [0.7, 0.2, 0.7]], np.float32)
    # each channel's smallest value takes the reference's smallest, and so on: the order within a channel stays
    assert np.allclose(histogram_match(x, ref), [[0.7, 0.2, 0.7], [0.5, 0.1, 0.8], [0.6, 0.0, 0.9]])


def test_idt_moves_the_whole_distribution_and_leaves_a_matching_one_alone():
    from engine.training.synthetic import idt_rotations, pitie_idt

    rng = np.random.default_rng(1)
    ref = np.clip(rng.multivariate_normal([0.6, 0.4, 0.3], np.diag([0.01, 0.004, 0.002]), 5000), 0, 1)
    x = np.clip(rng.multivariate_normal([0.3, 0.5, 0.6], np.diag([0.002, 0.01, 0.004]), 4000), 0, 1)
    got = pitie_idt(x.astype(np.float32), ref.astype(np.float32), idt_rotations(np.random.default_rng(2)))
    assert np.abs(got.mean(0) - ref.mean(0)).max() < 0.01, "the means follow the reference"
    assert np.abs(np.cov(got.T) - np.cov(ref.T)).max() < 0.002, "so does the covariance, off-diagonal too"
    same = pitie_idt(ref.astype(np.float32), ref.astype(np.float32), idt_rotations(np.random.default_rng(3)))
    assert np.abs(same - ref).max() < 1e-6, "a distribution that already matches is left as it is"


def test_an_unknown_transfer_is_refused_before_anything_loads(tmp_path):
    from engine.training.synthetic import SyntheticComposites

    with pytest.raises(ValueError, match="transfers must name some of reinhard, histogram, idt, not warp"):
        SyntheticComposites(tmp_path / "nowhere", transfers=("reinhard", "warp"))


@needs_data
@pytest.mark.shared(DATA / "coco-extra" / "images.csv")
def test_packed_pictures_are_what_a_run_reads(tmp_path):
    """pack_sources keeps the permissive pictures only (coco-extra's too), the masks exactly as the stream reads
    them, the photos as JPEGs at the stream's resolution (here a short side of 320 at quality 60, what a round's
    call carries); and it refuses to write into a folder that holds something."""
    from engine.errors import InputError
    from engine.training.synthetic import SyntheticComposites, pack_sources

    written = pack_sources(DATA, tmp_path / "packed", 160, quality=60)
    assert written < 20 * 2**20, "small enough to carry beside the repository and two checkpoints"
    packed, original = (SyntheticComposites(d, 160, more=True, extra=True) for d in (tmp_path / "packed", DATA))
    assert len(packed.items) == len(original.items) and packed.categories == original.categories
    loss = []
    for (photo_a, masks_a), (photo_b, masks_b) in zip(packed.items, original.items, strict=True):
        assert photo_a.shape == photo_b.shape
        loss.append(np.abs(photo_a.astype(int) - photo_b).mean())
        assert all(np.array_equal(a, b) for a, b in zip(masks_a, masks_b, strict=True))
    assert np.mean(loss) < 6 and max(loss) < 16, "the photos, to JPEG's loss at quality 60 (in levels)"
    with pytest.raises(InputError, match="not empty"):
        pack_sources(DATA, tmp_path / "packed", 160)


@pytest.mark.shared(DATA / "coco-extra" / "images.csv", DATA / ".." / "bench" / "iharmony4-val" / "MANIFEST.csv")
def test_no_coco_extra_photo_is_an_evaluation_picture_or_another_folder_s():
    """coco-extra's COCO ids appear nowhere under ../shared/bench (no file name, no number in any text file:
    manifests, READMEs, PEERS.csv), and in neither coco/ nor coco-more/."""
    import csv
    import re

    def ids(folder):  # coco/ names the column coco_id, the others image_id
        with open(DATA / folder / "images.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return {int(r.get("image_id") or r["coco_id"]) for r in rows if (r.get("image_id") or r["coco_id"]).isdigit()}

    extra = ids("coco-extra")
    assert len(extra) >= 465
    assert not extra & (ids("coco") | ids("coco-more"))
    bench = DATA.parent / "bench"
    seen = set()
    for path in bench.rglob("*"):
        texts = [path.name]
        if path.is_file() and path.suffix.lower() in (".csv", ".md", ".txt", ".json", ""):
            texts.append(path.read_text(errors="replace"))
        seen |= {int(n) for text in texts for n in re.findall(r"\d+", text)}
    assert len(seen) > 100  # the manifests were read
    assert not extra & seen, sorted(extra & seen)


# --- Hday2night's recipe: the object lit at another time of day ---

def test_the_planckian_locus_gives_the_standard_illuminants():
    from engine.training.synthetic import light_gains, planckian_xy

    assert np.allclose(planckian_xy(2856), (0.44757, 0.40745), atol=1e-3), "CIE illuminant A is a 2856 K black body"
    assert np.allclose(planckian_xy(5000), (0.3451, 0.3516), atol=1e-3)
    with pytest.raises(ValueError, match="1667 to 25000 K"):
        planckian_xy(1000)
    assert np.allclose(light_gains(6504), 1.0), "daylight lit by daylight is unchanged"
    warm, cold = light_gains(2856), light_gains(10000)
    assert warm[0] > 1.5 and warm[2] < 0.4 and cold[0] < 1 < cold[2] and warm[1] == cold[1] == 1


def test_time_of_day_multiplies_linear_light_by_the_lights_colour_and_strength():
    from engine.runtime.color import linear_to_srgb, srgb_to_linear
    from engine.training.synthetic import LIGHTING, light_gains

    grey = linear_to_srgb(np.full((5, 3), 0.2)).astype(np.float32)
    edit = LIGHTING["time of day"].apply
    assert np.allclose(edit(grey, None, (6504, 0.0)), grey, atol=1e-6)
    assert np.allclose(srgb_to_linear(edit(grey, None, (6504, 1.0)).astype(np.float64)), 0.4, atol=1e-6)
    lit = srgb_to_linear(edit(grey, None, (2856, -1.0)).astype(np.float64))
    assert np.allclose(lit, 0.2 * light_gains(2856) / 2, atol=1e-6)
    draws = [LIGHTING["time of day"].draw({}, np.random.default_rng(s)) for s in range(200)]
    kelvin, stops = np.array(draws).T
    assert 2500 <= kelvin.min() and kelvin.max() <= 12000 and -2 <= stops.min() and stops.max() <= 0.5
    assert abs((kelvin < 5477).mean() - 0.5) < 0.1, "evenly on a log scale: half of them below 5477 K"


@needs_data
def test_time_of_day_composites_relight_only_the_object():
    from engine.runtime.color import srgb_to_linear
    from engine.training.synthetic import SyntheticComposites, light_gains, render

    data = SyntheticComposites(DATA, size=64, seed=2, time_of_day=1.0)
    for i in range(6):
        plan = data.draw(i)
        (name, (kelvin, stops)), = plan.edits
        assert name == "time of day" and plan.transfer is None
        comp, mask, real = render(plan)
        assert np.array_equal(comp[:, mask[0] == 0], real[:, mask[0] == 0])
        fg = mask[0] == 1
        light = light_gains(kelvin) * 2.0**stops
        a, b = srgb_to_linear(real[:, fg].astype(np.float64)), srgb_to_linear(comp[:, fg].astype(np.float64))
        unclipped = (a * light[:, None] < 0.99).all(0) & (a > 0.01).all(0)
        assert unclipped.sum() > 20
        assert np.allclose(b[:, unclipped], a[:, unclipped] * light[:, None], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="time_of_day"):
        SyntheticComposites(DATA, size=64, time_of_day=2.0)
