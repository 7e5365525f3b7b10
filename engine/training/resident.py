"""Synthetic composites drawn and made on the training device, from pictures decoded once and kept there
(`harmonize train --render resident`): no loader workers, no per-sample Python in a step.

The permissive photos sit on the device as uint8 at the resolution SyntheticComposites works from (short
side 2 x size), with their object masks, each photo's reference pixels and each object's donor pixels. A
batch is drawn there, every sample's random choices at once with torch's generator: a photo and one of its
objects (a random blob, or another photo's outline stretched onto it, where it has none), a view (60 to 100 %
of the short side, or close around the object), the target's restyle, the object's edits, same-category
transfer or other hour's light, the mild share and the flip, with synthetic.py's ranges and shares. The
drawn batch is batched.render_batch's input, so the pixels are made by the code tested against
synthetic.render sample by sample (tests/test_resident.py checks whole batches the same way).

What differs from the loader's stream is only how a view is resampled (bilinear, 2 x 2 supersampled, in
place of Pillow's bicubic) and which random numbers are drawn: the recipes are the same.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .batched import _TRANSFER_NAMES, MAX_EDITS, render_batch
from .synthetic import (
    EDIT_NAMES,
    EDITS,
    IDT_ITERATIONS,
    RANGES,
    TRANSFERS,
    Plan,
    _resize_short,
    mask_categories,
    permissive_sources,
)

OBJECT_EDITS = len(EDITS)  # the first EDIT_NAMES are the EDITS draw_edits picks from; "time of day" follows
TIME_OF_DAY = EDIT_NAMES.index("time of day")
REFERENCE_STRIDE, DONOR_STRIDE = 97, 7  # as reference_pixels and _same_category_pixels sample them


@dataclass
class Recipe:
    """The shares and choices of a synthetic stream (SyntheticComposites' arguments, TrainConfig's options)."""

    strong: bool = False
    mild: float = 0.0
    restyle: float = 0.0
    closeup: float = 0.0
    same_category: float = 0.0
    transfers: tuple[str, ...] = ("reinhard",)
    time_of_day: float = 0.0

    def __post_init__(self):
        for name in ("mild", "restyle", "closeup", "same_category", "time_of_day"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {getattr(self, name)}")
        unknown = [t for t in self.transfers if t not in TRANSFERS]
        if unknown or not self.transfers:
            raise ValueError(f"transfers must name some of {', '.join(TRANSFERS)}, not {', '.join(unknown) or 'none'}")


def _padded(arrays: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(len, longest, width) zero-padded stack of (n_i, width) arrays, and the lengths."""
    n = np.array([len(a) for a in arrays], np.int64)
    out = np.zeros((len(arrays), max(int(n.max(initial=0)), 1), width), arrays[0].dtype if arrays else np.float32)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out, n


