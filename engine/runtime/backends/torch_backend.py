"""PyTorch backend: the reference every other backend is validated against (needs the 'train' extra). On a
GPU it also applies the colour map there to a picture given as an array: at 12 MP the full-resolution step is
most of a picture's time."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError, require
from ..fullres import Prepared, blend, foreground_box, peak
from .base import Backend


def apply_affine_torch(rgb: np.ndarray, mask: np.ndarray, params: np.ndarray, device: str) -> np.ndarray:
    """fullres.apply_affine computed by torch on `device`: the same arithmetic in float32 over the object's box
    (outputs within one level of it, the background bit-identical)."""
    import torch

    out = rgb.copy()
    box = foreground_box(mask)
    if box is None:
        return out
    a, top = torch.as_tensor(np.asarray(params, np.float32).reshape(3, 4), device=device), peak(rgb)
    x = torch.from_numpy(np.ascontiguousarray(rgb[box])).to(device).float()  # (h, w, 3): the box only travels
    m = torch.from_numpy(np.ascontiguousarray(mask[box])).to(device)
    w = m.float() / 255.0 if mask.dtype == np.uint8 else m.float().clamp(0.0, 1.0)
    y = (x @ a[:, :3].T + a[:, 3] * top).clamp(0.0, float(top))
    mixed = ((y - x) * w[..., None] + x + 0.5).clamp(0.0, float(top))  # x + 0.5 truncates back to x where w is 0
    out[box] = mixed.to(torch.int32).cpu().numpy().astype(rgb.dtype)
    return out


class TorchBackend(Backend):
    """A checkpoint written by `harmonize train`, run eagerly in float32."""

    name = "torch"

    def __init__(self, model: str | Path, device: str = "cpu"):
        self.torch = require("torch", "train")
        from ...network.model import load_checkpoint

        if not Path(model).exists():
            raise InputError(f"{model}: no such checkpoint")
        self.torch_device = device
        self.device = "gpu" if device.startswith("cuda") else "cpu"
        self.model = load_checkpoint(model).to(device)
        self.size, self.head, self.lab_mix = self.model.size, self.model.head, self.model.lab_mix

    def infer_impl(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        cudnn = self.torch.backends.cudnn
        kept = cudnn.allow_tf32
        # cuDNN convolves float32 in TF32 by default on a GPU; its ten-bit mantissa could move the colour map
        # past the one level the reference promises, for no time worth having at the network's 256 px
        cudnn.allow_tf32 = False
        try:
            with self.torch.inference_mode():
                image, mask = (self.torch.from_numpy(a).to(self.torch_device) for a in (image, mask))
                return self.model(image, mask).float().cpu().numpy()
        finally:
            cudnn.allow_tf32 = kept

    def finish(self, p: Prepared, answer: np.ndarray, strength: float = 1.0) -> np.ndarray:
        # The batch's 8-bit pictures stay in Pillow's memory, where Pillow's colour map (28 ms of one core at
        # 12 MP) costs less than making the array the GPU would take (45 ms) before any copy to it.
        if self.device != "gpu" or self.head != "affine" or not isinstance(p.rgb, np.ndarray):
            return super().finish(p, answer, strength)
        with self.torch.inference_mode():
            return blend(p.rgb, apply_affine_torch(p.rgb, p.mask, answer, self.torch_device), p.mask, strength)
