"""The backend contract: load a model once, `infer` at the working size, `harmonize` at full size.

As Polygraphy's runners: the public `infer` checks what goes in and comes out, a subclass's
`infer_impl` computes; `close` releases once, however often it is called."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ...errors import HarmonizeError, InputError
from ...imageio import check_mask
from ..fullres import Pixels, Prepared, apply_affine, apply_residual, blend, map_image, prepare


def check_network_inputs(image: np.ndarray, mask: np.ndarray) -> None:
    """Raise InputError unless image is float32 (B, 3, H, W) and mask float32 (B, 1, H, W)."""
    for what, a, channels in (("image", image, 3), ("mask", mask, 1)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4 or a.shape[1] != channels:
            got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise InputError(f"{what} must be float32 (B, {channels}, H, W), got {got}")
    if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise InputError(f"mask {mask.shape} does not match image {image.shape}")


class Backend:
    """A loaded model on one runtime. Subclasses set `size` and `head` (and `lab_mix` where the model
    has one) and implement `infer_impl` (and `close_impl` if they hold resources)."""

    name = "base"
    device = "cpu"  # where it computes: "cpu" or "gpu"
    size: int
    head: str
    lab_mix: float = 0.0  # weight of the Lab statistics transfer's map in the affine head's answer
    closed: bool = False

    def infer(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Network outputs, float32 (B, 12) for the affine head or (B, 3, H, W) for the image head, for
        float32 inputs (B, 3, H, W) in [0, 1] and (B, 1, H, W) in {0, 1}; both sides checked."""
        check_network_inputs(image, mask)
        if self.closed:
            raise HarmonizeError(f"the {self.name} backend is closed")
        out = self.infer_impl(image, mask)
        expected = (image.shape[0], 12) if self.head == "affine" else image.shape
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != expected:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise HarmonizeError(f"the {self.name} backend returned {got}, expected float32 {expected}")
        return out

    def infer_impl(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The runtime's computation behind `infer`, on checked inputs."""
        raise NotImplementedError

    def harmonize(self, rgb: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Harmonize uint8 or uint16 RGB (H, W, 3) under a mask (H, W): [0, 1] floats, or uint8 0..255 as
        read from a file; same size and type out, background untouched."""
        p = self.prepare(rgb, mask)
        return self.finish(p, self.answer(p), strength)

    def prepare(self, rgb: Pixels, mask: np.ndarray) -> Prepared:
        """Check a picture (an array, or an 8-bit RGB Pillow image as the batch decodes it) and its mask, and
        make what the network and the full-resolution step need."""
        if isinstance(rgb, Image.Image):
            if rgb.mode != "RGB":
                raise InputError(f"image must be an RGB picture, got a Pillow image of mode {rgb.mode}")
            if self.head != "affine":  # the image head's change is added to an array
                rgb = np.asarray(rgb)
        elif rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"image must be uint8 or uint16 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        h, w = (rgb.height, rgb.width) if isinstance(rgb, Image.Image) else rgb.shape[:2]
        if mask.shape != (h, w):
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}")
        if mask.dtype != np.uint8:
            mask = np.nan_to_num(np.clip(mask.astype(np.float32, copy=False), 0.0, 1.0), nan=0.0)  # NaN: no object
        check_mask(mask)
        return prepare(rgb, mask, self.size, bool(self.lab_mix) and self.head == "affine")

    def answer(self, p: Prepared) -> np.ndarray:
        """The network's answer for a prepared picture: the colour map (12,), averaged with the Lab
        transfer's for an ensemble, or the image head's low-resolution picture (3, S, S)."""
        answer = self.infer(p.image, p.small_mask)[0]
        if p.lab_map is not None:  # the model is an ensemble: its map averaged with the Lab transfer's
            answer = (1.0 - self.lab_mix) * answer + self.lab_mix * p.lab_map
        return answer

    def finish(self, p: Prepared, answer: np.ndarray, strength: float = 1.0) -> Pixels:
        """The answer applied at full resolution, blended at `strength`: a new picture, of the prepared one's kind."""
        if self.head != "affine":
            return blend(p.rgb, apply_residual(p.rgb, p.mask, p.image[0], answer), p.mask, strength)
        if isinstance(p.rgb, Image.Image):
            return map_image(p.rgb, p.mask, answer, strength)
        return blend(p.rgb, apply_affine(p.rgb, p.mask, answer), p.mask, strength)

    def close(self) -> None:
        """Release the runtime's resources; safe to call again."""
        if not self.closed:
            self.closed = True
            self.close_impl()

    def close_impl(self) -> None:
        """What `close` releases, called once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, head={self.head!r})"
