"""Composites drawn and made on the training device (engine/training/resident.py), the round trainer and
`harmonize bench --train`: every resident batch is the batch synthetic.render makes sample by sample from the
same plans, and its draws follow the recipe's ranges and shares."""
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT, needs_data

from engine.errors import InputError
from engine.evaluation.bench import train_flags, train_table
from engine.training import resident, synthetic
from engine.training.batched import MAX_EDITS, render_batch
from engine.training.config import TrainConfig
from engine.training.round import RoundFailed, read_round, split_file, train_round
from engine.training.train import train

pytestmark = [needs_data, pytest.mark.shared(DATA / "coco-extra" / "images.csv")]
EVERYTHING = resident.Recipe(strong=True, mild=0.2, restyle=0.5, closeup=0.5, same_category=0.5,
                             transfers=("reinhard", "histogram", "idt"), time_of_day=0.1)


@pytest.fixture(scope="module")
def pictures():
    return resident.resident_pictures(DATA, 32, "cpu", more=True, extra=True)


def test_the_pictures_are_every_permissive_photo_with_its_objects(pictures):
    sources = synthetic.permissive_sources(DATA, more=True, extra=True)
    assert pictures.n_photos == len(sources) and pictures.n_objects == sum(len(m) for _, m in sources)
    assert len(sources) > len(synthetic.permissive_sources(DATA, more=True)) + 400  # coco-extra's 471
    assert pictures.photos.dtype == torch.uint8 and pictures.photos.shape[1] == 3
    hw = pictures.photo_hw.numpy()
    assert (hw.min(1) == 64).all() or (hw.min(1) <= 64).all()  # short side 2 x size, never upscaled
    assert pictures.photos.shape[0] == int((hw[:, 0] * hw[:, 1]).sum())
    photo = 5  # the stored pixels are the photo's, resized as SyntheticComposites resizes it
    h, w = hw[photo]
    start = int(pictures.photo_start[photo])
    stored = pictures.photos[start:start + h * w].reshape(h, w, 3).numpy()
    from PIL import Image
    expected = np.asarray(synthetic._resize_short(Image.open(sources[photo][0]).convert("RGB"), 64))
    np.testing.assert_array_equal(stored, expected)
    peers = pictures.peers.numpy()
    for k in range(0, pictures.n_objects, 97):  # a peer is an object of the same category in another photo
        for j in peers[k, :int(pictures.peer_n[k])]:
            assert pictures.mask_photo[j] != pictures.mask_photo[k]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_resident_batch_is_what_render_makes_of_each_of_its_plans(pictures, seed):
    stream = resident.ResidentStream(pictures, EVERYTHING, 48, seed=seed)
    batch = stream.draw()
    comp, mask, real = render_batch(batch, "cpu")
    assert comp.shape == (48, 3, 32, 32) and mask.shape == (48, 1, 32, 32)
    for i in range(48):
        c, m, r = synthetic.render(resident.plan_of(batch, i))
        np.testing.assert_array_equal(m, mask[i].numpy())
        np.testing.assert_allclose(c, comp[i].numpy(), atol=2e-5)
        np.testing.assert_allclose(r, real[i].numpy(), atol=2e-5)
        assert (np.abs(c - r).max(0)[~m[0].astype(bool)] < 1e-6).all()  # outside the object, the target
        assert 0.01 <= m.mean() <= 0.8
    # composites of several kinds were compared: transfers, edits, restyles, another hour's light, mild, flips
    assert len(set(batch["transfer"].tolist())) >= 3
    assert (batch["restyle"][:, 0] >= 0).any() and (batch["edit"][:, 0] == resident.TIME_OF_DAY).any()
    assert batch["mild_on"].any() and batch["flip"].any() and not batch["flip"].all()


