"""The backend contract: load a model once, `infer` at the working size, `harmonize` at full size."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..fullres import apply_affine, apply_residual, blend, lab_transfer_map, to_network
from ..imageio import check_mask


class Backend:
    """A loaded model on one runtime. Subclasses set `size` and `head` (and `lab_mix` where the model
    has one) and implement `infer`."""

    name = "base"
    size: int
    head: str
    lab_mix: float = 0.0  # weight of the Lab statistics transfer's map in the affine head's answer

    def infer(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Network outputs for float32 inputs (B, 3, S, S) in [0, 1] and (B, 1, S, S) in {0, 1}."""
        raise NotImplementedError

    def harmonize(self, rgb: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Harmonize uint8 RGB (H, W, 3) under a [0, 1] mask (H, W); same size out, background untouched."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"image must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        if mask.shape != rgb.shape[:2]:
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {rgb.shape[1]}x{rgb.shape[0]}")
        mask = np.clip(mask.astype(np.float32, copy=False), 0.0, 1.0)
        check_mask(mask)
        image, m = to_network(rgb, mask, self.size)
        out = self.infer(image, m)[0]
        if self.head == "affine":
            if self.lab_mix:  # the model is an ensemble: its map averaged with the Lab transfer's
                out = (1.0 - self.lab_mix) * out + self.lab_mix * lab_transfer_map(rgb, mask)
            result = apply_affine(rgb, mask, out)
        else:
            result = apply_residual(rgb, mask, image[0], out)
        return blend(rgb, result, mask, strength)

    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, head={self.head!r})"
