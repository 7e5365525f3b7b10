"""The rule that chooses models (engine/evaluation/choose.py) and the colour-move diagnosis of `harmonize eval`,
on scores whose answers are known."""
import csv
import math

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.errors import InputError
from engine.evaluation.choose import paired, report, verdict
from engine.evaluation.evaluate import COMPOSITE, Scores, diagnosis
from engine.evaluation.metrics import colour_shift
from engine.evaluation.sheet import GAP, TILE_HEIGHT, composites, contact_sheet, object_shift, shift_summary
from engine.training.datasets import Triple


def scores(psnr, fmse=None) -> Scores:
    fmse = fmse if fmse is not None else [100.0] * len(psnr)
    return Scores({f"t{i}": {"PSNR full": p, "fMSE full": f} for i, (p, f) in enumerate(zip(psnr, fmse, strict=True))})


def test_paired_gain_and_its_standard_error():
    p = paired(scores([20, 20, 20]), scores([21, 22, 23], [90, 100, 80]))
    assert p.n == 3 and p.psnr_gain == pytest.approx(2.0) and p.fmse_change == pytest.approx(-10.0)
    assert p.psnr_se == pytest.approx(1 / math.sqrt(3))  # std of 1, 2, 3 (ddof 1) over sqrt(3)
    assert p.sigmas == pytest.approx(2 * math.sqrt(3))
    with pytest.raises(ValueError, match="share no triple"):
        paired(scores([1]), Scores({"other": {"PSNR full": 1, "fMSE full": 1}}))


def test_a_gain_counts_only_at_twice_its_standard_error_with_fmse_kept_and_heldout_not_lost():
    base, held = scores([20] * 4), scores([30] * 4)
    steady = scores([20.3, 20.3, 20.4, 20.2])  # +0.3 dB, tiny spread: counts
    noisy = scores([21.0, 19.5, 21.0, 19.7])  # +0.3 dB, SE 0.4: noise
    assert verdict(base, steady, held, scores([30] * 4)).passes
    assert verdict(base, noisy, held, scores([30] * 4)).reason() == "fails: gain under 2 standard errors"
    worse_fmse = scores([20.3, 20.3, 20.4, 20.2], [101] * 4)
    assert verdict(base, worse_fmse, held, scores([30] * 4)).reason() == "fails: fMSE rises"
    lost = verdict(base, steady, held, scores([30, 30, 30, 29.9]))
    assert lost.reason() == "fails: loses on the held-out composites"
    assert verdict(base, steady).reason() == "fails: held-out composites not scored"
    assert verdict(base, noisy).reason() == "fails: gain under 2 standard errors"  # the proviso moot: not named
    assert not verdict(base, noisy).real_passes and verdict(base, steady).real_passes
    v = {"noisy": verdict(base, noisy, held, scores([30] * 4)),
         "steady": verdict(base, steady, held, scores([30] * 4)),
         "steadier": verdict(base, scores([20.5, 20.5, 20.6, 20.4]), held, scores([30.1] * 4))}
    assert report(v).splitlines()[-1] == "winner: steadier"
    assert report({"noisy": v["noisy"]}).splitlines()[-1] == "no candidate passes: the baseline stays"


def test_colour_shift_is_the_cosine_and_size_of_the_object_move_against_the_needed_one():
    comp = np.full((8, 8, 3), 100, np.uint8)
    mask = np.zeros((8, 8), np.float32)
    mask[2:6, 2:6] = 1
    real = comp.copy()
    real[2:6, 2:6] = (140, 100, 60)
    half = comp.copy()
    half[2:6, 2:6] = (120, 100, 80)  # half way along the same line in RGB: nearly so in Lab
    cosine, size = colour_shift(comp, half, real, mask)
    assert cosine > 0.98 and 0.4 < size < 0.6
    away = comp.copy()
    away[2:6, 2:6] = (60, 100, 140)
    assert colour_shift(comp, away, real, mask)[0] < -0.9  # Lab is not RGB: nearly opposite
    cosine, size = colour_shift(comp, comp, real, mask)
    assert math.isnan(cosine) and size == 0  # moved nothing: no direction
    assert all(math.isnan(v) for v in colour_shift(comp, half, comp, mask))  # nothing needed


def test_diagnosis_per_subset():
    subsets = {"a": "HFlickr", "b": "HFlickr", "c": "HAdobe5k"}
    triples = [Triple(name, subset, *["x"] * 3) for name, subset in subsets.items()]
    rows = {"a": {"shift cosine": 1.0, "shift size": 0.5}, "b": {"shift cosine": -0.5, "shift size": 1.5},
            "c": {"shift cosine": float("nan"), "shift size": float("nan")}}
    text = diagnosis({COMPOSITE: Scores(), "model": Scores(rows)}, triples)
    assert "| model | overall (3) | 0.25 | 1.00 | 1 |" in text
    assert "| model | HFlickr (2) | 0.25 | 1.00 | 1 |" in text
    assert "| model | HAdobe5k (1) | - | - | 0 |" in text
    assert COMPOSITE not in text