def test_on_a_gpu_several_batches_are_made_at_once_and_handed_out_in_turn(pictures):
    """A batch costs thousands of small operations whatever its size: on a GPU about 2,048 samples are made in
    one go. The batches handed out are, in order, the one batch of that many plans cut into pieces."""
    assert resident.batches_made_at_once("cuda", 128) == 16 and resident.batches_made_at_once("cuda:1", 4096) == 1
    assert resident.batches_made_at_once("cpu", 16) == 1
    stream = resident.ResidentStream(pictures, EVERYTHING, 4, seed=3, batches_at_once=3)
    made = [next(stream) for _ in range(4)]
    assert all(t.shape[0] == 4 for batch in made for t in batch)
    whole = render_batch(resident.ResidentStream(pictures, EVERYTHING, 4, seed=3).draw(12), "cpu")
    for got, expected in zip(zip(*made[:3], strict=True), whole, strict=True):
        torch.testing.assert_close(torch.cat(got), expected, rtol=0, atol=0)
    assert not torch.equal(made[3][0], made[0][0]), "the fourth batch is made anew"


def test_a_gpu_short_of_memory_makes_fewer_batches_at_a_time(pictures, monkeypatch, capsys):
    asked = []

    def render(batch, device):
        asked.append(len(batch["photo"]))
        if len(batch["photo"]) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return render_batch(batch, device)

    monkeypatch.setattr(resident, "render_batch", render)
    stream = resident.ResidentStream(pictures, EVERYTHING, 4, seed=3, batches_at_once=8)
    assert next(stream)[0].shape[0] == 4 and stream.at_once == 2 and asked == [32, 16, 8]
    assert "now making 2 batches at a time" in capsys.readouterr().err
    monkeypatch.setattr(resident, "render_batch", lambda batch, device: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory")))
    one = resident.ResidentStream(pictures, EVERYTHING, 4, seed=3, batches_at_once=1)
    with pytest.raises(torch.OutOfMemoryError):
        next(one)


def test_made_ahead_the_batches_are_the_streams_in_order_and_close_stops_the_thread(pictures):
    """--make-ahead: a thread makes the next batches while the network trains; what it hands out is what the
    stream itself would, batch for batch, across makes."""
    plain = resident.ResidentStream(pictures, EVERYTHING, 4, seed=5, batches_at_once=2)
    ahead = resident.MadeAhead(resident.ResidentStream(pictures, EVERYTHING, 4, seed=5, batches_at_once=2))
    try:
        for i in range(5):  # three makes
            for a, b in zip(next(plain), next(ahead), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            # the first step (cuDNN timing its algorithms on a GPU) runs with no make beside it
            assert (ahead.thread.ident is None) == (i == 0)
    finally:
        ahead.close()
    assert not ahead.thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "fmm-make-ahead" and t.is_alive()]


def test_a_make_that_fails_ahead_fails_where_the_batch_is_taken(pictures, monkeypatch):
    def render(batch, device):
        raise RuntimeError("a broken make")

    monkeypatch.setattr(resident, "render_batch", render)
    ahead = resident.MadeAhead(resident.ResidentStream(pictures, EVERYTHING, 4, seed=5, batches_at_once=1))
    with pytest.raises(RuntimeError, match="a broken make"):
        next(ahead)
    ahead.close()
    assert not ahead.thread.is_alive()


def test_the_draws_follow_the_recipe_shares_and_ranges(pictures):
    batch = resident.ResidentStream(pictures, EVERYTHING, 400, seed=3).draw()
    transfer, edit, restyle = batch["transfer"], batch["edit"], batch["restyle"]
    lit = edit[:, 0] == resident.TIME_OF_DAY
    assert abs(lit.float().mean() - 0.1) < 0.05
    assert abs((restyle[:, 0] >= 0).float().mean() - 0.5) < 0.1
    assert abs(batch["mild_on"].float().mean() - 0.2) < 0.07
    # half of those whose object has one of its category in another photo, but for another hour's light
    first, count, peer_n = pictures.first_object, pictures.n_objects_of, pictures.peer_n
    with_peers = [float((peer_n[first[i]:first[i] + count[i]] > 0).float().mean()) if count[i] else 0.0
                  for i in range(pictures.n_photos)]
    assert abs((transfer >= 0).float().mean() - 0.5 * 0.9 * np.mean(with_peers)) < 0.05
    assert set(transfer.tolist()) == {-1, 0, 1, 2}
    assert not ((transfer >= 0) & lit).any()
    edited = (transfer < 0) & ~lit
    n = (edit[edited] >= 0).sum(1)
    assert n.min() >= 2 and n.max() <= 4  # strong edits: 2 to 4
    n = (restyle[restyle[:, 0] >= 0] >= 0).sum(1)
    assert n.min() >= 1 and n.max() <= 3
    assert 0 <= batch["mild"].min() and batch["mild"].max() <= 0.3


def test_drawn_edits_are_distinct_and_within_their_ranges():
    g = torch.Generator().manual_seed(0)
    for strong in (False, True):
        index, params = resident.draw_edit_batch(g, 3000, strong, "cpu")
        r = {k: v[int(strong)] for k, v in synthetic.RANGES.items()}
        counts = (index >= 0).sum(1)
        assert set(counts.tolist()) == ({2, 3, 4} if strong else {1, 2, 3})
        for row in index.tolist():
            chosen = [e for e in row if e >= 0]
            assert len(set(chosen)) == len(chosen) and row[:len(chosen)] == chosen and len(row) == MAX_EDITS
        names = synthetic.EDIT_NAMES
        for e, name in enumerate(names[:resident.OBJECT_EDITS]):
            p = params[index == e]
            assert len(p) > 100, name  # every edit is drawn
            key, low, high = {"white balance": ("gain", 0, 3), "exposure": ("stops", 0, 1)}.get(name, (name, 0, 1))
            values = torch.log2(p[:, 0]) if name == "exposure" else p[:, low:high]
            lo, hi = r[key]
            assert values.min() >= lo and values.max() <= hi, name
            assert values.min() < lo + 0.1 * (hi - lo) and values.max() > hi - 0.1 * (hi - lo), name


def test_the_idt_axes_are_the_qr_of_a_normal_matrix_up_to_each_axis_sign():
    g = torch.Generator()
    g.manual_seed(4)
    axes = resident._qr_rotations(g, 300, "cpu")
    g.manual_seed(4)
    q = torch.linalg.qr(torch.randn((300, synthetic.IDT_ITERATIONS, 3, 3), generator=g, dtype=torch.float64))[0]
    sign = torch.sign((axes * q).sum(-2, keepdim=True))  # +1 or -1 per column
    torch.testing.assert_close(axes, q * sign, rtol=0, atol=1e-9)
    torch.testing.assert_close(axes.transpose(-1, -2) @ axes, torch.eye(3, dtype=torch.float64).expand_as(axes),
                               rtol=0, atol=1e-9)


def test_light_gains_of_many_kelvins_are_those_of_each():
    kelvins = np.array([2500.0, 2856.0, 5000.0, 6504.0, 12000.0])
    np.testing.assert_allclose(synthetic.light_gains(kelvins), np.stack([synthetic.light_gains(k) for k in kelvins]))
    np.testing.assert_allclose(synthetic.light_gains(6504.0), [1, 1, 1], atol=1e-9)


def test_a_view_is_the_photo_resampled(pictures):
    """The bilinear, 2 x 2 supersampled view (here 48 px of the photo to 32, as a view of 60 to 100 % of a short
    side of 512 px is resampled to 256) is close to Pillow's resize of the same box, and not shifted."""
    from PIL import Image

    photo = torch.tensor([7])
    h, w = (int(v) for v in pictures.photo_hw[7])
    view = torch.tensor([[8.0, 4.0, 48, 48]], dtype=torch.float64)
    ones = torch.ones(1, dtype=torch.float64)
    ys, xs = resident._grid(view, 32, ones, ones)
    out = resident._bilinear(pictures.photos, pictures.photo_start[photo], pictures.photo_hw[photo], ys, xs)[0]
    start = int(pictures.photo_start[7])
    img = Image.fromarray(pictures.photos[start:start + h * w].reshape(h, w, 3).numpy())
    expected = np.asarray(img.resize((32, 32), Image.BILINEAR, box=(4, 8, 52, 56)), np.float32)
    assert np.abs(out.numpy() - expected).mean() < 2  # levels of 255
    shifted = np.asarray(img.resize((32, 32), Image.BILINEAR, box=(6, 8, 54, 56)), np.float32)
    assert np.abs(out.numpy() - shifted).mean() > np.abs(out.numpy() - expected).mean() + 1


def test_train_with_resident_composites_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run.pt"
    c = TrainConfig(config="tiny", data=str(DATA), render="resident", batch_size=4, steps=3, save_every=2,
                    more_data=True, extra_data=True, same_category=0.5, transfers="reinhard,idt", time_of_day=0.2)
    train(out, c)
    assert torch.load(out, weights_only=True)["step"] == 3
    c.steps, c.resume = 5, True
    train(out, c)
    assert torch.load(out, weights_only=True)["step"] == 5
    with pytest.raises(InputError, match="--render resident makes synthetic composites only"):
        train(tmp_path / "x.pt", TrainConfig(config="tiny", iharmony4=str(tmp_path), render="resident"))
    c.steps, c.make_ahead = 7, True  # made ahead in a thread, which ends with the run
    train(out, c)
    assert torch.load(out, weights_only=True)["step"] == 7
    assert not [t for t in threading.enumerate() if t.name == "fmm-make-ahead" and t.is_alive()]
    with pytest.raises(InputError, match="--make-ahead makes the composites of --render resident"):
        train(tmp_path / "y.pt", TrainConfig(config="tiny", data=str(DATA), render="loader", make_ahead=True))


def test_a_round_trains_each_candidate_and_splits_what_is_too_large(tmp_path):
    start = tmp_path / "start"
    start.mkdir()
    train(start / "prev.pt", TrainConfig(config="tiny", data=str(DATA), render="resident", batch_size=2, steps=1))
    spec = {"common": {"render": "resident", "batch_size": 2, "steps": 2, "extra_data": True, "time_of_day": 0.5},
            "candidates": {"a": {"config": "tiny", "seed": 1}, "b": {"from": "prev.pt", "config": "tiny", "share": 2},
                           "c": {"config": "small", "size": 32}}}
    (tmp_path / "round.json").write_text(json.dumps(spec))
    written = train_round(tmp_path / "round.json", DATA, start, tmp_path / "out", 0.05, "cpu", part_limit=600_000,
                          runs=tmp_path / "full")
    names = sorted(p.name for p in written)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # the full checkpoints stay out of OUT
    assert "optimizer" in torch.load(tmp_path / "full" / "a.pt", weights_only=True)  # a run again resumes them
    assert names[:2] == ["a.pt", "b.pt"] and all(n.startswith("c.pt.part") for n in names[2:]) and len(names) > 3
    assert all(p.stat().st_size <= 600_000 for p in written)
    joined = tmp_path / "c.pt"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(written[2:], key=lambda p: int(p.name[9:]))))
    ckpt = torch.load(joined, weights_only=True)
    assert ckpt["step"] >= 1 and ckpt["model"]["enc1.0.0.weight"].dtype == torch.float16 and "optimizer" not in ckpt
    prev = torch.load(start / "prev.pt", weights_only=True)["model"]["enc1.0.0.weight"]
    b = torch.load(tmp_path / "out" / "b.pt", weights_only=True)["model"]["enc1.0.0.weight"]
    assert (b.float() - prev).abs().max() > 0  # trained on from prev's weights...
    assert (b.float() - prev).abs().max() < 0.05  # ...not from scratch