class ResidentPictures:
    """The permissive photos and their objects, decoded once, as tensors on `device`.

    photos (P, 3) uint8, every photo's pixels one after another (photo i from photo_start[i], photo_hw[i]);
    masks (Q,) uint8 likewise for each object (at its photo's size; mask_photo, mask_start); per photo its
    objects (first_object, n_objects) and reference pixels (references (N, R, 3) float, reference_n); per
    object its donor pixels (donors (M, D, 3) uint8, donor_n), its box in its photo (mask_box (M, 4): top,
    bottom, left, right) and the objects of its category in other photos (peers (M, K), peer_n)."""

    def __init__(self, data_root: str | Path, size: int, device: str | torch.device = "cpu", more: bool = False,
                 extra: bool = False):
        self.size, self.device = size, torch.device(device)
        categories = mask_categories(data_root)
        photos, hw, masks, boxes, mask_photo, first, count, refs, donors, cats = [], [], [], [], [], [], [], [], [], []
        for i, (photo_path, mask_paths) in enumerate(permissive_sources(data_root, more, extra)):
            img = np.asarray(_resize_short(Image.open(photo_path).convert("RGB"), 2 * size))
            photos.append(img.reshape(-1, 3))
            hw.append(img.shape[:2])
            refs.append(img.reshape(-1, 3)[::REFERENCE_STRIDE].astype(np.float32) / 255)
            first.append(len(masks))
            count.append(len(mask_paths))
            for m in mask_paths:
                mask = np.asarray(_resize_short(Image.open(m).convert("L"), 2 * size), np.uint8)
                if mask.shape != img.shape[:2]:
                    raise ValueError(f"{m}: {mask.shape[1]}x{mask.shape[0]}, its photo {photo_path} is "
                                     f"{img.shape[1]}x{img.shape[0]}")
                inside = mask > 127
                ys, xs = np.nonzero(inside)
                boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if len(ys) else (0, mask.shape[0], 0,
                                                                                                mask.shape[1]))
                masks.append(mask.reshape(-1))
                mask_photo.append(i)
                donors.append(img[inside][::DONOR_STRIDE])
                cats.append(categories.get(m))
        self.n_photos, self.n_objects = len(photos), len(masks)
        by_category: dict[str, list[int]] = {}
        for k, c in enumerate(cats):
            if c is not None:
                by_category.setdefault(c, []).append(k)
        peers = [np.array([j for j in by_category.get(c, ()) if mask_photo[j] != mask_photo[k]] if c else [],
                          np.int64).reshape(-1, 1) for k, c in enumerate(cats)]
        t = lambda a, dtype=None: torch.as_tensor(np.asarray(a), dtype=dtype).to(self.device)  # noqa: E731
        self.photo_hw = t(hw, torch.int64)
        self.photo_start = t(np.concatenate([[0], np.cumsum([len(p) for p in photos])[:-1]]), torch.int64)
        self.photos = t(np.concatenate(photos))
        self.first_object, self.n_objects_of = t(first, torch.int64), t(count, torch.int64)
        references, reference_n = _padded(refs, 3)
        self.references, self.reference_n = t(references), t(reference_n)
        if masks:
            self.masks = t(np.concatenate(masks))
            self.mask_start = t(np.concatenate([[0], np.cumsum([len(m) for m in masks])[:-1]]), torch.int64)
            self.mask_photo, self.mask_box = t(mask_photo, torch.int64), t(boxes, torch.int64)
            donor_pixels, donor_n = _padded(donors, 3)
            self.donors, self.donor_n = t(donor_pixels), t(donor_n)
            peer_table, peer_n = _padded(peers, 1)
            self.peers, self.peer_n = t(peer_table[..., 0]), t(peer_n)

    def nbytes(self) -> int:
        """What the pictures take on the device."""
        return sum(v.numel() * v.element_size() for v in vars(self).values() if isinstance(v, torch.Tensor))


def _uniform(g: torch.Generator, shape, low: float, high: float, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, device=device, dtype=torch.float64)


def _randint(g: torch.Generator, high: torch.Tensor) -> torch.Tensor:
    """A uniform integer in [0, high) for each entry of `high` (>= 1)."""
    return (torch.rand(high.shape, generator=g, device=high.device, dtype=torch.float64) * high).long().clamp(
        max=high - 1)


