"""FMM: image harmonization with attention-based deep feature modulation (Hao, Iizuka, Fukui, BMVC 2020).

One network class, configured by data. "paper" is the authors' released network (about 11.6 M
parameters, image head); smaller configurations share the code. The "affine" head pools the decoder's
features over foreground and background and predicts one 3x4 colour map for the foreground, which is
applied at full resolution (see engine/fullres.py): a colour transform keeps all foreground texture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .op import attention_modulation

# Subtracted from RGB in [0, 1] before the network, as the authors' code does.
INPUT_OFFSET = 0.4462414

# NOTE: widths are (c1, c2, c3, c4, bottleneck); decoder is the three decoder convs.
# NOTE: mask_pool "authors" shrinks the mask as the authors' code does (see downsample_mask).
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": dict(widths=(64, 128, 256, 512, 256), decoder=(128, 32, 16), head="image", size=256,
                  mask_pool="authors"),
    "paper-affine": dict(widths=(64, 128, 256, 512, 256), decoder=(128, 32, 16), head="affine", size=256,
                         prior=0.5),  # the paper's size with the shipped models' colour-map head
    "medium": dict(widths=(32, 64, 128, 256, 128), decoder=(128, 64, 32), head="affine", size=256, prior=0.5),
    "wide": dict(widths=(40, 80, 160, 320, 160), decoder=(160, 80, 40), head="affine", size=256, prior=0.5),
    "small": dict(widths=(16, 32, 64, 128, 64), decoder=(64, 32, 32), head="affine", size=128, prior=0.5),
    "tiny": dict(widths=(8, 8, 16, 16, 16), decoder=(16, 8, 8), head="affine", size=64, prior=0.0),
}


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


MASK_POOLS = ("average", "authors")


def downsample_mask(mask: torch.Tensor, size: tuple[int, int], pool: str = "average") -> torch.Tensor:
    """A {0,1} mask at a feature map's size: the rounded average of each factor x factor cell
    ("average"), or, as the authors' released code does, the rounded average of only the 2x2 pixels at
    each cell's top-left corner ("authors"; at a mask edge inside a cell the two differ)."""
    factor = mask.shape[-1] // size[1]
    return torch.round(F.avg_pool2d(mask, factor if pool == "average" else 2, factor))