def test_a_failing_candidate_does_not_cost_the_others_their_checkpoints(tmp_path):
    start = tmp_path / "start"
    start.mkdir()
    train(start / "tiny.pt", TrainConfig(config="tiny", data=str(DATA), render="resident", batch_size=2, steps=1))
    spec = {"common": {"render": "resident", "batch_size": 2, "steps": 1},
            "candidates": {"a": {"from": "tiny.pt", "config": "small"}, "b": {"config": "tiny"}}}
    (tmp_path / "round.json").write_text(json.dumps(spec))
    with pytest.raises(RoundFailed, match="candidates that failed: a ") as failure:
        train_round(tmp_path / "round.json", DATA, start, tmp_path / "out", 0.05, "cpu")
    assert [p.name for p in failure.value.written] == ["b.pt"] and (tmp_path / "out" / "b.pt").exists()
    assert not (tmp_path / "out" / "a.pt").exists()
    r = subprocess.run([sys.executable, "-m", "engine.cli", "train-round", str(tmp_path / "round.json"), "--data",
                        str(DATA), "--start", str(start), "--out", str(tmp_path / "cli"), "--minutes", "0.05",
                        "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 1 and "size mismatch" in r.stderr and "round: a failed" in r.stderr
    assert "candidates that failed: a" in r.stderr and "b.pt" in r.stdout


def test_a_round_file_is_checked(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"candidates": {"a": {"confg": "tiny"}}}))
    with pytest.raises(InputError, match="unknown options confg"):
        read_round(bad)
    bad.write_text(json.dumps({"common": {"device": "cuda"}, "candidates": {"a": {}}}))
    with pytest.raises(InputError, match="device are the round's"):
        read_round(bad)
    common, candidates = read_round(ROOT / "recipes" / "round-6.json")
    assert len(candidates) == 4 and common["render"] == "resident" and common["extra_data"]
    for f in (ROOT / "recipes").glob("round-*.json"):  # every recipe's candidates are settings train takes
        assert read_round(f)[1], f
    f = tmp_path / "small.bin"
    f.write_bytes(b"x" * 10)
    assert split_file(f, 10) == [f]


