"""`harmonize gpu-check`: the kernels' PTX launched through the plugin's own launch code on a real GPU,
compared with the PyTorch reference over sizes and masks, and timed against PyTorch's attention.

Needs an NVIDIA GPU with torch (CUDA), triton and cuda-python; no TensorRT. torch only allocates the
tensors and runs the reference: the kernels go through engine.tensorrt.launch.PtxKernels, exactly as
the plugin's enqueue launches them.
"""
from __future__ import annotations

import functools
import time

from ..errors import HarmonizeError
from ..network.op import attention_modulation
from . import device as cuda_device
from .launch import PtxKernels

CASES = [(1, 64, 8, 16, 16), (2, 64, 8, 32, 32), (1, 256, 32, 32, 32), (4, 64, 8, 64, 64), (1, 256, 32, 64, 64)]
MASKS = ("empty", "full", "thin", "random")


def _timed(fn, sync, repeat: int = 50) -> float:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - start) / repeat


class _Case:
    """One comparison's tensors on the GPU (inputs, output, workspace) and the kernels' launch on them."""

    def __init__(self, kernels: PtxKernels, shape: tuple[int, int, int, int, int], kind: str, dtype, gen):
        import torch

        b, c, cq, h, w = shape
        self.kernels, self.dims = kernels, (b, c, cq, h * w)

        def t(*s):
            return torch.randn(*s, device="cuda", generator=gen)

        m = torch.zeros(b, 1, h, w, device="cuda")
        if kind == "full":
            m[:] = 1
        elif kind == "thin":
            m[..., w // 2] = 1
        elif kind == "random":
            m = (torch.rand(b, 1, h, w, device="cuda", generator=gen) > 0.6).float()
        gamma = torch.tensor([0.7], device="cuda")
        inputs = (t(b, c, h, w), m, t(b, cq, h, w), t(b, cq, h, w), t(b, c, h, w), gamma)
        self.x = [a.to(dtype).contiguous() for a in inputs]
        self.out = torch.empty_like(self.x[0])
        self.hba = torch.empty(b, c, h * w, device="cuda", dtype=torch.float32)
        names = ("h", "mask", "q", "k", "v", "gamma")
        self.ptrs = {**{n: a.data_ptr() for n, a in zip(names, self.x, strict=True)},
                     "out": self.out.data_ptr(), "hba": self.hba.data_ptr()}
        self.stream = torch.cuda.current_stream().cuda_stream

    def launch(self) -> None:
        b, c, cq, n = self.dims
        self.kernels.launch(self.ptrs, b, c, cq, n, self.stream)


def _timings(case: _Case, repeat: int) -> str:
    """The kernels against the PyTorch reference and against PyTorch's fused attention alone."""
    import torch
    import torch.nn.functional as F

    x, sync = case.x, torch.cuda.synchronize
    ours = _timed(case.launch, sync, repeat)
    eager = _timed(functools.partial(attention_modulation, *x), sync, repeat)
    sdpa_in = [a.flatten(2).transpose(1, 2)[:, None] for a in (x[2], x[3], x[4])]
    sdpa = _timed(functools.partial(F.scaled_dot_product_attention, *sdpa_in, scale=1.0), sync, repeat)
    return (f" | kernel {ours * 1e6:.0f} us, torch reference {eager * 1e6:.0f} us ({eager / ours:.2f}x),"
            f" torch SDPA alone {sdpa * 1e6:.0f} us")


def run(repeat: int = 50) -> tuple[list[str], bool]:
    """Lines of the report and whether every comparison passed."""
    import torch

    from .kernels import compile_ptx

    if not torch.cuda.is_available():
        raise HarmonizeError("gpu-check needs an NVIDIA GPU with a CUDA build of torch")
    torch.cuda.init()
    cc = cuda_device.compute_capability()
    cuda_device.retain_primary_context()  # torch's context: the kernels load into it
    lines, ok = [f"GPU {torch.cuda.get_device_name()} sm_{cc}, torch {torch.__version__}"], True
    gen = torch.Generator(device="cuda").manual_seed(0)
    for b, c, cq, h, w in CASES:
        for dtype, tol in ((torch.float16, 1e-2), (torch.float32, 1e-4)):
            name = "fp16" if dtype == torch.float16 else "fp32"
            kernels = PtxKernels(compile_ptx(name, cq, c, cc))
            for kind in MASKS:
                case = _Case(kernels, (b, c, cq, h, w), kind, dtype, gen)
                case.launch()
                torch.cuda.synchronize()
                # The reference sees the same rounded inputs; a thin mask makes outputs of 20 or more,
                # where an fp16 step is 0.016, so the tolerance scales with the value.
                ref = attention_modulation(*(a.float() for a in case.x))
                diff = (case.out.float() - ref).abs()
                err, worst = diff.max().item(), (diff / (1 + ref.abs())).max().item()
                passed = worst <= tol
                ok &= passed
                line = (f"{'PASSED' if passed else 'FAILED'} | {b}x{c}x{h}x{w} cq {cq} {name} {kind:<6} | "
                        f"max abs {err:.2e}, max abs / (1 + |ref|) {worst:.2e} (tol {tol:.0e})")
                if kind == "random":
                    line += _timings(case, repeat)
                lines.append(line)
    return lines, ok
