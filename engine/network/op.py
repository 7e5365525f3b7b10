"""The attention-modulation op: the one PyTorch reference for the `harmony` custom op.

Steps (c) to (e) of the FMM bottleneck (Hao, Iizuka, Fukui, BMVC 2020): foreground->background
attention, std-ratio feature modulation, gamma residual. The 1x1 projections q, k, v are ordinary
convolutions outside the op. The ONNX function body, the Triton kernel and the TensorRT plugin are
all tested against `attention_modulation` below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

OP_NAME = "AttentionModulation"
OP_DOMAIN = "harmony"
EPS = 1e-5


def channel_std(x: torch.Tensor) -> torch.Tensor:
    """Per sample and channel std over all positions: sqrt(unbiased var + 1e-5), shape (B, C, 1, 1)."""
    import torch

    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    return torch.sqrt(flat.var(dim=2, unbiased=True) + EPS).reshape(b, c, 1, 1)


def attention_modulation(
    h: torch.Tensor, mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    gamma: torch.Tensor,
) -> torch.Tensor:
    """h + gamma * FMM(m*h, v softmax(q^T k)^T), computed in float32 whatever the input dtype.

    Shapes: h, v (B, C, H, W); mask (B, 1, H, W) in {0, 1}; q, k (B, Cq, H, W); gamma (1,).
    """
    import torch  # here, so that the op's name and domain import without torch (TensorRT path)

    dtype = h.dtype
    h, mask, q, k, v, gamma = (t.float() for t in (h, mask, q, k, v, gamma))
    b, c, hh, ww = h.shape
    n = hh * ww
    # bf16 autocast (training) would cast the products back down: energies of tens keep two digits in bf16
    with torch.autocast(h.device.type, enabled=False):
        energy = torch.bmm(q.reshape(b, -1, n).transpose(1, 2), k.reshape(b, -1, n))  # (B, Nq, Nk)
        attn = torch.softmax(energy, dim=-1)
        h_ba = torch.bmm(v.reshape(b, c, n), attn.transpose(1, 2)).reshape(b, c, hh, ww)
    h_f = mask * h
    fmm = h_f * channel_std(h_ba) / channel_std(h_f)
    return (h + gamma.reshape(()) * fmm).to(dtype)
