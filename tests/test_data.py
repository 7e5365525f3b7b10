"""Data readers on a fixture in the exact iHarmony4 layout, and the synthetic generator."""
import numpy as np
import pytest

from conftest import BENCH, DATA, needs_bench, needs_data
from engine.data import iharmony4_names, load_triple, read_iharmony4, read_manifest, read_triples
from engine.errors import InputError


def test_iharmony4_reader(iharmony4_root):
    train = read_iharmony4(iharmony4_root, "train")
    test = read_iharmony4(iharmony4_root, "test")
    assert [t.name for t in test] == ["a0002_1_3", "f0002_1_3"]
    assert len(train) == 4 and {t.subset for t in train} == {"HAdobe5k", "HFlickr"}
    comp, mask, real = load_triple(test[0])
    assert comp.shape == real.shape == (24, 32, 3) and mask.shape == (24, 32)
    assert test[0].mask.name == "a0002_1.png" and test[0].real.name == "a0002.jpg"
    assert read_triples(iharmony4_root)[0] == test[0]


def test_iharmony4_errors(tmp_path):
    with pytest.raises(InputError, match="no test list"):
        read_iharmony4(tmp_path)
    with pytest.raises(InputError, match="not an iHarmony4 composite name"):
        iharmony4_names("photo.jpg")
    assert iharmony4_names("d17664-20120114-145839_1_4.jpg") == ("d17664-20120114-145839_1.png",
                                                               "d17664-20120114-145839.jpg")


@needs_bench
def test_manifest_reader_finds_all_bench_triples():
    triples = read_manifest(BENCH)
    assert len(triples) == 22
    assert all(t.composite.exists() and t.mask.exists() and t.real.exists() for t in triples)


@needs_data
def test_synthetic_composites_are_deterministic_and_recolour_only_the_object():
    from engine.data import SyntheticComposites

    a = SyntheticComposites(DATA, size=64, seed=3)
    comp, mask, real = a[5]
    again = a[5]
    assert all(np.array_equal(x, y) for x, y in zip((comp, mask, real), again))
    assert not np.array_equal(a[6][0], comp)
    assert comp.shape == real.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    outside = mask[0] == 0
    assert np.array_equal(comp[:, outside], real[:, outside]), "background must stay the photo"
    changed = [np.abs(a[i][0] - a[i][2]).max() > 0.01 for i in range(10)]
    assert sum(changed) >= 8, "most synthetic composites must actually be recoloured"


@needs_data
def test_mild_composites_keep_at_most_30_percent_of_their_edit():
    from engine.data import SyntheticComposites

    normal = SyntheticComposites(DATA, size=64, seed=3)
    mild = SyntheticComposites(DATA, size=64, seed=3, mild=1.0)
    for i in range(6):
        (c0, m0, r0), (c1, m1, r1) = normal[i], mild[i]
        # the same object and edit, then scaled; the flip may differ, so compare flip-free errors
        assert np.array_equal(np.sort(r0.ravel()), np.sort(r1.ravel()))
        err0 = np.sum((c0 - r0) ** 2)
        assert np.sum((c1 - r1) ** 2) <= 0.3**2 * err0 + 1e-6
    with pytest.raises(ValueError, match="mild"):
        SyntheticComposites(DATA, size=64, mild=1.5)


@needs_data
def test_restyled_composites_target_an_edited_photo_with_the_composites_background():
    from engine.data import SyntheticComposites

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
    from engine.data import _view_around

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
    from engine.data import SyntheticComposites

    plain = SyntheticComposites(DATA, size=64, seed=4)
    close = SyntheticComposites(DATA, size=64, seed=4, closeup=1.0)
    share = lambda d: np.mean([d[i][1].mean() for i in range(24)])  # noqa: E731
    assert share(close) > 1.5 * share(plain)
    with pytest.raises(ValueError, match="closeup"):
        SyntheticComposites(DATA, size=64, closeup=-0.1)


@needs_data
def test_only_permissive_pictures_train():
    import csv

    from engine.data import permissive_sources

    rows = {r["file"]: r for r in csv.DictReader(open(DATA / "coco" / "images.csv"))}
    sources = permissive_sources(DATA)
    for photo, _ in sources:
        if photo.parent.name == "images":
            assert rows[photo.name]["commercial_ok"] == "1" and rows[photo.name]["derivatives_ok"] == "1"
    assert sum(p.parent.name == "images" for p, _ in sources) == 67


@needs_data
def test_more_data_adds_only_coco_mores_permissive_photos():
    import csv

    from engine.data import permissive_sources

    base, more = permissive_sources(DATA), permissive_sources(DATA, more=True)
    assert more[: len(base)] == base, "the shipped runs' stream must stay a prefix"
    added = more[len(base):]
    rows = {r["file"]: r for r in csv.DictReader(open(DATA / "coco-more" / "images.csv", newline=""))}
    assert len(added) == 312 and sum(len(m) for _, m in added) == 531
    for photo, masks in added:
        assert photo.parent.parent.name == "coco-more"
        assert rows[photo.name]["commercial_ok"] == "1" and rows[photo.name]["derivatives_ok"] == "1"
        assert all(m.name.startswith(photo.stem + "_") for m in masks)
