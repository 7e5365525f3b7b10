"""The Triton kernels under TRITON_INTERPRET=1 against the PyTorch reference; PTX entry points against
what the launcher passes."""
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
pytest.importorskip("triton", reason="triton (the 'triton' extra) is not installed")
from conftest import ROOT  # noqa: E402

from engine.network.op import attention_modulation  # noqa: E402
from engine.tensorrt.kernels import attention_modulation_triton  # noqa: E402


def masks(kind: str, b: int, h: int, w: int, gen) -> torch.Tensor:
    m = torch.zeros(b, 1, h, w)
    if kind == "full":
        m[:] = 1
    elif kind == "thin":
        m[:, :, :, w // 2] = 1  # a one-pixel-wide object
    elif kind == "random":
        m = (torch.rand(b, 1, h, w, generator=gen) > 0.6).float()
    return m


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 1e-2)], ids=["fp32", "fp16"])
@pytest.mark.parametrize("mask_kind", ["empty", "full", "thin", "random"])
@pytest.mark.parametrize("b, c, cq, h, w", [(2, 32, 4, 16, 16), (1, 24, 3, 7, 9)])
def test_kernel_matches_reference(dtype, tol, mask_kind, b, c, cq, h, w):
    gen = torch.Generator().manual_seed(b * 100 + h)
    t = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    args = [t(b, c, h, w), masks(mask_kind, b, h, w, gen), t(b, cq, h, w), t(b, cq, h, w), t(b, c, h, w),
            torch.tensor([0.7])]
    ref = attention_modulation(*args)
    got = attention_modulation_triton(*(a.to(dtype) for a in args[:5]), args[5].to(dtype))
    assert got.dtype == dtype and got.shape == ref.shape
    err = (got.float() - ref).abs().max().item()
    assert err < tol, f"{dtype}, mask {mask_kind}, {b}x{c}x{h}x{w}: max abs diff {err:.2e} > {tol}"


@pytest.mark.slow
def test_kernel_at_64x64_feature_maps():
    gen = torch.Generator().manual_seed(7)
    h = w = 64
    args = [torch.randn(1, 16, h, w, generator=gen), masks("random", 1, h, w, gen),
            torch.randn(1, 2, h, w, generator=gen), torch.randn(1, 2, h, w, generator=gen),
            torch.randn(1, 16, h, w, generator=gen), torch.tensor([0.5])]
    ref = attention_modulation(*args)
    got = attention_modulation_triton(*(a.half() for a in args))
    assert (got.float() - ref).abs().max().item() < 1e-2


PTX_SCRIPT = """
import json, sys
from engine.tensorrt.kernels import compile_ptx
from engine.tensorrt.launch import check_signature
out = {}
for cc in (75, 80, 86, 89, 90):
    for dtype in ("fp16", "fp32"):
        for kind, k in compile_ptx(dtype, 8, 64, cc).items():
            try:
                check_signature(kind, k)  # what PtxKernels checks before it loads a kernel
                why = None
            except RuntimeError as exc:
                why = str(exc)
            out[f"{cc}/{dtype}/{kind}"] = dict(why=why, target=k["ptx"].split(".target")[1].split()[0])
print(json.dumps(out))
"""


def test_ptx_for_every_architecture_takes_exactly_the_launch_arguments():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", PTX_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.splitlines()[-1])
    assert len(result) == 5 * 2 * 2
    for key, k in result.items():
        assert k["target"].startswith(f"sm_{key.split('/')[0]}"), key  # sm_90a on Hopper
        assert k["why"] is None, f"{key}: {k['why']}"


def test_a_kernel_taking_other_arguments_than_the_launcher_passes_is_refused():
    from engine.tensorrt.launch import check_signature

    entry = ".visible .entry modulation_kernel(\n{}\n)".format(",\n".join(
        f".param .{t} modulation_kernel_param_{i}" for i, t in enumerate(["u64"] * 5 + ["u32", "u32", "f32"]
                                                                     + ["u64", "u64"])))
    check_signature("modulation_kernel", dict(ptx=entry))  # the declared arguments and two null scratch pointers
    with pytest.raises(RuntimeError, match="takes .* the launcher passes"):
        check_signature("modulation_kernel", dict(ptx=entry.replace("\n)", ",\n.param .u64 extra\n)")))
    with pytest.raises(RuntimeError, match="scratch sizes \\[128, 0\\]"):
        check_signature("modulation_kernel", dict(ptx=entry, global_scratch=128))
