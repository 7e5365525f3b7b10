"""Synthetic composites made a batch at a time on a torch device (engine/training/batched.py): for the same
seed, the same composites as the per-sample reference (synthetic.render), edit by edit, transfer by transfer
and whole recipes; the device path trains and refuses what it cannot make."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
from conftest import DATA, needs_data  # noqa: E402

from engine.training import batched, synthetic  # noqa: E402

LEVEL = 1 / 255  # one level of an 8-bit picture


def _objects(rng, batch=6, pixels=300):
    """A batch of random pictures (B, 3, P) with objects of different sizes, (B, 1, P) bool."""
    x = rng.uniform(0.05, 0.95, (batch, 3, pixels)).astype(np.float32)
    m = np.zeros((batch, 1, pixels), bool)
    for b in range(batch):
        m[b, 0, rng.choice(pixels, size=rng.integers(1, pixels), replace=False)] = True
    m[0, 0], m[1, 0, :] = False, True  # one object of one pixel, one of the whole picture
    m[0, 0, 7] = True
    return x, m


def test_each_edit_on_a_batch_is_the_reference_edit_of_each_objects_pixels():
    assert list(batched.TORCH_EDITS) == synthetic.EDIT_NAMES, "every edit is made on the device, in one order"
    rng = np.random.default_rng(0)
    x, m = _objects(rng)
    reference = rng.uniform(0, 0.5, (len(x), 80, 3)).astype(np.float32)
    ref = torch.from_numpy(reference).transpose(1, 2)
    rmu = ref.mean(-1, keepdim=True)
    rsd = ref.std(-1, unbiased=False, keepdim=True) + 1e-3
    ranges = {k: v[1] for k, v in synthetic.RANGES.items()}
    for name, edit in {**synthetic.EDITS, **synthetic.LIGHTING}.items():
        params = [edit.draw(ranges, rng) for _ in x]
        p = torch.tensor([list(q) + [0.0] * (3 - len(q)) for q in params], dtype=torch.float32)
        got = batched.TORCH_EDITS[name](torch.from_numpy(x), torch.from_numpy(m).float(), p, rmu, rsd).numpy()
        for b in range(len(x)):
            want = edit.apply(x[b].T[m[b, 0]], reference[b], params[b])
            assert np.abs(got[b].T[m[b, 0]] - want).max() < 1e-5, f"{name}, object {b}"


@pytest.mark.parametrize("name", list(synthetic.TRANSFERS))
def test_each_transfer_on_a_batch_is_the_reference_transfer_of_each_object(name):
    """Objects and donors of different lengths in one batch (the padding must not count), with ties."""
    assert list(batched.TORCH_TRANSFERS) == list(synthetic.TRANSFERS)
    rng = np.random.default_rng(1)
    x, m = _objects(rng)
    x = np.round(x * 20) / 20  # many equal values: ties keep their order
    donors = [rng.uniform(0, 1, (n, 3)).astype(np.float32) * rng.uniform(0.3, 1) for n in (1, 5, 40, 97, 200, 13)]
    collated = batched.collate([dict(donor=d) for d in donors])
    params = [synthetic.TRANSFERS[name].draw(rng) for _ in x]
    rotations = torch.from_numpy(np.stack([p if p is not None else np.zeros((8, 3, 3)) for p in params]))
    got = batched.TORCH_TRANSFERS[name](torch.from_numpy(x), torch.from_numpy(m), collated["donor"],
                                        collated["donor_n"], rotations).numpy()
    for b in range(len(x)):
        want = synthetic.TRANSFERS[name].apply(x[b].T[m[b, 0]], donors[b], params[b])
        assert np.abs(got[b].T[m[b, 0]] - want).max() <= LEVEL + 1e-6, f"{name}, object {b}"
        assert np.abs(got[b].T[m[b, 0]] - want).mean() < 1e-4, f"{name}, object {b}"


RECIPES = {
    "edits": dict(seed=3),
    "strong, mild, restyled, close up": dict(seed=4, strong=True, mild=0.3, restyle=0.5, closeup=0.5),
    "same category, every transfer": dict(seed=5, strong=True, same_category=0.7, more=True, restyle=0.3, mild=0.2,
                                          transfers=("reinhard", "histogram", "idt")),
    "time of day": dict(seed=6, time_of_day=0.5, restyle=0.3),
}


@needs_data
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_batch_made_on_the_device_is_the_reference_composites(recipe):
    data = synthetic.SyntheticComposites(DATA, 64, **RECIPES[recipe])
    plans = [data.draw(i) for i in range(32)]
    want = [np.stack(parts) for parts in zip(*(synthetic.render(p) for p in plans), strict=True)]
    got = [t.numpy() for t in batched.render_batch(batched.collate([batched.encode(p) for p in plans]), "cpu")]
    assert np.array_equal(got[1], want[1]), "the masks are the same"
    for name, g, w in (("composite", got[0], want[0]), ("real", got[2], want[2])):
        assert g.shape == w.shape and g.dtype == w.dtype == np.float32
        assert np.abs(g - w).max() < LEVEL and np.abs(g - w).mean() < 1e-5, name
    assert np.array_equal(want[0][want[1].repeat(3, 1) == 0], want[2][want[1].repeat(3, 1) == 0])
    if "transfers" in RECIPES[recipe]:
        assert {p.transfer[0] for p in plans if p.transfer} == {"reinhard", "histogram", "idt"}
    elif "time_of_day" in RECIPES[recipe]:
        assert 8 <= sum(p.edits[0][0] == "time of day" for p in plans) <= 24
    else:
        assert {p.flip for p in plans} == {True, False} and any(p.edits for p in plans)


@needs_data
def test_training_with_composites_made_on_the_device(tmp_path, capsys):
    from engine.cli import main

    base = ["train", "--config", "tiny", "--size", "32", "--data", str(DATA), "--batch-size", "4", "--workers", "0",
            "--same-category", "0.5", "--transfers", "reinhard,idt", "--render", "device"]
    out = tmp_path / "device.pt"
    assert main(base + ["--steps", "4", "--out", str(out)]) == 0
    assert torch.load(out, weights_only=True)["step"] == 4
    assert "4 steps in" in capsys.readouterr().err
    assert main(base + ["--iharmony4", str(tmp_path), "--out", str(tmp_path / "x.pt")]) == 2
    assert "--render device makes synthetic composites only" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@needs_data
def test_pause_after_stops_the_process_and_the_run_resumes(tmp_path, monkeypatch):
    import itertools
    import time

    from engine.cli import main

    ticks = itertools.count()
    monkeypatch.setattr(time, "monotonic", lambda: 0.05 * next(ticks))  # a clock that moves 50 ms a reading
    out = tmp_path / "ck.pt"
    args = ["train", "--config", "tiny", "--size", "32", "--data", str(DATA), "--batch-size", "2", "--workers", "0",
            "--steps", "1000", "--out", str(out), "--resume"]
    assert main(args + ["--pause-after", "0.02"]) == 0
    first = torch.load(out, weights_only=True)["step"]
    assert 2 <= first < 20, "the process stopped after its 1.2 s"
    assert main(args + ["--pause-after", "0.02"]) == 0
    assert torch.load(out, weights_only=True)["step"] > first + 1, "the next process went on from there"


@needs_data
def test_auto_renders_on_a_gpu_only_and_only_synthetic_composites(iharmony4_root):
    from engine.training.config import TrainConfig
    from engine.training.train import make_loader, render_where

    def dataset(**settings):
        return type(make_loader(TrainConfig(config="tiny", workers=0, **settings), 32, 0).dataset).__name__

    # on a GPU with synthetic data only: the trainer that keeps it busy (no GPU here to hold the pictures)
    assert render_where(TrainConfig(data=str(DATA), device="cuda")) == "resident"
    assert render_where(TrainConfig(data=str(DATA), iharmony4=str(iharmony4_root), device="cuda")) == "loader"
    assert dataset(data=str(DATA), device="cuda", render="device") == "PlanStream"
    assert dataset(data=str(DATA), device="cpu") == "SyntheticComposites"
    assert dataset(data=str(DATA), device="cuda", render="loader") == "SyntheticComposites"
    assert dataset(data=str(DATA), device="cpu", render="device") == "PlanStream"
    assert dataset(data=str(DATA), iharmony4=str(iharmony4_root), device="cuda") == "Interleaved"
