"""Synthetic composites made a batch at a time on a torch device (`harmonize train --render device`).

The loader's workers only draw: each sample's view of the photo and every random choice, as a Plan
(synthetic.py), at about a sixth of the cost of making it. The pixels are then made here for the whole
batch with tensor operations: the EDITS, LIGHTING and colour TRANSFERS, masked statistics in place of the
object's pixel lists, sorting with the background pushed to the end in place of per-object histograms.
For the same seed they are synthetic.render's composites, up to float rounding (tests/test_batched.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..runtime.color import D65_WHITE, SRGB_TO_XYZ
from .synthetic import EDIT_NAMES, IDT_ITERATIONS, TRANSFERS, Plan, SyntheticComposites, light_gains

MAX_EDITS = 4  # strong composites draw 2 to 4 edits
_TRANSFER_NAMES = list(TRANSFERS)


def encode(plan: Plan) -> dict[str, np.ndarray]:
    """A Plan as fixed-size arrays (the reference and donor pixels excepted, padded by `collate`)."""
    def edits(drawn):  # indices into EDIT_NAMES (-1: none) and their parameters
        index, params = np.full(MAX_EDITS, -1, np.int64), np.zeros((MAX_EDITS, 3))
        for j, (name, p) in enumerate(drawn or ()):
            index[j], params[j, :len(p)] = EDIT_NAMES.index(name), p
        return index, params

    restyle, restyle_params = edits(plan.restyle)
    edit, edit_params = edits(plan.edits)
    transfer, donor, rotations = -1, np.zeros((0, 3), np.float32), np.zeros((IDT_ITERATIONS, 3, 3))
    if plan.transfer is not None:
        name, donor, params = plan.transfer
        transfer = _TRANSFER_NAMES.index(name)
        if params is not None:
            rotations = params
    return dict(photo=plan.photo, mask=plan.mask, reference=plan.reference, donor=donor,
                restyle=restyle, restyle_params=restyle_params, edit=edit, edit_params=edit_params,
                transfer=np.int64(transfer), rotations=rotations, mild_on=np.bool_(plan.mild is not None),
                mild=np.float32(plan.mild or 0.0), flip=np.bool_(plan.flip))


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Encoded plans as one batch: the pixel lists padded with zeros to the longest, with their lengths."""
    batch = {}
    for key in samples[0]:
        if key in ("reference", "donor"):
            n = [len(s[key]) for s in samples]
            padded = np.zeros((len(samples), max(max(n), 1), 3), np.float32)
            for i, s in enumerate(samples):
                padded[i, :n[i]] = s[key]
            batch[key], batch[key + "_n"] = torch.from_numpy(padded), torch.tensor(n)
        else:
            batch[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
    return batch


class PlanStream(Dataset):
    """A SyntheticComposites stream's plans, encoded: what the loader's workers make for `render_batch`."""

    def __init__(self, synthetic: SyntheticComposites):
        self.synthetic = synthetic

    def __len__(self) -> int:
        return len(self.synthetic)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return encode(self.synthetic.draw(index))


# --- statistics over a mask: x (B, 3, P), w (B, 1, P) weights, 1 on the pixels that count ---

def _mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x * w).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)


