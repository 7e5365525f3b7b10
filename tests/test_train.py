"""`harmonize train`: a few steps on each data source, atomic checkpoints, resume continues."""
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
from conftest import DATA, needs_data  # noqa: E402

from engine.cli import main  # noqa: E402
from engine.network.model import load_checkpoint  # noqa: E402


def test_train_on_iharmony4_layout_and_resume(iharmony4_root, tmp_path):
    out = tmp_path / "ck.pt"
    args = ["train", "--config", "tiny", "--size", "16", "--iharmony4", str(iharmony4_root), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--steps", "3"]
    assert main(args) == 0
    first = torch.load(out, weights_only=True)
    assert first["step"] == 3 and first["config"]["size"] == 16
    assert main(args[:-1] + ["5", "--resume"]) == 0
    second = torch.load(out, weights_only=True)
    assert second["step"] == 5
    changed = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert changed, "resumed training did not update the weights"
    assert load_checkpoint(out).training is False
    assert not list(tmp_path.glob(".ck.pt*")), "a temporary checkpoint was left behind"


def test_a_run_resumed_in_the_other_layout_keeps_adam_in_step(iharmony4_root, tmp_path):
    """Fused Adam pairs each weight with its moments by memory, so a run saved channels-last and resumed without
    (or the other way) must bring its moments into the weights' layout: on the CPU it otherwise steps wrongly."""
    out = tmp_path / "ck.pt"
    args = ["train", "--config", "tiny", "--size", "16", "--iharmony4", str(iharmony4_root), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--steps", "4"]
    assert main(args + ["--until", "2", "--channels-last"]) == 0
    saved = torch.load(out, weights_only=True)["optimizer"]["state"]
    assert any(not v["exp_avg"].is_contiguous() for v in saved.values() if v["exp_avg"].dim() == 4)
    assert main(args + ["--until", "3", "--resume"]) == 0
    moments = [v[k] for v in torch.load(out, weights_only=True)["optimizer"]["state"].values()
               for k in ("exp_avg", "exp_avg_sq")]
    assert all(m.is_contiguous() for m in moments), "the moments stayed channels-last beside contiguous weights"


def test_match_layout_makes_fused_adam_step_as_plain_adam():
    from engine.training.train import match_layout
    g = torch.linspace(-1, 1, 8 * 4 * 9).reshape(8, 4, 3, 3)

    def two_steps(fused: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.arange(8 * 4 * 9, dtype=torch.float32).reshape(8, 4, 3, 3) / 100)
        opt = torch.optim.Adam([w], lr=1e-2, fused=fused)
        w.grad = g.clone()
        opt.step()
        w.data = w.data.contiguous(memory_format=torch.channels_last)  # as a resume in the other layout
        w.grad = (g * g).contiguous(memory_format=torch.channels_last)
        match_layout(opt)
        opt.step()
        return w.detach().contiguous()

    torch.testing.assert_close(two_steps(True), two_steps(False))


def test_a_time_budget_ends_the_run_and_its_schedule_and_resumes_with_what_is_left(iharmony4_root, tmp_path,
                                                                                   monkeypatch, capsys):
    import itertools
    import time

    ticks = itertools.count()
    monkeypatch.setattr(time, "monotonic", lambda: 0.05 * next(ticks))  # a clock that moves 50 ms a reading
    out = tmp_path / "ck.pt"
    args = ["train", "--config", "tiny", "--size", "16", "--iharmony4", str(iharmony4_root), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--steps", "1000000", "--lr", "0.01", "--minutes"]
    assert main(args + ["0.03"]) == 0
    first = torch.load(out, weights_only=True)
    assert 1.8 <= first["elapsed"] < 2.1 and 3 <= first["step"] < 20
    assert first["optimizer"]["param_groups"][0]["lr"] < 0.05 * 0.01, "the cosine schedule must end with the time"
    capsys.readouterr()
    assert main(args + ["0.03", "--resume"]) == 0
    assert torch.load(out, weights_only=True)["step"] == first["step"], "a spent budget trains no further"
    said = capsys.readouterr().err
    assert f"{out}: goes on from step {first['step']}, 0.03 of its 0.03 min spent" in said
    assert f"{out}: its minutes are spent, nothing to train" in said
    assert main(args + ["0.06", "--resume"]) == 0
    second = torch.load(out, weights_only=True)
    assert second["step"] > first["step"] + 3 and 3.6 <= second["elapsed"] < 3.9


@needs_data
def test_train_refuses_a_share_out_of_range_and_a_budget_of_nothing(tmp_path, capsys):
    base = ["train", "--config", "tiny", "--data", str(DATA), "--out", str(tmp_path / "x.pt"), "--workers", "0"]
    assert main(base + ["--same-category", "1.5"]) == 2
    assert "--same-category must be within 0..1, not 1.5" in capsys.readouterr().err
    assert main(base + ["--minutes", "0"]) == 2
    assert "--minutes must be more than 0" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@needs_data
def test_train_on_synthetic_composites_lowers_the_loss(tmp_path):
    from engine.training.synthetic import SyntheticComposites
    from engine.training.train import foreground_mse

    data = SyntheticComposites(DATA, size=32, seed=9)
    batch = [torch.from_numpy(__import__("numpy").stack(x)) for x in zip(*(data[i] for i in range(8)), strict=True)]
    out = tmp_path / "syn.pt"
    assert main(["train", "--config", "tiny", "--size", "32", "--data", str(DATA), "--out", str(out),
                 "--batch-size", "8", "--workers", "0", "--steps", "60", "--lr", "3e-3"]) == 0
    model = load_checkpoint(out)
    with torch.no_grad():
        before = foreground_mse(batch[0], batch[2], batch[1]).mean()
        after = foreground_mse(model.harmonize(batch[0], batch[1]), batch[2], batch[1]).mean()
    assert after < before, f"fMSE {after:.4f} not below the composite's {before:.4f} after 60 steps"


def test_train_needs_data(tmp_path, capsys):
    assert main(["train", "--config", "tiny", "--out", str(tmp_path / "x.pt"), "--workers", "0"]) == 2
    assert "give training data: --data" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt"),
                 "--workers", "0"]) == 2
    assert f"{tmp_path / 'nowhere' / 'coco' / 'images.csv'}: not found" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_train_options_come_from_the_config_with_one_default_each():
    """`harmonize train`'s options are TrainConfig's fields; a command line without options is its defaults."""
    import dataclasses

    from engine.cli import build_parser
    from engine.training.config import TrainConfig, from_arguments

    args = build_parser().parse_args(["train", "--out", "x.pt"])
    assert from_arguments(args) == TrainConfig()
    args = build_parser().parse_args(["train", "--out", "x.pt", "--batch-size", "3", "--strong-edits", "--mild", "0.2"])
    assert from_arguments(args) == dataclasses.replace(TrainConfig(), batch_size=3, strong_edits=True, mild=0.2)


def test_fine_tune_from_another_run(iharmony4_root, tmp_path):
    """--init takes the weights; a head trained for another prior starts again at zero."""
    first = tmp_path / "a.pt"
    base = ["train", "--config", "tiny", "--size", "16", "--iharmony4", str(iharmony4_root),
            "--batch-size", "2", "--workers", "0", "--steps", "2"]
    assert main(base + ["--out", str(first)]) == 0
    a = torch.load(first, weights_only=True)
    with torch.no_grad():
        a["model"]["out.2.weight"].fill_(0.3)
    a["config"]["prior"] = 0.5
    torch.save(a, first)
    assert main(base[:-1] + ["0", "--out", str(tmp_path / "b.pt"), "--init", str(first)]) == 0
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert torch.equal(b["model"]["enc1.0.0.weight"], a["model"]["enc1.0.0.weight"])
    assert not b["model"]["out.2.weight"].any()


def test_psnr_loss_is_the_mean_log_foreground_mse():
    import numpy as np

    from engine.evaluation.metrics import fmse
    from engine.training.train import LOG_EPS, loss_value

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 8, 8, generator=g)
    mask = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    expected = np.mean([np.log10(fmse(p.permute(1, 2, 0).numpy() * 255, t.permute(1, 2, 0).numpy() * 255,
                                      m[0].numpy()) / 255**2 + LOG_EPS)
                        for p, t, m in zip(pred, target, mask, strict=True)])
    assert loss_value("psnr", pred, target, mask).item() == pytest.approx(expected, rel=1e-5)
    assert loss_value("fmse", pred, target, mask).item() == pytest.approx(
        np.mean([fmse(p.permute(1, 2, 0).numpy(), t.permute(1, 2, 0).numpy(), m[0].numpy())
                 for p, t, m in zip(pred, target, mask, strict=True)]), rel=1e-5)
    with pytest.raises(ValueError, match="loss must be"):
        loss_value("l1", pred, target, mask)