def real_triples(root):
    """A MANIFEST.csv folder of three triples: a square made brighter in a random picture."""
    rows = []
    rng = np.random.default_rng(0)
    for k in range(3):
        folder = root / f"s{k}"
        folder.mkdir(parents=True)
        real = rng.integers(60, 200, (32, 32, 3)).astype(np.uint8)
        comp = real.copy()
        comp[8:24, 8:24] = np.clip(comp[8:24, 8:24].astype(int) + 40, 0, 255)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 255
        for name, a in (("c.png", comp), ("r.png", real), ("m.png", mask)):
            Image.fromarray(a).save(folder / name)
        rows.append(dict(sample_dir=f"s{k}", subset="HFlickr", composite="c.png", mask="m.png", real="r.png"))
    with open(root / "MANIFEST.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_harmonize_choose_on_a_folder_of_triples(tmp_path, tiny_checkpoint, capsys):
    real_triples(tmp_path / "real")
    out = tmp_path / "v.csv"
    assert main(["choose", str(tmp_path / "real"), "--baseline", str(tiny_checkpoint), "--candidate",
                 str(tiny_checkpoint), "--lab-mix", "0.3", "--heldout", str(tmp_path / "real"), "--heldout-all",
                 "--csv", str(out),
                 "--sheet", str(pastes(tmp_path / "pastes", [(200, 60, 60)])), str(tmp_path / "sheet.jpg"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert Image.open(tmp_path / "sheet.jpg").size[0] == 3 * (60 * TILE_HEIGHT // 40) + 2 * GAP  # composite, 2 models
    assert "tiny: mean" in printed and "baseline: mean" in printed
    with open(out) as f:
        (row,) = list(csv.DictReader(f))
    assert row["candidate"] == "tiny" and row["triples"] == row["heldout_n"] == "3" and "HFlickr (3)" in printed
    gain, se = float(row["psnr_gain_db"]), float(row["psnr_se_db"])
    assert abs(gain) > 0.01  # the Lab ensemble at 0.3 moves the tiny model's answers
    assert (row["verdict"] == "PASSES") == (gain >= 2 * se and float(row["fmse_change"]) <= 0
                                          and float(row["heldout_gain_db"]) >= 0)
    assert ("winner: tiny" in printed) == (row["verdict"] == "PASSES")
    assert main(["choose", str(tmp_path / "real"), "--candidate", str(tmp_path / "missing.pt")]) == 2


def test_choose_scores_the_held_out_composites_only_for_a_candidate_that_passed_on_the_real_triples(
        tmp_path, tiny_checkpoint, capsys):
    """The baseline itself as the candidate gains nothing, so fails on the real triples: the proviso (most of
    the minutes) is not scored, and the verdict does not name it."""
    real_triples(tmp_path / "real")
    out = tmp_path / "v.csv"
    assert main(["choose", str(tmp_path / "real"), "--baseline", str(tiny_checkpoint), "--candidate",
                 str(tiny_checkpoint), "--heldout", str(tmp_path / "real"), "--csv", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert "not scored, no candidate passed on the real triples" in captured.err
    with open(out) as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["psnr_gain_db"]) == 0 and row["heldout_n"] == ""
    assert row["verdict"] == "fails: gain under 2 standard errors"


def pastes(root, colours):
    """A folder laid out as ../shared/bench/real-composites: a grey picture with a square object per colour."""
    (root / "composites").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, colour in enumerate(colours):
        rgb = np.full((40, 60, 3), 128, np.uint8)
        rgb[10:30, 20:40] = colour
        mask = np.zeros((40, 60), np.uint8)
        mask[10:30, 20:40] = 255
        Image.fromarray(rgb).save(root / "composites" / f"p{i}.jpg", quality=100, subsampling=0)
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    return root


def test_object_shift_is_the_distance_between_the_objects_mean_lab_colours():
    before = np.zeros((8, 8, 3), np.uint8)
    after = before.copy()
    after[2:6, 2:6] = 255  # black to white inside the object: L 0 -> 100, a and b stay 0
    after[0, 0] = 255  # outside the object: not counted
    mask = np.zeros((8, 8), np.float32)
    mask[2:6, 2:6] = 1.0
    assert object_shift(before, after, mask) == pytest.approx(100.0, abs=0.01)
    assert object_shift(before, before, mask) == 0.0


def test_contact_sheet_has_a_row_per_composite_and_a_column_per_model(tmp_path):
    root = pastes(tmp_path / "pastes", [(200, 60, 60), (60, 60, 200)])
    pairs = composites(root)

    def white_object(rgb, mask):
        out = rgb.copy()
        out[mask > 0.5] = 255
        return out

    out = tmp_path / "sheet.jpg"
    shifts = contact_sheet(pairs, {"same": lambda rgb, mask: rgb, "white": white_object}, out, progress=False)
    assert shifts["same"] == [0.0, 0.0]
    for (path, mask_path), s in zip(pairs, shifts["white"], strict=True):
        rgb = np.asarray(Image.open(path))
        mask = np.asarray(Image.open(mask_path)) / 255.0
        assert s == pytest.approx(object_shift(rgb, white_object(rgb, mask), mask)) and s > 20
    sheet = np.asarray(Image.open(out))
    tile_width = 60 * TILE_HEIGHT // 40
    assert sheet.shape == (16 + 2 * (TILE_HEIGHT + GAP), 3 * tile_width + 2 * GAP, 3)
    # the second row's "white" tile: the object white, its background still grey
    top, left = 16 + TILE_HEIGHT + GAP, 2 * (tile_width + GAP)
    assert sheet[top + 64, left + 96].min() > 240 and abs(int(sheet[top + 110, left + 10].mean()) - 128) < 6
    assert "white: mean" in shift_summary(shifts, pairs)


def test_a_sheet_folder_without_masks_is_refused_before_any_scoring(tmp_path, tiny_checkpoint, capsys):
    root = pastes(tmp_path / "pastes", [(200, 60, 60)])
    (root / "masks" / "p0.png").unlink()
    with pytest.raises(InputError, match="p0.jpg: no mask"):
        composites(root)
    out = tmp_path / "sheet.jpg"
    real = real_triples(tmp_path / "real")
    assert main(["choose", str(real), "--candidate", str(tiny_checkpoint), "--sheet", str(root), str(out)]) == 2
    assert not out.exists() and "no mask" in capsys.readouterr().err
