"""`harmonize validate`: a backend against the PyTorch reference on the same inputs, Polygraphy style.

For each input it prints the network output's max and mean absolute difference, and the final
full-resolution images' max difference and PSNR; it passes when the network output is within the
documented tolerance of its precision (TOLERANCES). Non-zero exit status on any failure or NaN/Inf.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtime.backends.base import Backend
from ..runtime.fullres import to_network
from ..training.datasets import load_triple, read_manifest
from .metrics import psnr

# Max absolute difference of the network output (a 3x4 colour map, or an image in 0..1).
# FP32: reordered float sums only. FP16: weights and activations rounded to 11 bits; a colour-map
# entry off by 5e-3 moves a 0..1 colour by at most 2e-2 (5 levels of 255), invisible in a photo.
TOLERANCES = {"fp32": 1e-4, "fp16": 5e-3}


def load_under_test(backend: str, model: str | None, fp16: bool, device: str = "auto") -> tuple[Backend, str]:
    """The backend to validate and its precision: a TensorRT engine is FP16; ONNX Runtime takes the
    shipped model of the asked precision unless a model file is named."""
    from ..models import shipped
    from ..runtime.backends import load

    if model is None and backend == "onnxruntime":
        model = shipped("onnx-fp16" if fp16 else "onnx")
    return load(backend, model, device), "fp16" if fp16 or backend == "tensorrt" else "fp32"


@dataclass
class Comparison:
    """One input's differences between backend and reference."""

    name: str
    size: int
    max_abs: float
    mean_abs: float
    median_abs: float
    image_max: int
    image_psnr: float
    finite: bool
    passed: bool


def synthetic_inputs(sizes=((240, 320), (480, 640), (1000, 1500))) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Pictures made here: colour gradients with texture, an off-centre object recoloured."""
    rng = np.random.default_rng(0)
    for h, w in sizes:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        rgb = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 23 + yy / 41)], -1) * 0.8 + 0.1
        rgb = np.clip((rgb + rng.normal(0, 0.04, (h, w, 1))) * 255, 0, 255).astype(np.uint8)
        mask = ((((yy - h * 0.6) / (h * 0.25)) ** 2 + ((xx - w * 0.4) / (w * 0.2)) ** 2) <= 1).astype(np.float32)
        rgb[mask > 0] = (rgb[mask > 0] * np.array([1.2, 0.8, 0.6])).clip(0, 255).astype(np.uint8)
        yield f"synthetic {w}x{h}", rgb, mask


def bench_inputs(folder: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for t in read_manifest(folder):
        comp, mask, _ = load_triple(t)
        yield t.name, comp, mask


def compare(backend: Backend, reference: Backend, inputs, tolerance: float, sizes: list[int]) -> list[Comparison]:
    """Run both on every input at every working size; the final images at the model's own size."""
    results = []
    for name, rgb, mask in inputs:
        for size in sizes:
            image, m = to_network(rgb, mask, size)
            a, b = backend.infer(image, m), reference.infer(image, m)
            diff = np.abs(a.astype(np.float64) - b)
            finite = bool(np.isfinite(a).all())
            img_max, img_psnr = -1, float("nan")  # images compared at the model's own size only
            if size == reference.size:
                x, y = backend.harmonize(rgb, mask), reference.harmonize(rgb, mask)
                img_max, img_psnr = int(np.abs(x.astype(int) - y).max()), psnr(x, y)
            max_abs = float(diff.max()) if finite else float("inf")
            results.append(Comparison(name, size, max_abs, float(diff.mean()), float(np.median(diff)),
                                      img_max, img_psnr, finite, finite and max_abs <= tolerance))
    return results


def report(results: list[Comparison], backend: str, tolerance: float) -> str:
    """Lines of PASSED | ... / FAILED | ..., then the verdict and the tolerance that would pass."""
    lines = []
    for r in results:
        verdict = "PASSED" if r.passed else "FAILED"
        nan = "" if r.finite else " NaN/Inf in output!"
        image = f" | image max {r.image_max}/255 PSNR {r.image_psnr:.1f} dB" if r.image_max >= 0 else ""
        lines.append(f"{verdict} | {r.name:<34} @{r.size:<4} | max {r.max_abs:.2e} mean {r.mean_abs:.2e} "
                     f"median {r.median_abs:.2e}{image}{nan}")
    worst = max(r.max_abs for r in results)
    ok = all(r.passed for r in results)
    lines.append(f"{'PASSED' if ok else 'FAILED'} | {backend} vs torch: {sum(r.passed for r in results)}/"
                 f"{len(results)} within max abs {tolerance:.0e}; smallest tolerance that passes all: {worst:.2e}")
    return "\n".join(lines)


def as_json(results: list[Comparison]) -> list[dict]:
    return [asdict(r) for r in results]
