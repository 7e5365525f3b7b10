"""A contact sheet: each model on composites that have no ground truth (real pastes), side by side.

Real composites are what users harmonize, and no metric scores them: a model that casts a colour over a large
region passes the real triples' numbers and fails a user. So before shipping, every candidate is looked at
beside the shipped model on one sheet. Each tile is labelled with how far the model moved the object's mean
colour (CIE76 distance between the object's mean Lab before and after), so the eye finds the large moves.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_path
from ..errors import InputError
from ..imageio import foreground, read_image, read_mask
from ..progress import Progress
from ..runtime.color import rgb_to_lab

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]
TILE_HEIGHT = 128  # 30 rows at 128 px: a sheet of about 4,000 px, one scroll per candidate column
GAP = 4
COMPOSITE = "composite"


def composites(folder: str | Path) -> list[tuple[Path, Path]]:
    """(composite, mask) pairs of a folder laid out as ../shared/bench/real-composites: composites/<name>.* and
    masks/<name>.png."""
    root = Path(folder)
    folder = root / "composites"
    pictures = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    if not pictures:
        raise InputError(f"{root}: no pictures in composites/ (expected composites/<name>.jpg, masks/<name>.png)")
    pairs = []
    for p in pictures:
        mask = root / "masks" / f"{p.stem}.png"
        if not mask.is_file():
            raise InputError(f"{p}: no mask at {mask}")
        pairs.append((p, mask))
    return pairs


def object_shift(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """How far the object's mean colour moved: the distance between its mean Lab in `before` and `after`."""
    fg = foreground(mask)
    if not fg.any():
        return 0.0
    return float(np.linalg.norm(rgb_to_lab(after[fg]).mean(0) - rgb_to_lab(before[fg]).mean(0)))


def _tile(rgb: np.ndarray, label: str) -> Image.Image:
    img = Image.fromarray(rgb)
    img = img.resize((max(1, round(img.width * TILE_HEIGHT / img.height)), TILE_HEIGHT), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 8 + 6 * len(label), 14), fill=(0, 0, 0))
    draw.text((4, 2), label, fill=(255, 255, 255))
    return img


def contact_sheet(pairs: Sequence[tuple[Path, Path]], methods: dict[str, Method], out: str | Path,
                  progress: bool = True) -> dict[str, list[float]]:
    """Write a JPEG sheet: a row per composite (the composite, then each method's output, labelled with its
    object shift), a header naming the columns; returns each method's object shifts, in the rows' order."""
    names = [COMPOSITE, *methods]
    shifts: dict[str, list[float]] = {name: [] for name in methods}
    rows = []
    bar = Progress(len(pairs), "sheet", enabled=progress)
    for i, (path, mask_path) in enumerate(pairs):
        rgb = read_image(path).rgb
        mask = read_mask(mask_path, (rgb.shape[1], rgb.shape[0]))
        row = [_tile(rgb, path.stem)]
        for name, method in methods.items():
            out_rgb = method(rgb, mask)
            shifts[name].append(object_shift(rgb, out_rgb, mask))
            row.append(_tile(out_rgb, f"dE {shifts[name][-1]:.1f}"))
        rows.append(row)
        bar.update(i + 1, path.stem)
    bar.close()
    widths = [max(row[c].width for row in rows) for c in range(len(names))]  # columns line up across rows
    header = 16
    sheet = Image.new("RGB", (sum(widths) + GAP * (len(widths) - 1), header + len(rows) * (TILE_HEIGHT + GAP)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for c, name in enumerate(names):
        draw.text((x + 2, 2), name, fill=(0, 0, 0))
        for r, row in enumerate(rows):
            sheet.paste(row[c], (x, header + r * (TILE_HEIGHT + GAP)))
        x += widths[c] + GAP
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="JPEG", quality=85)
    return shifts


def shift_summary(shifts: dict[str, list[float]], pairs: Sequence[tuple[Path, Path]]) -> str:
    """One line per method: its mean and largest object shift, and on which composite the largest."""
    lines = ["object's mean colour moved (CIE76 dE), on the sheet's composites:"]
    for name, s in shifts.items():
        worst = int(np.argmax(s))
        lines.append(f"  {name}: mean {np.mean(s):.1f}, largest {s[worst]:.1f} ({pairs[worst][0].stem})")
    return "\n".join(lines)
