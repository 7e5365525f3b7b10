"""On an NVIDIA GPU (marked `gpu`; they skip, saying so, on a machine without one): the kernels against the
PyTorch reference (gpu-check), the torch backend on CUDA against ONNX Runtime on the bench triples, and the
shipped model's quality floors with the network in FP16 on the GPU; synthetic composites made on the GPU.
On a lent GPU ../shared is not there: FMM_SHARED names what was carried (recipes/gpu-check.sh)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BENCH, DATA, ROOT, needs_data
from test_benchmark import FLOORS, score

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")]


def test_gpu_check_passes_every_comparison():
    pytest.importorskip("triton", reason="triton is not installed")
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed")
    # conftest runs Triton in its interpreter, which cannot make PTX: the check runs in a process without it
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", "import sys; from engine.cli import main; "
                        "sys.exit(main(['gpu-check', '--repeat', '5']))"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


@pytest.mark.shared(BENCH / "MANIFEST.csv")
def test_torch_on_cuda_gives_onnxruntimes_pictures():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from engine.runtime.backends import load
    from engine.training.datasets import load_triple, read_manifest

    with load("torch", device="gpu") as gpu, load("onnxruntime") as cpu:
        for t in read_manifest(BENCH):
            comp, mask, _ = load_triple(t)
            a, b = gpu.harmonize(comp, mask), cpu.harmonize(comp, mask)
            assert np.abs(a.astype(int) - b).max() <= 1, t.name


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.shared(root / "MANIFEST.csv"))
                                  for name, (root, *_) in FLOORS.items()])
def test_fp16_on_the_gpu_holds_the_quality_floors(name):
    from engine.runtime.backends import load

    with load("torch", device="gpu") as backend:
        backend.model.half()
        infer = backend.infer_impl
        backend.infer_impl = lambda image, mask: infer(image.astype(np.float16), mask.astype(np.float16))
        score(name, backend)


@needs_data
def test_composites_made_on_the_gpu_are_the_cpus():
    """--render device on a GPU makes the composites the CPU makes for the same seed (batched.render_batch)."""
    from engine.training import batched, synthetic

    data = synthetic.SyntheticComposites(DATA, 128, seed=7, strong=True, mild=0.2, restyle=0.5, closeup=0.5,
                                         same_category=0.7, transfers=("reinhard", "histogram", "idt"))
    batch = batched.collate([batched.encode(data.draw(i)) for i in range(32)])
    cpu, gpu = batched.render_batch(batch, "cpu"), batched.render_batch(batch, "cuda")
    for name, a, b in zip(("composite", "mask", "real"), cpu, gpu, strict=True):
        assert torch.abs(a - b.cpu()).max() < 1 / 255, name
