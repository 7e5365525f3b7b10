"""`harmonize gpu-check`: the kernels' PTX launched through the plugin's own launch code on a real GPU,
compared with the PyTorch reference over sizes and masks, and timed against PyTorch's attention.

Needs an NVIDIA GPU with torch (CUDA), triton and cuda-python; no TensorRT. torch only allocates the
tensors and runs the reference: the kernels go through engine.tensorrt.plugin.PtxKernels, exactly as
the plugin's enqueue launches them.
"""
from __future__ import annotations

import time

from ..errors import HarmonizeError
from ..network.op import attention_modulation
from . import device as cuda_device
from .plugin import PtxKernels

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


def run(repeat: int = 50) -> tuple[list[str], bool]:
    """Lines of the report and whether every comparison passed."""
    import torch
    import torch.nn.functional as F

    from .kernels import compile_ptx

    if not torch.cuda.is_available():
        raise HarmonizeError("gpu-check needs an NVIDIA GPU with a CUDA build of torch")
    torch.cuda.init()
    cc = cuda_device.compute_capability()
    cuda_device.retain_primary_context()  # torch's context: the kernels load into it
    lines, ok = [f"GPU {torch.cuda.get_device_name()} sm_{cc}, torch {torch.__version__}"], True
    gen = torch.Generator(device="cuda").manual_seed(0)
    for b, c, cq, h, w in CASES:
        n = h * w
        for dtype, tol in ((torch.float16, 1e-2), (torch.float32, 1e-4)):
            name = "fp16" if dtype == torch.float16 else "fp32"
            kernels = PtxKernels(compile_ptx(name, cq, c, cc))
            for kind in MASKS:
                t = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
                m = torch.zeros(b, 1, h, w, device="cuda")
                if kind == "full":
                    m[:] = 1
                elif kind == "thin":
                    m[..., w // 2] = 1
                elif kind == "random":
                    m = (torch.rand(b, 1, h, w, device="cuda", generator=gen) > 0.6).float()
                args = [t(b, c, h, w), m, t(b, cq, h, w), t(b, cq, h, w), t(b, c, h, w), torch.tensor([0.7], device="cuda")]
                x = [a.to(dtype).contiguous() for a in args]
                out = torch.empty_like(x[0])
                hba = torch.empty(b, c, n, device="cuda", dtype=torch.float32)
                ptrs = dict(h=x[0].data_ptr(), mask=x[1].data_ptr(), q=x[2].data_ptr(), k=x[3].data_ptr(),
                            v=x[4].data_ptr(), gamma=x[5].data_ptr(), out=out.data_ptr(), hba=hba.data_ptr())
                stream = torch.cuda.current_stream().cuda_stream
                launch = lambda: kernels.launch(ptrs, b, c, cq, n, stream)  # noqa: E731
                launch()
                torch.cuda.synchronize()
                # The reference sees the same rounded inputs; a thin mask makes outputs of 20 or more,
                # where an fp16 step is 0.016, so the tolerance scales with the value.
                ref = attention_modulation(*(a.float() for a in x))
                diff = (out.float() - ref).abs()
                err, worst = diff.max().item(), (diff / (1 + ref.abs())).max().item()
                passed = worst <= tol
                ok &= passed
                line = (f"{'PASSED' if passed else 'FAILED'} | {b}x{c}x{h}x{w} cq {cq} {name} {kind:<6} | "
                        f"max abs {err:.2e}, max abs / (1 + |ref|) {worst:.2e} (tol {tol:.0e})")
                if kind == "random":
                    ours = _timed(launch, torch.cuda.synchronize, repeat)
                    eager = _timed(lambda: attention_modulation(*x), torch.cuda.synchronize, repeat)
                    sdpa_in = (x[2].flatten(2).transpose(1, 2)[:, None], x[3].flatten(2).transpose(1, 2)[:, None],
                               x[4].flatten(2).transpose(1, 2)[:, None])
                    sdpa = _timed(lambda: F.scaled_dot_product_attention(*sdpa_in, scale=1.0), torch.cuda.synchronize, repeat)
                    line += (f" | kernel {ours * 1e6:.0f} us, torch reference {eager * 1e6:.0f} us ({eager / ours:.2f}x),"
                             f" torch SDPA alone {sdpa * 1e6:.0f} us")
                lines.append(line)
    return lines, ok