def test_bench_train_prints_samples_per_second_and_the_data_share():
    r = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--train", str(DATA), "--device", "cpu",
                        "--config", "tiny", "--train-batch", "2", "--steps", "1", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert set(result["rows"]) == {"fp32", "bf16", "bf16, channels-last", "bf16, made ahead"}
    for name, row in result["rows"].items():  # made ahead, a step may not wait for its composites at all
        assert row["samples_per_second"] > 0 and (0 <= row["data_share"] < 1 if "ahead" in name else
                                                  0 < row["data_share"] < 1), name
    assert result["flags"] == train_flags(result["rows"])
    assert result["rows"]["bf16, made ahead"]["channels_last"] == ("--channels-last" in result["flags"])


@pytest.mark.parametrize("channels_last, ahead, flags", [(170.0, 180.0, ["--channels-last", "--make-ahead"]),
                                                         (170.0, 160.0, ["--channels-last"]),
                                                         (150.0, 120.0, ["--make-ahead"]), (150.0, 90.0, [])],
                         ids=["faster-ahead", "faster", "slower-ahead", "slower"])
def test_the_bench_picks_channels_last_by_the_network_alone_and_making_ahead_end_to_end(channels_last, ahead, flags):
    """bf16 trains 100 samples/s, half its time waiting for composites: the network alone 200. Channels-last at
    150 with a fifth waiting is faster end to end and slower alone (187), at 170 faster alone (212); made ahead
    is taken where it beat the chosen layout end to end."""
    rows = {"fp32": {"samples_per_second": 50.0, "data_share": 0.3},
            "bf16": {"samples_per_second": 100.0, "data_share": 0.5},
            "bf16, channels-last": {"samples_per_second": channels_last, "data_share": 0.2},
            "bf16, made ahead": {"samples_per_second": ahead, "data_share": 0.01}}
    assert train_flags(rows) == flags