def _std(x: torch.Tensor, w: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return _mean((x - mean) ** 2, w).sqrt()  # the population std, as numpy's


def _valid(n: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 1, length) float weights: 1 on the first n[b] entries of a padded pixel list."""
    return (torch.arange(length, device=n.device)[None] < n[:, None]).to(torch.float32)[:, None]


# --- EDITS and LIGHTING on a batch: x (B, 3, P), w (B, 1, P), p (B, 3) parameters, the reference's mean and std ---

_LUMA = (0.299, 0.587, 0.114)
_AXIS = np.ones(3, np.float32) / np.sqrt(3)
_KX = np.array([[0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0]], np.float32)


def _transfer(x, w, p, rmu, rsd):
    mu = _mean(x, w)
    sd = _std(x, w, mu) + 1e-3
    return x + p[:, :1, None] * (((x - mu) / sd * rsd + rmu) - x)


def _hue(x, w, p, rmu, rsd):
    t = torch.deg2rad(p[:, 0].double())[:, None, None]
    kx = torch.from_numpy(_KX).to(x.device, torch.float64)
    rotation = torch.eye(3, dtype=torch.float64, device=x.device) + torch.sin(t) * kx + (1 - torch.cos(t)) * kx @ kx
    return rotation.float() @ x


def _saturation(x, w, p, rmu, rsd):
    y = (x * torch.tensor(_LUMA, device=x.device)[:, None]).sum(1, keepdim=True)
    return y + p[:, :1, None] * (x - y)


def _contrast(x, w, p, rmu, rsd):
    mean = _mean(x, w)
    return mean + p[:, :1, None] * (x - mean)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:  # as color.srgb_to_linear
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:  # as color.linear_to_srgb
    return torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def _time_of_day(x, w, p, rmu, rsd):
    gains = torch.from_numpy(light_gains(p[:, 0].double().cpu().numpy()).reshape(-1, 3)).to(x.device)
    light = gains * torch.exp2(p[:, 1:2].double())  # (B, 3), from the few kelvins on the host
    lin = _srgb_to_linear(x.clamp(0, 1).double()) * light[:, :, None]
    return _linear_to_srgb(lin.clamp(0, 1)).float()


TORCH_EDITS = {
    "transfer": _transfer,
    "white balance": lambda x, w, p, rmu, rsd: x * p[:, :, None],
    "exposure": lambda x, w, p, rmu, rsd: x * p[:, :1, None],
    "gamma": lambda x, w, p, rmu, rsd: x.clamp(0, 1) ** p[:, :1, None],
    "saturation": _saturation,
    "hue": _hue,
    "contrast": _contrast,
    "time of day": _time_of_day,
}


def apply_edits(x: torch.Tensor, w: torch.Tensor, index: torch.Tensor, params: torch.Tensor,
                rmu: torch.Tensor, rsd: torch.Tensor) -> torch.Tensor:
    """Each sample's drawn edits (`index` (B, MAX_EDITS) into EDIT_NAMES, -1 for none) applied in turn to
    x (B, 3, P), statistics taken over `w`, then clipped: synthetic.apply_edits for a batch."""
    x = x.clone()
    for j in range(index.shape[1]):
        for e, name in enumerate(EDIT_NAMES):
            chosen = index[:, j] == e
            if chosen.any():
                x[chosen] = TORCH_EDITS[name](x[chosen], w[chosen], params[chosen, j].float(), rmu[chosen],
                                              rsd[chosen])
    return x.clamp(0, 1)


# --- the colour TRANSFERS, on a batch: x (B, 3, P), m (B, 1, P) bool, donor (B, D, 3) padded to donor_n ---

def _rgb_to_lab(c: torch.Tensor) -> torch.Tensor:  # (..., 3) float64 in [0, 1], as color.rgb_to_lab
    xyz = _srgb_to_linear(c) @ torch.from_numpy(SRGB_TO_XYZ.T).to(c.device) / torch.from_numpy(D65_WHITE).to(c.device)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp(min=0) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:  # (..., 3) to [0, 1] on uint8 levels, as color.lab_to_rgb
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * torch.from_numpy(D65_WHITE).to(lab.device)
    lin = (xyz @ torch.from_numpy(np.linalg.inv(SRGB_TO_XYZ).T).to(lab.device)).clamp(0, 1)
    return torch.floor((_linear_to_srgb(lin) * 255 + 0.5).clamp(0, 255)).float() / 255


def _reinhard(x, m, donor, donor_n, rotations):
    lab, w = _rgb_to_lab(x.double().transpose(1, 2)).transpose(1, 2), m.double()
    lab_b, wb = _rgb_to_lab(donor.double()).transpose(1, 2), _valid(donor_n, donor.shape[1]).double()
    mf, mb = _mean(lab, w), _mean(lab_b, wb)
    sf, sb = _std(lab, w, mf) + 1e-6, _std(lab_b, wb, mb) + 1e-6
    # move_lab_statistics at strength 1, written as it computes it, so the rounding to 8 bits agrees
    moved = (lab - mf) / sf * (sf + 1.0 * (sb - sf)) + (mf + 1.0 * (mb - mf))
    return _lab_to_rgb(moved.transpose(1, 2)).transpose(1, 2)


def _match(values: torch.Tensor, valid: torch.Tensor, reference: torch.Tensor, reference_n: torch.Tensor):
    """Each valid value (B, P) replaced by the reference's (B, D; its first reference_n[b] valid) value at
    the same quantile, ties in order: synthetic._match_1d for a batch. Invalid values get finite junk."""
    b, p = values.shape
    order = torch.argsort(values.masked_fill(~valid, float("inf")), dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(p, device=values.device).expand(b, p))
    n = valid.sum(1, keepdim=True)
    q = rank.double() / (n - 1).clamp(min=1)
    last = (reference_n - 1).clamp(min=0)[:, None]
    sorted_ref = torch.sort(reference.masked_fill(_valid(reference_n, reference.shape[1])[:, 0] == 0,
                                                  float("inf")), dim=1).values
    pos = q * last
    lo = torch.minimum(pos.floor().long(), last)
    hi = torch.minimum(lo + 1, last)
    low, high = sorted_ref.gather(1, lo), sorted_ref.gather(1, hi)
    return low + (pos - lo).clamp(0, 1) * torch.where(hi > lo, high - low, torch.zeros_like(low))


def _histogram(x, m, donor, donor_n, rotations):
    valid = m[:, 0]
    channels = [_match(x[:, c].double(), valid, donor[..., c].double(), donor_n) for c in range(3)]
    return torch.stack(channels, 1).float()


def _idt(x, m, donor, donor_n, rotations):
    y, ref, valid = x.double().transpose(1, 2), donor.double(), m[:, 0]
    for i in range(rotations.shape[1]):
        rotation = rotations[:, i].double()
        py, pr = y @ rotation, ref @ rotation
        y = torch.stack([_match(py[..., k], valid, pr[..., k], donor_n) for k in range(3)], -1) \
            @ rotation.transpose(1, 2)
    return y.clamp(0, 1).float().transpose(1, 2)


TORCH_TRANSFERS = {"reinhard": _reinhard, "histogram": _histogram, "idt": _idt}


def _object_pixels(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's object pixels first, in row-major order (as numpy's x[m] lists them), cut to the
    largest object: (B, 3, N) pixels, (B, 1, N) which are the object's, and (B, 3, N) where they came from.
    The transfers sort these rather than whole pictures."""
    n = m[:, 0].sum(1)
    index = torch.argsort((~m[:, 0]).to(torch.uint8), dim=1, stable=True)[:, :int(n.max())]
    index = index[:, None].expand(-1, 3, -1)
    valid = torch.arange(index.shape[-1], device=x.device)[None] < n[:, None]
    return x.gather(2, index), valid[:, None], index


def render_batch(batch: dict[str, torch.Tensor], device: str | torch.device) -> tuple[torch.Tensor, ...]:
    """A collated batch of plans as (composite (B, 3, S, S), mask (B, 1, S, S), real (B, 3, S, S)) float32
    on `device`: synthetic.render for a whole batch."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    photo = batch["photo"].permute(0, 3, 1, 2).float() / 255
    b, _, s, _ = photo.shape
    x, m = photo.reshape(b, 3, s * s), batch["mask"].reshape(b, 1, s * s)
    reference = batch["reference"].transpose(1, 2)
    wr = _valid(batch["reference_n"], reference.shape[-1])
    rmu = _mean(reference, wr)
    rsd = _std(reference, wr, rmu) + 1e-3

    real = x.clone()
    restyled = batch["restyle"][:, 0] >= 0
    if restyled.any():
        real[restyled] = apply_edits(x[restyled], torch.ones_like(x[restyled, :1]), batch["restyle"][restyled],
                                     batch["restyle_params"][restyled], rmu[restyled], rsd[restyled])
    obj = x.clone()
    edited = batch["transfer"] < 0
    if edited.any():
        obj[edited] = apply_edits(x[edited], m[edited].float(), batch["edit"][edited], batch["edit_params"][edited],
                                  rmu[edited], rsd[edited])
    for t, name in enumerate(_TRANSFER_NAMES):
        chosen = batch["transfer"] == t
        if chosen.any():
            pixels, valid, index = _object_pixels(x[chosen], m[chosen])
            moved = TORCH_TRANSFERS[name](pixels, valid, batch["donor"][chosen], batch["donor_n"][chosen],
                                          batch["rotations"][chosen])
            obj[chosen] = x[chosen].scatter(2, index, moved)
    comp = torch.where(m, obj, real)
    mild = m & batch["mild_on"][:, None, None]
    comp = torch.where(mild, real + batch["mild"][:, None, None] * (comp - real), comp)

    comp, real, mask = comp.reshape(b, 3, s, s), real.reshape(b, 3, s, s), m.reshape(b, 1, s, s).float()
    flip = batch["flip"]
    comp[flip], real[flip], mask[flip] = comp[flip].flip(-1), real[flip].flip(-1), mask[flip].flip(-1)
    return comp, mask, real
