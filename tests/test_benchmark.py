"""The shipped model on real iHarmony4 triples at full resolution, against what it measured when it shipped
(docs/results.md): each floor about 0.05 dB and 1 % of fMSE under the shipped figure."""
import numpy as np
import pytest
from conftest import BENCH, SHARED, needs_bench

from engine.evaluation.metrics import fmse, psnr
from engine.runtime.backends import load
from engine.training.datasets import load_triple, read_manifest

VAL = SHARED / "bench" / "iharmony4-val"

FLOORS = {  # set: (triples, mean PSNR at least, mean fMSE at most, fMSE below the composite's on at least)
    "validation": (VAL, 10, 29.56, 492.0, 8),
    "benchmark": (BENCH, 22, 28.0, 805.0, 17),
}


def score(name: str, backend) -> None:
    """Assert a backend holds the floors of one set of triples."""
    root, n, floor_psnr, ceiling_fmse, floor_wins = FLOORS[name]
    scores = []
    for t in read_manifest(root):
        comp, mask, real = load_triple(t)
        out = backend.harmonize(comp, mask)
        scores.append((psnr(out, real), fmse(out, real, mask), fmse(comp, real, mask)))
    p, f, f_comp = np.array(scores).T
    assert len(p) == n
    wins = int((f < f_comp).sum())
    assert p.mean() >= floor_psnr, f"{name}: mean PSNR {p.mean():.2f} dB, under {floor_psnr}"
    assert f.mean() <= ceiling_fmse, f"{name}: mean fMSE {f.mean():.1f}, over {ceiling_fmse}"
    assert wins >= floor_wins, f"{name}: fMSE below the composite's on {wins}/{n}, under {floor_wins}"


@needs_bench
@pytest.mark.parametrize("name", FLOORS)
def test_shipped_model_holds_its_measured_quality(name):
    with load("onnxruntime") as backend:
        score(name, backend)


@needs_bench
@pytest.mark.parametrize("name", FLOORS)
def test_the_fp16_model_holds_the_same_floors(name):
    """The FP16 ONNX, which TensorRT engines are built from and `auto` runs on a GPU, on the CPU here."""
    from engine.models import shipped

    with load("onnxruntime", shipped("onnx-fp16")) as backend:
        score(name, backend)