def draw_edit_batch(g: torch.Generator, b: int, strong: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """draw_edits for b samples at once: (b, MAX_EDITS) indices into EDIT_NAMES (-1: none) and (b, MAX_EDITS, 3)
    parameters: 1 to 3 distinct EDITS (2 to 4 with `strong`), each drawn from its RANGES."""
    r = {k: v[int(strong)] for k, v in RANGES.items()}
    low, high = (2, 4) if strong else (1, 3)
    n = low + _randint(g, torch.full((b,), high - low + 1, device=device))
    order = torch.argsort(torch.rand((b, OBJECT_EDITS), generator=g, device=device), dim=1)[:, :MAX_EDITS]
    index = torch.where(torch.arange(MAX_EDITS, device=device) < n[:, None], order, -1)
    shape = (b, MAX_EDITS)
    one = {  # each edit's first parameter, drawn for every slot; the chosen edit's is kept
        "transfer": _uniform(g, shape, *r["transfer"], device),
        "exposure": torch.exp2(_uniform(g, shape, *r["stops"], device)),
        "gamma": _uniform(g, shape, *r["gamma"], device), "saturation": _uniform(g, shape, *r["saturation"], device),
        "hue": _uniform(g, shape, *r["hue"], device), "contrast": _uniform(g, shape, *r["contrast"], device),
    }
    gains = _uniform(g, (*shape, 3), *r["gain"], device)
    params = torch.zeros((*shape, 3), dtype=torch.float64, device=device)
    for e, name in enumerate(EDIT_NAMES[:OBJECT_EDITS]):
        chosen = index == e
        value = gains if name == "white balance" else torch.nn.functional.pad(one[name][..., None], (0, 2))
        params = torch.where(chosen[..., None], value, params)
    return index, params


def _qr_rotations(g: torch.Generator, b: int, device) -> torch.Tensor:
    """(b, IDT_ITERATIONS, 3, 3) random orthonormal axes, as idt_rotations draws them: Q of a normal matrix's
    QR, by Gram-Schmidt on its columns (Q up to each column's sign, which a histogram match along an axis does
    not see). On a GPU torch.linalg.qr factors small matrices one library call each: thousands a batch."""
    a = torch.randn((b, IDT_ITERATIONS, 3, 3), generator=g, device=device, dtype=torch.float64)
    q = []
    for k in range(3):
        v = a[..., k]
        for u in q:
            v = v - (u * v).sum(-1, keepdim=True) * u
        q.append(v / v.norm(dim=-1, keepdim=True))
    return torch.stack(q, -1)


def _views(g: torch.Generator, pics: ResidentPictures, photo: torch.Tensor, box: torch.Tensor | None,
           closeup: torch.Tensor) -> torch.Tensor:
    """(b, 4) views (top, left, height, width) in photo pixels: 60 to 100 % of the short side, aspect 0.75 to
    1.33; or, where `closeup`, 1 to 1.6 times the object's box (b, 4: top, bottom, left, right) each way,
    placed at random where it holds the whole box (synthetic._view_around)."""
    dev = photo.device
    h, w = pics.photo_hw[photo, 0].double(), pics.photo_hw[photo, 1].double()
    b = len(photo)
    ch = (torch.minimum(h, w) * _uniform(g, b, 0.6, 1.0, dev)).floor()
    cw = (ch * _uniform(g, b, 0.75, 1.33, dev)).floor().clamp(min=8).minimum(w)
    ch = ch.minimum(h)
    y0 = (_uniform(g, b, 0, 1, dev) * (h - ch + 1)).floor()
    x0 = (_uniform(g, b, 0, 1, dev) * (w - cw + 1)).floor()
    if box is not None:
        by0, by1, bx0, bx1 = box.double().unbind(1)
        zh = ((by1 - by0) * _uniform(g, b, 1.0, 1.6, dev)).floor().clamp(min=8).minimum(h)
        zw = ((bx1 - bx0) * _uniform(g, b, 1.0, 1.6, dev)).floor().clamp(min=8).minimum(w)
        ylo, yhi = (by1 - zh).clamp(min=0), torch.minimum(by0, h - zh)
        xlo, xhi = (bx1 - zw).clamp(min=0), torch.minimum(bx0, w - zw)
        zy = ylo + (_uniform(g, b, 0, 1, dev) * (yhi - ylo + 1).clamp(min=1)).floor()
        zx = xlo + (_uniform(g, b, 0, 1, dev) * (xhi - xlo + 1).clamp(min=1)).floor()
        ch, cw = torch.where(closeup, zh, ch), torch.where(closeup, zw, cw)
        y0, x0 = torch.where(closeup, zy, y0), torch.where(closeup, zx, x0)
    return torch.stack([y0, x0, ch, cw], 1)


def _grid(view: torch.Tensor, size: int, scale_y: torch.Tensor, scale_x: torch.Tensor):
    """Source coordinates of each output row (b, 2, size) and column (b, 2, size) of a view, at two sub-pixel
    offsets (a 2 x 2 supersampling), scaled from the photo's pixels into another picture's (scale_*: (b,))."""
    off = torch.tensor([0.25, 0.75], dtype=torch.float64, device=view.device)
    steps = torch.arange(size, dtype=torch.float64, device=view.device)[None, None] + off[None, :, None]
    ys = (view[:, 0, None, None] + steps * (view[:, 2, None, None] / size)) * scale_y[:, None, None] - 0.5
    xs = (view[:, 1, None, None] + steps * (view[:, 3, None, None] / size)) * scale_x[:, None, None] - 0.5
    return ys, xs


def _bilinear(flat: torch.Tensor, start: torch.Tensor, hw: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor):
    """Pictures stored one after another in `flat` (pixels[, C]) sampled at rows ys (b, 2, S) and columns xs
    (b, 2, S), bilinearly, the 2 x 2 sub-samples averaged: (b, S, S[, C]) float32."""
    h, w = hw[:, 0, None, None], hw[:, 1, None, None]
    ys, xs = ys.clamp(min=0).minimum(h - 1), xs.clamp(min=0).minimum(w - 1)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).minimum(h - 1), (x0 + 1).minimum(w - 1)
    wy, wx = (ys - y0).float(), (xs - x0).float()
    rows = [((start[:, None, None] + y0 * w), 1 - wy), ((start[:, None, None] + y1 * w), wy)]  # (b, 2, S)
    cols = [(x0, 1 - wx), (x1, wx)]
    out = 0
    for i in range(2):  # the sub-samples one at a time, to bound the gathers' memory
        for j in range(2):
            for row, fy in rows:
                for col, fx in cols:
                    index = row[:, i, :, None] + col[:, j, None, :]  # (b, S, S)
                    weight = fy[:, i, :, None] * fx[:, j, None, :]
                    out = out + flat[index].float() * (weight[..., None] if flat.dim() == 2 else weight)
    return out / 4


