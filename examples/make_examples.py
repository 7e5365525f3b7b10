"""Make the example composites in this folder from CC BY photos of ../shared/data/coco-more.

Each example is a real photo whose masked object got a colour edit of the kind a pasted layer has
(a cast, an exposure or a white-balance mismatch with the scene). The untouched photo is kept in
originals/ as the answer. The shipped model's last training round drew its own synthetic composites from
coco-more's permissive photos, these four among them: the examples show what it does, the validation
triples how it generalizes. Run from the repository root:

    python examples/make_examples.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

# name: (coco-more mask, per-channel gain, gamma, saturation); each edit moves the object off its scene.
EXAMPLES = {
    "car": ("000000234748_0.png", (0.80, 0.80, 0.90), 1.40, 1.0),   # under-exposed
    "dog": ("000000377575_0.png", (0.75, 0.90, 1.25), 1.30, 1.0),   # cold and dark
    "bus": ("000000423617_0.png", (0.95, 1.25, 0.85), 0.85, 1.0),   # a green tint, brighter
    "cat": ("000000358083_0.png", (0.95, 1.05, 1.35), 0.75, 0.6),   # washed out and blue
}


def edit(rgb: np.ndarray, gain, gamma: float, saturation: float) -> np.ndarray:
    """The colour edit of one example on uint8 RGB."""
    x = rgb.astype(np.float32) / 255.0
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = luma[..., None] + saturation * (x - luma[..., None])
    x = np.clip(x * np.array(gain, np.float32), 0, 1) ** gamma
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"), help="the shared data folder")
    args = p.parse_args()
    src = Path(args.data) / "coco-more"
    licences = {r["file"]: r for r in csv.DictReader(open(src / "images.csv", newline=""))}
    credits = ["# Credits", "",
               "Each example is a photo from COCO 2017, as stored in `shared/data/coco-more` (long side 512 px),",
               "with its masked object recoloured by `make_examples.py` (the change made to the original). The",
               "masks are drawn from COCO's annotations (CC BY 4.0).", "",
               "| example | photo | licence | source |", "|---|---|---|---|"]
    for sub in ("composites", "masks", "originals"):
        (HERE / sub).mkdir(exist_ok=True)
    for name, (mask_name, gain, gamma, saturation) in EXAMPLES.items():
        photo = mask_name.rsplit("_", 1)[0] + ".jpg"
        row = licences[photo]
        if row["commercial_ok"] != "1" or row["derivatives_ok"] != "1" or "SA" in row["licence"]:
            raise SystemExit(f"{photo}: {row['licence']} is not CC BY, CC0 or public domain")
        rgb = np.asarray(Image.open(src / "images" / photo).convert("RGB"))
        mask = np.asarray(Image.open(src / "masks" / mask_name).convert("L")) > 127
        composite = np.where(mask[..., None], edit(rgb, gain, gamma, saturation), rgb)
        Image.fromarray(composite).save(HERE / "composites" / f"{name}.jpg", quality=90)
        Image.fromarray(rgb).save(HERE / "originals" / f"{name}.jpg", quality=90)
        Image.fromarray((mask * 255).astype(np.uint8)).save(HERE / "masks" / f"{name}.png", optimize=True)
        credits.append(f"| {name} | {photo} | [{row['licence']}]({row['licence_url']}) | {row['flickr_url']} "
                       f"(COCO: {row['original_url']}) |")
    (HERE / "CREDITS.md").write_text("\n".join(credits) + "\n")
    print(f"wrote {len(EXAMPLES)} examples in {HERE}")


if __name__ == "__main__":
    main()
