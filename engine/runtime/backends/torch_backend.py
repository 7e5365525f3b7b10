"""PyTorch backend: the reference every other backend is validated against (needs the 'train' extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError, require
from .base import Backend


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
        with self.torch.inference_mode():
            image, mask = (self.torch.from_numpy(a).to(self.torch_device) for a in (image, mask))
            return self.model(image, mask).float().cpu().numpy()