def _blob_masks(g: torch.Generator, hw: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """synthetic.random_blob_mask's ellipses (1 to 4 around a centre 25 to 75 % across, radii 10 to 35 %), drawn
    in photo pixels and evaluated where the view samples the photo: (b, S, S) in [0, 1]."""
    b, dev = len(hw), hw.device
    h, w = hw[:, 0].double(), hw[:, 1].double()
    cy, cx = _uniform(g, b, 0.25, 0.75, dev) * h, _uniform(g, b, 0.25, 0.75, dev) * w
    n = 1 + _randint(g, torch.full((b,), 4, device=dev))
    ellipses = []
    for k in range(4):
        ry, rx = _uniform(g, b, 0.1, 0.35, dev) * h, _uniform(g, b, 0.1, 0.35, dev) * w
        oy = cy + torch.randn(b, generator=g, device=dev, dtype=torch.float64) * 0.1 * h
        ox = cx + torch.randn(b, generator=g, device=dev, dtype=torch.float64) * 0.1 * w
        dy = (((ys + 0.5 - oy[:, None, None]) / ry[:, None, None]) ** 2).float()  # (b, 2, S)
        dx = (((xs + 0.5 - ox[:, None, None]) / rx[:, None, None]) ** 2).float()
        ellipses.append((dy, dx, k < n))
    out = 0
    for i in range(2):
        for j in range(2):
            inside = 0
            for dy, dx, drawn in ellipses:
                inside = inside | ((dy[:, i, :, None] + dx[:, j, None, :] <= 1) & drawn[:, None, None])
            out = out + inside.float()
    return out / 4


# NOTE: making a batch costs about 4,200 small tensor operations whatever its size (1,364 to draw, 2,846 to
# render, counted for 128 on the CPU), some 440 of them waiting for the device (boolean-mask indexing most);
# on a GPU each costs the host microseconds while the device idles, so composites are made for many batches
# at once there. A make of 512 peaked at 3.5 GB on the CPU, so one of 2,048 near 14 GB; a GPU with less
# memory halves it (ResidentStream.__next__)
MADE_AT_ONCE_ON_GPU = 2048


def batches_made_at_once(device: str | torch.device, batch_size: int) -> int:
    """How many batches a ResidentStream makes in one go: about MADE_AT_ONCE_ON_GPU samples on a GPU, one
    batch on the CPU (where the operations' own work is the cost, and memory is short)."""
    return max(1, MADE_AT_ONCE_ON_GPU // batch_size) if torch.device(device).type == "cuda" else 1


class ResidentStream:
    """Batches of synthetic composites drawn and made on the pictures' device (see the module's docstring):
    `next()` gives (composite, mask, real) float32 (b, 3|1|3, size, size), made `batches_at_once` batches
    at a time, and `draw()` the plans (batched.encode's fields, collated) that render_batch makes them from."""

    def __init__(self, pictures: ResidentPictures, recipe: Recipe, batch_size: int, seed: int = 0,
                 batches_at_once: int | None = None):
        self.pics, self.recipe, self.batch_size = pictures, recipe, batch_size
        self.at_once = batches_at_once or batches_made_at_once(pictures.device, batch_size)
        self.generator = torch.Generator(device=pictures.device)
        self.generator.manual_seed(seed)
        self.transfers = torch.tensor([_TRANSFER_NAMES.index(t) for t in recipe.transfers], device=pictures.device)
        self.made: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.made:
            self.made = self.make()
        return self.made.pop(0)

    def __iter__(self):
        return self

    def make(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The next `at_once` batches, made in one go."""
        while True:
            try:
                made = render_batch(self.draw(self.batch_size * self.at_once), self.pics.device)
            except torch.OutOfMemoryError:
                if self.at_once == 1:
                    raise
                self.at_once //= 2  # a GPU with less memory: fewer batches at a time, not a lost run
                print(f"resident: out of device memory, now making {self.at_once} batches at a time",
                      file=sys.stderr, flush=True)
                continue
            return list(zip(*(t.split(self.batch_size) for t in made), strict=True))

    def draw(self, n: int | None = None) -> dict[str, torch.Tensor]:
        """n plans (a batch) whose objects cover 1 to 80 % of the view, as SyntheticComposites keeps them."""
        n = n or self.batch_size
        parts, have = [], 0
        for _ in range(50):
            part = self._draw(int(1.25 * (n - have)) + 8)
            keep = part.pop("keep")
            part = {k: v[keep] for k, v in part.items()}
            parts.append(part)
            have += int(keep.sum())
            if have >= n:
                break
        else:
            raise RuntimeError("could not draw synthetic composites with usable masks")
        batch = {k: torch.cat([p[k] for p in parts])[:n] for k in parts[0]}
        for key in ("reference", "donor"):  # padded to this batch's longest, as collate does
            longest = max(int(batch[key + "_n"].max()), 1)
            batch[key] = batch[key][:, :longest]
        return batch

    def _draw(self, b: int) -> dict[str, torch.Tensor]:
        g, pics, r, s = self.generator, self.pics, self.recipe, self.pics.size
        dev = pics.device
        photo = _randint(g, torch.full((b,), pics.n_photos, device=dev))
        has_objects = pics.n_objects_of[photo] > 0
        own = pics.first_object[photo] + _randint(g, pics.n_objects_of[photo].clamp(min=1))
        any_object = _randint(g, torch.full((b,), max(pics.n_objects, 1), device=dev))
        blob = ~has_objects & ((torch.rand(b, generator=g, device=dev) < 0.5) | (pics.n_objects == 0))
        obj = torch.where(has_objects, own, any_object).clamp(max=max(pics.n_objects - 1, 0))
        hw = pics.photo_hw[photo]
        box = None
        if pics.n_objects:  # the outline's box, stretched from its photo onto this one
            src_hw = pics.photo_hw[pics.mask_photo[obj]]
            stretch = (hw.double() / src_hw.double()).repeat_interleave(2, 1)
            box = (pics.mask_box[obj].double() * stretch).round().long()
        closeup = (torch.rand(b, generator=g, device=dev) < r.closeup) & ~blob
        view = _views(g, pics, photo, box, closeup)
        ones = torch.ones(b, dtype=torch.float64, device=dev)
        ys, xs = _grid(view, s, ones, ones)
        pixels = _bilinear(pics.photos, pics.photo_start[photo], hw, ys, xs)
        photo_pixels = torch.floor(pixels + 0.5).clamp(0, 255).to(torch.uint8)  # (b, S, S, 3), as Pillow rounds
        mask = _blob_masks(g, hw, ys, xs)
        if pics.n_objects:  # the object's own mask, or the outline, in its photo's pixels (src_hw, above)
            my, mx = _grid(view, s, src_hw[:, 0].double() / hw[:, 0], src_hw[:, 1].double() / hw[:, 1])
            outline = _bilinear(pics.masks, pics.mask_start[obj], src_hw, my, mx) / 255
            mask = torch.where(blob[:, None, None], mask, outline)
        mask = mask > 0.5  # (b, S, S)
        coverage = mask.float().mean((1, 2))
        keep = (coverage >= 0.01) & (coverage <= 0.8)

        reference_photo = _randint(g, torch.full((b,), pics.n_photos, device=dev))
        restyled = torch.rand(b, generator=g, device=dev) < r.restyle
        restyle, restyle_params = draw_edit_batch(g, b, False, dev)
        restyle = torch.where(restyled[:, None], restyle, -1)
        edit, edit_params = draw_edit_batch(g, b, r.strong, dev)
        lit = torch.rand(b, generator=g, device=dev) < r.time_of_day
        kelvin = torch.exp(_uniform(g, b, math.log(2500), math.log(12000), dev))
        stops = _uniform(g, b, -2.0, 0.5, dev)
        edit = torch.where(lit[:, None], torch.tensor([TIME_OF_DAY] + [-1] * (MAX_EDITS - 1), device=dev), edit)
        light = torch.stack([kelvin, stops, torch.zeros_like(stops)], 1)
        edit_params[:, 0] = torch.where(lit[:, None], light, edit_params[:, 0])

        transfer = torch.full((b,), -1, dtype=torch.int64, device=dev)
        donor_shape = (b, 1, 3)
        donor, donor_n = torch.zeros(donor_shape, dtype=torch.float32, device=dev), torch.zeros_like(photo)
        if pics.n_objects:
            peers = pics.peer_n[obj]
            same = ~lit & has_objects & (peers > 0) & (torch.rand(b, generator=g, device=dev) < r.same_category)
            donor_obj = pics.peers[obj, _randint(g, peers.clamp(min=1))]
            chosen = self.transfers[_randint(g, torch.full((b,), len(self.transfers), device=dev))]
            transfer = torch.where(same, chosen, -1)
            donor_n = torch.where(same, pics.donor_n[donor_obj], 0)
            donor = pics.donors[donor_obj].float() / 255
            edit = torch.where(same[:, None], -1, edit)
        mild_on = torch.rand(b, generator=g, device=dev) < r.mild
        mild = torch.where(mild_on, _uniform(g, b, 0.0, 0.3, dev), 0.0).float()
        flip = torch.rand(b, generator=g, device=dev) < 0.5
        return dict(keep=keep, photo=photo_pixels, mask=mask, reference=pics.references[reference_photo],
                    reference_n=pics.reference_n[reference_photo], donor=donor, donor_n=donor_n, restyle=restyle,
                    restyle_params=restyle_params, edit=edit, edit_params=edit_params, transfer=transfer,
                    rotations=_qr_rotations(g, b, dev), mild_on=mild_on, mild=mild, flip=flip)


_SIDE_STREAMS: dict[str, torch.cuda.Stream] = {}  # one per device for the process: its cached memory is reused


class MadeAhead:
    """A ResidentStream's batches, in the same order, with the next make under way in a thread (on a CUDA
    stream of its own) while the network trains on the last: a make waits on the device hundreds of times,
    and in the training loop each wait leaves the GPU idle (`--make-ahead`). The first make is made in the
    caller's stream, and the thread starts when the second batch is asked for, so the first step (cuDNN's
    timing of its algorithms, kept for the whole run) has the GPU to itself. close() stops the thread."""

    def __init__(self, stream: ResidentStream):
        self.stream, self.batches, self.stopping, self.made_first = stream, [], False, False
        device = torch.device(stream.pics.device)
        self.side = None
        if device.type == "cuda":
            if str(device) not in _SIDE_STREAMS:  # setdefault would make a stream every time, to throw it away
                _SIDE_STREAMS[str(device)] = torch.cuda.Stream(device)
            self.side = _SIDE_STREAMS[str(device)]
        self.ready: queue.Queue = queue.Queue(maxsize=1)  # one make waiting: two in memory besides the one used
        self.thread = threading.Thread(target=self._work, name="fmm-make-ahead", daemon=True)

    def _work(self) -> None:
        try:
            while not self.stopping:
                if self.side is None:
                    self.ready.put((self.stream.make(), None))
                    continue
                with torch.cuda.stream(self.side):
                    made, done = self.stream.make(), torch.cuda.Event()
                    done.record(self.side)
                self.ready.put((made, done))
        except BaseException as exc:  # noqa: BLE001 - raised where the batches are taken
            self.ready.put(exc)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.thread.ident is None and not self.made_first:  # the first make, here; the thread makes the rest
            self.batches, self.made_first = self.stream.make(), True
            return self.batches.pop(0)
        if self.thread.ident is None:  # the first step has run on the host, cuDNN's timing of algorithms with it
            if self.side is not None:  # the thread's stream comes after what is queued here (the pictures' upload)
                self.side.wait_stream(torch.cuda.current_stream(self.side.device))
            self.thread.start()
        if not self.batches:
            item = self.ready.get()
            if isinstance(item, BaseException):
                raise item
            self.batches, done = item
            if done is not None:  # the training stream waits for the make, and its memory for the training
                here = torch.cuda.current_stream(self.side.device)
                here.wait_event(done)
                for t in (t for batch in self.batches for t in batch):
                    t.record_stream(here)
        return self.batches.pop(0)

    def __iter__(self):
        return self

    def close(self) -> None:
        """Stop the thread (after the make it is on) and let go of what it made."""
        self.stopping = True
        while self.thread.is_alive():
            try:
                self.ready.get(timeout=0.1)
            except queue.Empty:
                pass
        while True:  # a make put after the last get above
            try:
                self.ready.get_nowait()
            except queue.Empty:
                break
        if self.side is not None:
            self.side.synchronize()
        self.batches = []


def plan_of(batch: dict[str, torch.Tensor], i: int) -> Plan:
    """Sample i of a drawn batch as the Plan synthetic.render makes the same composite from (the reference
    every resident batch is tested against)."""
    def edits(index, params):
        chosen = [(EDIT_NAMES[int(e)], params[j]) for j, e in enumerate(index.tolist()) if e >= 0]
        return [(name, tuple(float(v) for v in p[:3 if name == "white balance" else 2 if name == "time of day"
                                                 else 1])) for name, p in chosen] or None

    b = {k: v[i].cpu() for k, v in batch.items()}
    plan = Plan(b["photo"].numpy(), b["mask"].numpy(), b["reference"][:int(b["reference_n"])].numpy())
    plan.restyle = edits(b["restyle"], b["restyle_params"].numpy())
    if int(b["transfer"]) >= 0:
        name = _TRANSFER_NAMES[int(b["transfer"])]
        plan.transfer = (name, b["donor"][:int(b["donor_n"])].numpy(),
                         b["rotations"].numpy() if name == "idt" else None)
    else:
        plan.edits = edits(b["edit"], b["edit_params"].numpy())
    plan.mild = float(b["mild"]) if bool(b["mild_on"]) else None
    plan.flip = bool(b["flip"])
    return plan


_PICTURES: dict[tuple, ResidentPictures] = {}


def resident_pictures(data_root: str | Path, size: int, device: str, more: bool = False,
                      extra: bool = False) -> ResidentPictures:
    """The pictures of `data_root` on `device`, decoded once per process: the candidates of a round share them."""
    key = (str(Path(data_root).resolve()), size, str(device), more, extra)
    if key not in _PICTURES:
        _PICTURES[key] = ResidentPictures(data_root, size, device, more, extra)
    return _PICTURES[key]
