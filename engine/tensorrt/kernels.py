"""The attention-modulation op as Triton kernels: the code the TensorRT plugin launches.

Two kernels. `attention_kernel` is flash attention without scaling: one program per (query block,
sample, channel block) streams over key blocks with an online softmax, so the N x N attention matrix
is never written; h_b^a (B, C, N) goes to a workspace. `modulation_kernel` then reduces the std of
h_b^a and of m*h per channel over all positions (two passes, FP32) and writes h + g * FMM.
FP16 or FP32 in and out; softmax, statistics and accumulation in FP32. Under TRITON_INTERPRET=1 they
run on the CPU with torch CPU tensors (the tests); `compile_ptx` makes PTX for a GPU architecture
without needing one.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said explicitly (it warns otherwise)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ..network import op  # noqa: E402
from .launch import ARGUMENTS, BLOCK_M, BLOCK_N, BLOCK_R, block_sizes, grids  # noqa: E402


@triton.jit
def attention_kernel(Q, K, V, HBA, N, CQ, C,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_C: tl.constexpr, IEEE: tl.constexpr):
    """HBA[b, c, i] = sum_j V[b, c, j] softmax_j(sum_d Q[b, d, i] K[b, d, j]); tensors contiguous (B, ., N)."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    pid_c = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    q = tl.load(Q + b * CQ * N + offs_d[None, :] * N + offs_m[:, None],
                mask=(offs_m[:, None] < N) & (offs_d[None, :] < CQ), other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_C), tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + b * CQ * N + offs_d[:, None] * N + offs_n[None, :],
                    mask=(offs_d[:, None] < CQ) & (offs_n[None, :] < N), other=0.0)
        if IEEE:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        s = tl.where(offs_n[None, :] < N, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * C * N + offs_c[None, :] * N + offs_n[:, None],
                    mask=(offs_n[:, None] < N) & (offs_c[None, :] < C), other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(HBA + b * C * N + offs_c[None, :] * N + offs_m[:, None], acc,
             mask=(offs_m[:, None] < N) & (offs_c[None, :] < C))


@triton.jit
def _stat_tiles(H, MASK, HBA, base, b, N, start, cmask, BLOCK_R: tl.constexpr):
    """One tile of h_b^a and of m*h in FP32, and which of its elements exist."""
    offs = start + tl.arange(0, BLOCK_R)
    ok = cmask[:, None] & (offs[None, :] < N)
    a = tl.load(HBA + base + offs[None, :], mask=ok, other=0.0).to(tl.float32)
    m = tl.load(MASK + b * N + offs, mask=offs < N, other=0.0).to(tl.float32)
    f = tl.load(H + base + offs[None, :], mask=ok, other=0.0).to(tl.float32) * m[None, :]
    return a, f, ok


@triton.jit
def modulation_kernel(H, MASK, HBA, GAMMA, OUT, N, C, EPS,
                      BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """OUT = H + g * (MASK*H) * std(HBA) / std(MASK*H), std per (b, c) over N: sqrt(unbiased var + eps)."""
    b = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    base = b * C * N + offs_c[:, None] * N
    sum_a = tl.zeros((BLOCK_C,), tl.float32)
    sum_f = tl.zeros((BLOCK_C,), tl.float32)
    for start in range(0, N, BLOCK_R):
        a, f, ok = _stat_tiles(H, MASK, HBA, base, b, N, start, cmask, BLOCK_R)
        sum_a += tl.sum(a, 1)
        sum_f += tl.sum(f, 1)
    mean_a = sum_a / N
    mean_f = sum_f / N
    ss_a = tl.zeros((BLOCK_C,), tl.float32)
    ss_f = tl.zeros((BLOCK_C,), tl.float32)
    for start in range(0, N, BLOCK_R):
        a, f, ok = _stat_tiles(H, MASK, HBA, base, b, N, start, cmask, BLOCK_R)
        da = tl.where(ok, a - mean_a[:, None], 0.0)
        df = tl.where(ok, f - mean_f[:, None], 0.0)
        ss_a += tl.sum(da * da, 1)
        ss_f += tl.sum(df * df, 1)
    ratio = tl.sqrt(ss_a / (N - 1) + EPS) / tl.sqrt(ss_f / (N - 1) + EPS)
    g = tl.load(GAMMA).to(tl.float32)
    for start in range(0, N, BLOCK_R):
        offs = start + tl.arange(0, BLOCK_R)
        ok = cmask[:, None] & (offs[None, :] < N)
        h = tl.load(H + base + offs[None, :], mask=ok, other=0.0)
        m = tl.load(MASK + b * N + offs, mask=offs < N, other=0.0).to(tl.float32)
        out = h.to(tl.float32) * (1.0 + g * m[None, :] * ratio[:, None])
        tl.store(OUT + base + offs[None, :], out.to(h.dtype), mask=ok)


def attention_modulation_triton(h, mask, q, k, v, gamma):
    """The op on torch tensors through the Triton kernels (CPU tensors under TRITON_INTERPRET=1)."""
    import torch

    b, c, hh, ww = h.shape
    n, cq = hh * ww, q.shape[1]
    h, mask, q, k, v = (t.contiguous() for t in (h, mask, q, k, v))
    gamma = gamma.to(h.dtype).contiguous()
    hba = torch.empty((b, c, n), dtype=torch.float32, device=h.device)  # the workspace
    out = torch.empty_like(h)
    blocks = block_sizes(cq, c)
    g1, g2 = grids(b, c, n, blocks["BLOCK_C"])
    attention_kernel[g1](q, k, v, hba, n, cq, c, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                         IEEE=h.dtype == torch.float32, **blocks)
    modulation_kernel[g2](h, mask, hba, gamma, out, n, c, op.EPS, BLOCK_R=BLOCK_R, BLOCK_C=blocks["BLOCK_C"])
    return out


def compile_ptx(dtype: str, cq: int, c: int, cc: int) -> dict[str, dict]:
    """PTX of both kernels for one dtype ("fp16" or "fp32"), layer widths and compute capability (86 for
    sm_86), without a GPU. Per kernel: name, ptx, num_warps, shared (bytes), scratch sizes."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    blocks = block_sizes(cq, c)
    constexprs = {
        "attention_kernel": dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, IEEE=dtype == "fp32", **blocks),
        "modulation_kernel": dict(BLOCK_R=BLOCK_R, BLOCK_C=blocks["BLOCK_C"]),
    }
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compile_ptx cannot run under TRITON_INTERPRET=1; run it in a process without it")
    out = {}
    for fn in (attention_kernel, modulation_kernel):
        name = fn.__name__
        types = [kind.format(t=dtype) for _, kind in ARGUMENTS[name]] + ["constexpr"] * len(constexprs[name])
        src = ASTSource(fn=fn, signature=dict(zip(fn.arg_names, types, strict=True)), constexprs=constexprs[name])
        k = triton.compile(src, target=GPUTarget("cuda", cc, 32))
        out[name] = dict(name=k.metadata.name, ptx=k.asm["ptx"], num_warps=k.metadata.num_warps,
                         shared=k.metadata.shared, global_scratch=getattr(k.metadata, "global_scratch_size", 0),
                         profile_scratch=getattr(k.metadata, "profile_scratch_size", 0), **blocks)
    return out
