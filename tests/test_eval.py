"""`harmonize eval`: the table's rows and columns, known answers for the baselines."""
import numpy as np
import pytest
from conftest import BENCH, needs_bench

from engine.cli import main
from engine.evaluation.evaluate import baselines, evaluate, losses, table
from engine.evaluation.metrics import fmse, lab_to_rgb, mse, psnr, reinhard, rgb_to_lab
from engine.training.datasets import read_iharmony4


def test_metrics_known_answers():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 10
    mask = np.zeros((2, 2))
    mask[0, :] = 1
    assert mse(a, b) == 300 / 12
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 25))
    assert fmse(a, b, mask) == 300 / 6
    assert psnr(a, a) == 100.0


def test_lab_round_trip_and_reinhard_moves_foreground_statistics():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1
    rgb[:20] = rgb[:20] // 3  # a dark object over a bright scene
    mask = np.zeros((40, 40))
    mask[:20] = 1
    out = reinhard(rgb, mask)
    lab = rgb_to_lab(out)
    assert np.abs(lab[:20].reshape(-1, 3).mean(0) - lab[20:].reshape(-1, 3).mean(0))[0] < 1.5
    assert np.array_equal(out[20:], rgb[20:])


def test_eval_table_on_an_iharmony4_root(iharmony4_root):
    triples = read_iharmony4(iharmony4_root)
    results = evaluate(triples, baselines(), progress=False)
    text = table(results, triples)
    assert "overall (2 triples)" in text and "HAdobe5k (1 triples)" in text
    assert "| composite (untouched) |" in text and "| Reinhard transfer |" in text
    for _name, row in results["composite (untouched)"].rows.items():
        assert set(row) == {"MSE 256", "PSNR 256", "fMSE 256", "MSE full", "PSNR full", "fMSE full", "shift cosine",
                            "shift size"}
    said = dict(line.split(": ", 1) for line in losses(results, worst=1).splitlines())
    assert set(said) == {"Reinhard transfer", "half-strength Lab transfer"}
    for method, text in said.items():
        drops = {n: results[method].rows[n]["PSNR full"] - results["composite (untouched)"].rows[n]["PSNR full"]
                 for n in results[method].rows}
        assert text.startswith(f"below the composite on {sum(d < 0 for d in drops.values())}/2")
        if min(drops.values()) < 0:
            assert f"worst: {min(drops, key=drops.get)} " in text


@needs_bench
def test_eval_command_on_bench_subset(tmp_path, capsys):
    """The three 256x256 RainNet triples: the composite row matches a direct computation."""
    folder = tmp_path / "bench"
    folder.mkdir()
    lines = (BENCH / "MANIFEST.csv").read_text().splitlines()
    rows = [lines[0]] + [ln for ln in lines[1:] if ln.startswith("RainNet")]
    (folder / "MANIFEST.csv").write_text("\n".join(rows).replace("RainNet,", f"{BENCH / 'RainNet'},", len(rows)))
    assert main(["eval", str(folder), "-q", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "| FMM shipped (onnxruntime) |" in out and "| half-strength Lab transfer |" in out
    from engine.training.datasets import load_triple, read_manifest

    want = np.mean([psnr(c, r) for c, _, r in map(load_triple, read_manifest(folder))])
    assert f"{want:.2f}" in out.split("| composite (untouched) |")[1].split("\n")[0]


def test_eval_puts_published_models_beside_ours_on_the_triples_they_cover(iharmony4_root, capsys):
    """--peers: rows for each published model, means over the triples the CSV scores (here one of two)."""
    peers = iharmony4_root / "PEERS.csv"
    peers.write_text("set,name,composite_PSNR,composite_fMSE,DCCF_PSNR,DCCF_fMSE,PCTNet_PSNR,PCTNet_fMSE\n"
                     f"{iharmony4_root.name},a0002_1_3,20.00,900.0,31.50,120.0,33.25,80.0\n"
                     f"other-set,a0002_1_3,1,1,1,1,1,1\n")
    assert main(["eval", str(iharmony4_root), "-q", "--models-only", "--peers", str(peers), "--worst", "0"]) == 0
    out = capsys.readouterr().out
    section = out.split("published models, on the 1 of these triples")[1]
    assert "| DCCF (published) | 31.50 | 120.00 |" in section and "| PCTNet (published) | 33.25 | 80.00 |" in section
    from engine.training.datasets import load_triple, read_iharmony4

    comp, _, real = load_triple(next(t for t in read_iharmony4(iharmony4_root) if t.name == "a0002_1_3"))
    assert f"| composite (untouched) | {psnr(comp, real):.2f} |" in section
    assert "Their composite PSNR and ours differ by at most" in section
