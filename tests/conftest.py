"""Shared fixtures: small pictures made here, a tiny model, and ../shared when it is present."""
from __future__ import annotations

import os
from pathlib import Path

# The Triton kernels run on the CPU in tests: the interpreter must be chosen before triton is imported.
# (PTX compilation cannot run under it: those tests start a process without it.)
os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FMM_SHARED") or ROOT.parent / "shared")  # elsewhere on a lent GPU (gpu-check.sh)
BENCH = SHARED / "bench" / "iharmony4-samples"
DATA = SHARED / "data"

REQUIRE_SHARED = os.environ.get("FMM_REQUIRE_SHARED") == "1"  # CI: a test that needs ../shared fails without it
REQUIRE_SCALEOUT = os.environ.get("FMM_REQUIRE_SCALEOUT") == "1"  # CI: the s3_endpoint and two_node tests run
needs_bench = pytest.mark.shared(BENCH / "MANIFEST.csv", SHARED / "bench" / "iharmony4-val" / "MANIFEST.csv")
needs_data = pytest.mark.shared(DATA / "coco" / "images.csv", DATA / "coco-more" / "images.csv", DATA / "photos")


def pytest_runtest_setup(item):
    """A test marked `shared(paths...)` skips, saying which is missing, when ../shared lacks one of them;
    with FMM_REQUIRE_SHARED=1 it fails instead."""
    for mark in item.iter_markers("shared"):
        missing = [p for p in mark.args if not p.exists()]
        if missing and REQUIRE_SHARED:
            pytest.fail(f"FMM_REQUIRE_SHARED=1, but {missing[0]} is missing")
        if missing:
            pytest.skip(f"needs ../shared: {missing[0]} is missing")


def import_scaleout(module: str):
    """Import a dependency of the s3_endpoint and two_node tests (the 'dev' extra): without it the module's
    tests skip, saying which; with FMM_REQUIRE_SCALEOUT=1 (CI) they fail instead."""
    if REQUIRE_SCALEOUT:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[dev]')")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, on `host` (a loopback address)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB picture with smooth colour gradients and fine texture (to test detail is kept)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 37.0 + yy / 53.0)], -1)
    noise = rng.normal(0, 0.06, (h, w, 1)).astype(np.float32)
    return np.clip((0.15 + 0.7 * base + noise) * 255, 0, 255).astype(np.uint8)


def ellipse_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((((yy - h * 0.55) / (h * 0.25)) ** 2 + ((xx - w * 0.45) / (w * 0.2)) ** 2) <= 1).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny affine-head model in which both attention paths visibly move the answer: convolutions at
    ReLU's gain keep the bottleneck's activations alive (the default init shrinks them to 1e-5), and the
    gammas and the head's last layer are set well away from zero. It checks that itself: each path moves the
    colour map by at least 20 times the FP32 tolerance the backends are held to (1e-4)."""
    torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
    from engine.network.model import create_model

    torch.manual_seed(0)
    model = create_model("tiny")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        model.fmm.gamma.fill_(2.0)
        model.fmm.self_attention.gamma.fill_(0.3)
        model.out[2].weight.normal_(0, 0.2)
    model.eval()
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:35, 12:55] = 1
    with torch.no_grad():
        full = model(image, mask)
        for gamma in (model.fmm.gamma, model.fmm.self_attention.gamma):
            kept = gamma.clone()
            gamma.zero_()
            moved = (model(image, mask) - full).abs().max().item()
            gamma.copy_(kept)
            assert moved > 2e-3, f"switching an attention path off moves the answer by only {moved:.1e}"
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(dict(config=model.config, model=model.state_dict(), step=0, seed=0), path)
    return path


@pytest.fixture
def iharmony4_root(tmp_path):
    """Two subsets in the iHarmony4 layout, each with a train and a test list."""
    for subset, prefix in (("HAdobe5k", "a"), ("HFlickr", "f")):
        d = tmp_path / subset
        for sub in ("composite_images", "masks", "real_images"):
            (d / sub).mkdir(parents=True)
        names = {"train": [], "test": []}
        for i, split in enumerate(("train", "train", "test")):
            real = textured_image(24, 32, seed=i)
            Image.fromarray(real).save(d / "real_images" / f"{prefix}{i:04d}.jpg")
            Image.fromarray((ellipse_mask(24, 32) * 255).astype(np.uint8)).save(d / "masks" / f"{prefix}{i:04d}_1.png")
            Image.fromarray(real // 2).save(d / "composite_images" / f"{prefix}{i:04d}_1_{i + 1}.jpg")
            names[split].append(f"{prefix}{i:04d}_1_{i + 1}.jpg")
        for split, lines in names.items():
            (d / f"{subset}_{split}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def scene_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo whose colour statistics are the same everywhere (warm texture), so a pasted part of it
    with a colour cast has one right answer: the scene's colours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    texture = 0.12 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 0.05, (h, w))
    base = np.array([0.62, 0.48, 0.36], np.float32)
    return np.clip((base + texture[..., None] * np.array([1.0, 0.9, 0.8])) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def engine_address(tmp_path_factory) -> str:
    """A live engine server (ONNX Runtime, the shipped model) in this process: its socket path."""
    import threading

    from engine.gimp.server import BackendPool, make_server

    sock = tmp_path_factory.mktemp("srv") / "engine.sock"
    srv = make_server(BackendPool("onnxruntime"), str(sock))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield str(sock)
    srv.shutdown()
    srv.server_close()



class BytesStream:
    """recv_into over bytes, so protocol.receive reads a message held in memory like a socket."""

    def __init__(self, data: bytes):
        import io

        self.f = io.BytesIO(data)

    def recv_into(self, view, n):
        return self.f.readinto(view[:n]) or 0


@pytest.fixture
def openblas():
    """(get, put) of the thread count of numpy's OpenBLAS, set to 2 for the test and put back after; the test
    is skipped where numpy is not built on OpenBLAS."""
    from engine.runtime.blas import OPENBLAS_CALLS, openblas_libraries

    calls = [(getattr(lib, get), getattr(lib, put)) for lib in openblas_libraries()
             for get, put in OPENBLAS_CALLS if hasattr(lib, get)]
    if not calls:
        pytest.skip("numpy here is not built on OpenBLAS")
    get, put = calls[0]
    before = get()
    put(2)
    yield get, put
    put(before)