def test_the_bench_table_shows_each_rows_network_rate_and_a_gpus_peak_memory():
    """The table the round's log keeps: the network's own rate per row, the options taken, and on a GPU the
    peak device memory of each row (making ahead holds a make in flight)."""
    rows = {"fp32": {"samples_per_second": 50.0, "data_share": 0.5, "channels_last": False, "peak_gib": 20.0},
            "bf16, made ahead": {"samples_per_second": 90.0, "data_share": 0.1, "channels_last": True,
                                 "peak_gib": 31.25}}
    result = dict(device="cuda", config="medium", size=256, batch=128, steps=32, made_at_once=16, pictures=915,
                  pictures_mib=171.0, rows=rows, flags=["--channels-last"])
    table = train_table(result).splitlines()
    assert table[2].endswith("| network alone, samples/s | peak device memory |") and table[3] == "|" + "---|" * 5
    assert table[4] == "| fp32 | 50.0 | 50 % | 100.0 | 20.0 GiB |"
    assert table[5] == "| bf16, made ahead (channels-last) | 90.0 | 10 % | 100.0 | 31.2 GiB |"
    assert table[-1] == "faster here: --channels-last"
    for row in rows.values():  # on the CPU, no memory column
        row["peak_gib"] = None
    assert train_table(result).splitlines()[4] == "| fp32 | 50.0 | 50 % | 100.0 |"