class SelfAttention(nn.Module):
    """SAGAN self-attention over the whole map; starts as the identity (gamma = 0)."""

    def __init__(self, c: int):
        super().__init__()
        self.q = nn.Conv2d(c, c // 8, 1)
        self.k = nn.Conv2d(c, c // 8, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q = self.q(h).flatten(2).transpose(1, 2)
        attn = torch.softmax(torch.bmm(q, self.k(h).flatten(2)), dim=-1)
        out = torch.bmm(self.v(h).flatten(2), attn.transpose(1, 2)).reshape(b, c, hh, ww)
        return h + self.gamma * out


class AttentionModulationFn(torch.autograd.Function):
    """The op as one node for the TorchScript ONNX exporter; autograd runs the reference."""

    @staticmethod
    def forward(ctx, h, mask, q, k, v, gamma):  # type: ignore[override]
        return attention_modulation(h, mask, q, k, v, gamma)

    @staticmethod
    def symbolic(g, h, mask, q, k, v, gamma):  # pragma: no cover - called by torch.onnx only
        out = g.op("harmony::AttentionModulation", h, mask, q, k, v, gamma, plugin_namespace_s="harmony")
        return out.setType(h.type())


class FMMBlock(nn.Module):
    """Bottleneck: self-attention, then masked fg->bg attention with std-ratio modulation (the op)."""

    def __init__(self, c: int, mask_pool: str = "average"):
        super().__init__()
        self.mask_pool = mask_pool
        self.self_attention = SelfAttention(c)
        self.q = nn.Conv2d(c, c // 8, 1)
        self.k = nn.Conv2d(c, c // 8, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.export_op = False  # set by the exporter: emit one harmony node instead of the reference

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.self_attention(h)
        m = downsample_mask(mask, h.shape[-2:], self.mask_pool)
        h_f, h_b = m * h, (1 - m) * h
        args = (h, m, self.q(h_f), self.k(h_b), self.v(h_b), self.gamma)
        if self.export_op:
            return AttentionModulationFn.apply(*args)
        return attention_modulation(*args)


class FMMNet(nn.Module):
    """Encoder (1/8) -> FMM bottleneck -> decoder with skips -> image or affine-colour head.

    Input: composite RGB in [0, 1] (B, 3, H, W) and mask (B, 1, H, W), H and W multiples of 8.
    Output: the harmonized image ("image" head) or (B, 12) row-major 3x4 colour maps ("affine" head).
    """

    def __init__(self, widths=(64, 128, 256, 512, 256), decoder=(128, 32, 16), head="image", size=256,
                 prior: float = 0.0, mask_pool: str = "average", lab_mix: float = 0.0):
        super().__init__()
        if head not in ("image", "affine"):
            raise ValueError(f"head must be 'image' or 'affine', not {head!r}")
        if mask_pool not in MASK_POOLS:
            raise ValueError(f"mask_pool must be one of {', '.join(MASK_POOLS)}, not {mask_pool!r}")
        if size % 8:
            raise ValueError(f"working size must be a multiple of 8, not {size}")
        c1, c2, c3, c4, cb = widths
        d1, d2, d3 = decoder
        for name, value in (("prior", prior), ("lab_mix", lab_mix)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {value}")
        if lab_mix and head != "affine":
            raise ValueError("lab_mix needs the affine head")
        # NOTE: lab_mix is applied by the backends, not here: the affine head's map is averaged with
        # fullres.lab_transfer_map at this weight (an ensemble the forward pass and ONNX do not see).
        self.head, self.size, self.prior, self.lab_mix = head, size, prior, lab_mix
        self.config = dict(widths=tuple(widths), decoder=tuple(decoder), head=head, size=size, prior=prior,
                           mask_pool=mask_pool, lab_mix=lab_mix)
        self.enc1 = nn.Sequential(conv_bn_relu(4, c1, 2), conv_bn_relu(c1, c2))  # skip1, 1/2
        self.enc2 = nn.Sequential(conv_bn_relu(c2, c3, 2), conv_bn_relu(c3, c3))  # skip2, 1/4
        self.enc3 = nn.Sequential(
            conv_bn_relu(c3, c4, 2), conv_bn_relu(c4, c4), conv_bn_relu(c4, c4), conv_bn_relu(c4, c4)
        )  # skip3, 1/8
        self.enc4 = conv_bn_relu(c4, cb)
        self.fmm = FMMBlock(cb, mask_pool)
        self.dec1 = conv_bn_relu(cb + c4, d1)
        self.dec2 = conv_bn_relu(d1 + c3, d2)
        self.dec3 = conv_bn_relu(d2 + c2, d3)
        if head == "image":
            self.out = nn.Conv2d(d3, 3, 3, 1, 1)
        else:
            # NOTE: the pooled features are joined by the colour statistics of foreground and
            # background (means, log stds), so the head sees what a colour transfer needs directly;
            # the last layer starts at zero, so an untrained head is the statistics prior's colour map
            # (the identity when prior = 0).
            self.out = nn.Sequential(nn.Linear(2 * d3 + 12, 64), nn.ReLU(inplace=True), nn.Linear(64, 12))
            nn.init.zeros_(self.out[2].weight)
            nn.init.zeros_(self.out[2].bias)

    @staticmethod
    def up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.cat([x, skip], 1), scale_factor=2.0, mode="bilinear", align_corners=True)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image - INPUT_OFFSET, mask], 1)
        s1 = self.enc1(x)
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        h = self.fmm(self.enc4(s3), mask)
        d = self.dec3(self.up(self.dec2(self.up(self.dec1(self.up(h, s3)), s2)), s1))
        if self.head == "image":
            return torch.clamp(image + torch.tanh(self.out(d)), 0, 1)
        # NOTE: pooled in float32: pixel counts overflow float16 above 256x256.
        d, m, rgb = d.float(), mask.float(), image.float()
        fg_mean, bg_mean = masked_mean(d, m), masked_mean(d, 1 - m)
        stats = [masked_mean(rgb, m), masked_mean(rgb, 1 - m), masked_log_std(rgb, m), masked_log_std(rgb, 1 - m)]
        features = torch.cat([fg_mean, bg_mean, *stats], 1).to(self.out[0].weight.dtype)
        return self.statistics_prior(*stats) + self.out(features).float()

    def statistics_prior(self, mean_f, mean_b, log_std_f, log_std_b) -> torch.Tensor:
        """(B, 12) colour maps moving the foreground's RGB mean and std `prior` of the way to the
        background's; prior = 0 is the identity. The head learns a correction on top of it."""
        ratio = torch.exp(torch.clamp(log_std_b - log_std_f, -1.0, 1.0))
        gain = 1.0 + self.prior * (ratio - 1.0)
        bias = mean_f + self.prior * (mean_b - mean_f) - gain * mean_f
        eye = torch.eye(3, device=gain.device)
        return torch.cat([eye * gain[:, :, None], bias[:, :, None]], 2).reshape(-1, 12)

    def harmonize(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The harmonized image at the input's resolution, whatever the head (used in training)."""
        out = self.forward(image, mask)
        if self.head == "image":
            return out
        return apply_affine_torch(image, mask, out)


def masked_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per sample and channel mean of x (B, C, H, W) weighted by w (B, 1, H, W): (B, C)."""
    return (x * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1.0)


def masked_log_std(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per sample and channel log standard deviation of x under weights w: (B, C)."""
    mean = masked_mean(x, w)[:, :, None, None]
    return 0.5 * torch.log(masked_mean((x - mean) ** 2, w) + 1e-4)


def apply_affine_torch(image: torch.Tensor, mask: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Blend the 3x4 colour map of each sample into its foreground: the torch twin of fullres.apply_affine."""
    if torch.is_autocast_enabled(image.device.type):  # bf16 training: the map in float32 too, as it ships
        with torch.autocast(image.device.type, enabled=False):
            return apply_affine_torch(image, mask, params.to(image.dtype))
    b = image.shape[0]
    mapped = torch.einsum("bij,bjhw->bihw", params.reshape(b, 3, 4)[:, :, :3], image)
    mapped = mapped + params.reshape(b, 3, 4)[:, :, 3, None, None]
    return image + mask * (mapped.clamp(0, 1) - image)


def create_model(name: str, **overrides: Any) -> FMMNet:
    """A new, untrained network of a named configuration."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    unknown = set(overrides) - set(CONFIGS[name])
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    return FMMNet(**{**CONFIGS[name], **overrides})


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> FMMNet:
    """A network from a checkpoint written by `harmonize train` (config and weights), in eval mode."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = FMMNet(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.eval()