def test_iharmony4_stream_repeats_and_visits_every_triple_once_per_pass(iharmony4_root, monkeypatch):
    import numpy as np

    import engine.training.train as tr

    seen = []
    load = tr.load_triple
    monkeypatch.setattr(tr, "load_triple", lambda t: (seen.append(t.name), load(t))[1])
    stream = tr.IHarmony4Crops(iharmony4_root, 16, seed=1)
    first = [stream[k] for k in range(8)]
    names = sorted(t.name for t in stream.triples)
    assert sorted(seen[:4]) == names and sorted(seen[4:]) == names
    again = tr.IHarmony4Crops(iharmony4_root, 16, seed=1)
    assert all(np.array_equal(x, y) for k in range(8) for x, y in zip(first[k], again[k], strict=True))


@needs_data
def test_train_on_synthetic_and_iharmony4_together(iharmony4_root, tmp_path):
    out = tmp_path / "both.pt"
    assert main(["train", "--config", "tiny", "--size", "16", "--data", str(DATA), "--iharmony4", str(iharmony4_root),
                 "--out", str(out), "--batch-size", "4", "--workers", "0", "--steps", "2"]) == 0
    assert torch.load(out, weights_only=True)["step"] == 2


def test_average_checkpoints_is_the_mean_of_their_weights(iharmony4_root, tmp_path, capsys):
    base = ["train", "--config", "tiny", "--size", "16", "--iharmony4", str(iharmony4_root),
            "--batch-size", "2", "--workers", "0", "--steps", "2"]
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(base + ["--out", str(a), "--seed", "1"]) == 0
    assert main(base + ["--out", str(b), "--seed", "2"]) == 0
    assert main(["average", str(a), str(b), "-o", str(tmp_path / "avg.pt")]) == 0
    wa, wb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    avg = load_checkpoint(tmp_path / "avg.pt").state_dict()
    assert torch.allclose(avg["enc1.0.0.weight"], (wa["enc1.0.0.weight"] + wb["enc1.0.0.weight"]) / 2)
    assert not torch.equal(wa["enc1.0.0.weight"], wb["enc1.0.0.weight"])
    other = tmp_path / "other.pt"
    assert main(base[:3] + ["--size", "24"] + base[5:] + ["--out", str(other)]) == 0
    assert main(["average", str(a), str(other), "-o", str(tmp_path / "bad.pt")]) != 0
    assert "other.pt: configuration" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()
    # --lab-mix makes the soup an ensemble with the Lab transfer; every backend reads it from the file.
    assert main(["average", str(a), str(b), "-o", str(tmp_path / "mix.pt"), "--lab-mix", "0.5"]) == 0
    assert load_checkpoint(tmp_path / "mix.pt").lab_mix == 0.5
    assert load_checkpoint(tmp_path / "avg.pt").lab_mix == 0.0


def test_a_slimmed_checkpoint_is_the_weights_and_a_run_resumes_from_it(iharmony4_root, tmp_path):
    from engine.training.train import slim_checkpoint

    out = tmp_path / "ck.pt"
    args = ["train", "--config", "tiny", "--size", "16", "--iharmony4", str(iharmony4_root), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--steps", "6"]
    assert main(args + ["--until", "3"]) == 0
    full = torch.load(out, weights_only=True)
    slim = torch.load(slim_checkpoint(out, tmp_path / "slim.pt", half=True), weights_only=True)
    assert "optimizer" not in slim and {k: slim[k] for k in ("config", "step", "seed")} == \
        {k: full[k] for k in ("config", "step", "seed")}
    for key, value in full["model"].items():
        if value.is_floating_point():
            assert slim["model"][key].dtype == torch.float16
            assert torch.allclose(slim["model"][key].float(), value, rtol=1e-3, atol=1e-4), key
    assert (tmp_path / "slim.pt").stat().st_size < out.stat().st_size / 3
    (tmp_path / "slim.pt").replace(out)
    assert main(args + ["--resume"]) == 0, "a run goes on from the weights alone, with a new optimizer"
    assert torch.load(out, weights_only=True)["step"] == 6
