"""The README's before/after figure: each example as composite | harmonized (shipped model) | original.

Rerun whenever the shipped weights change (numpy, Pillow and onnxruntime only):

    python examples/figure.py            # writes examples/before-after.jpg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the engine of this checkout, installed or not

from engine import load  # noqa: E402
from engine.atomic import atomic_path  # noqa: E402
from engine.imageio import read_image, read_mask  # noqa: E402

ROW_HEIGHT = 200
COLUMNS = ("composite", "harmonized", "original")


def tile(rgb: np.ndarray, label: str | None) -> Image.Image:
    img = Image.fromarray(rgb)
    img = img.resize((round(img.width * ROW_HEIGHT / img.height), ROW_HEIGHT), Image.LANCZOS)
    if label:
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, 8 + 6 * len(label), 14), fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
    return img


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default=str(HERE / "before-after.jpg"))
    p.add_argument("--model", help="model file (default: the shipped one)")
    args = p.parse_args()
    rows = []
    with load("onnxruntime", args.model) as backend:
        for i, path in enumerate(sorted((HERE / "composites").glob("*.jpg"))):
            composite = read_image(path).rgb
            mask = read_mask(HERE / "masks" / f"{path.stem}.png", (composite.shape[1], composite.shape[0]))
            pictures = (composite, backend.harmonize(composite, mask), read_image(HERE / "originals" / path.name).rgb)
            rows.append([tile(rgb, COLUMNS[j] if i == 0 else None) for j, rgb in enumerate(pictures)])
    gap = 4
    width = max(sum(t.width for t in row) + gap * (len(row) - 1) for row in rows)
    sheet = Image.new("RGB", (width, len(rows) * (ROW_HEIGHT + gap) - gap), (255, 255, 255))
    for r, row in enumerate(rows):
        x = 0
        for t in row:
            sheet.paste(t, (x, r * (ROW_HEIGHT + gap)))
            x += t.width + gap
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="JPEG", quality=85)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
