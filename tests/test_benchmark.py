"""The shipped model on the 22 real iHarmony4 triples, full resolution, against the issue's figures."""
import numpy as np

from conftest import BENCH, needs_bench
from engine.backends import load
from engine.data import load_triple, read_manifest
from engine.metrics import fmse, psnr

# Known answers for these triples (full resolution): the half-strength Lab transfer of foreground
# mean and std towards the background scores 26.17 dB and fMSE 1184, below the composite's fMSE on
# 14 of 22; a learned model must beat it on all three.
LAB_HALF_PSNR, LAB_HALF_FMSE, LAB_HALF_WINS = 26.17, 1184.0, 14
# The bar the shipped weights are held to (issue #2): at least 27.0 dB, and a lower fMSE than the
# composite on at least three triples in four.
BAR_PSNR, BAR_WIN_SHARE = 27.0, 0.75


@needs_bench
def test_shipped_model_beats_the_heuristic_and_meets_the_bar():
    scores = []
    with load("onnxruntime") as backend:
        for t in read_manifest(BENCH):
            comp, mask, real = load_triple(t)
            out = backend.harmonize(comp, mask)
            scores.append((psnr(out, real), fmse(out, real, mask), fmse(comp, real, mask)))
    p, f, f_comp = np.array(scores).T
    assert len(p) == 22
    assert p.mean() > LAB_HALF_PSNR, f"mean PSNR {p.mean():.2f} dB"
    assert f.mean() < LAB_HALF_FMSE, f"mean fMSE {f.mean():.1f}"
    wins = (f < f_comp).sum()
    assert wins > LAB_HALF_WINS, f"fMSE below the composite's on {wins}/22 only"
    assert p.mean() >= BAR_PSNR, f"mean PSNR {p.mean():.2f} dB is under the shipping bar"
    assert wins >= BAR_WIN_SHARE * len(p), f"fMSE below the composite's on {wins}/22, under three in four"
