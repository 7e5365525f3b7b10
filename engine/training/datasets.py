"""Datasets on disk: iHarmony4 triples (its own layout, or a folder with a MANIFEST.csv) and its file
naming (`iharmony4_names`, in runtime/plan.py, which `run` also uses to find masks), read by `eval`,
`validate` and training. Synthetic training composites are made in synthetic.py."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imageio import read_image, read_mask
from ..runtime.plan import iharmony4_names

SUBSETS = ("HCOCO", "HAdobe5k", "HFlickr", "Hday2night")


@dataclass(frozen=True)
class Triple:
    """One harmonization example: a composite, its foreground mask and the real photograph."""

    name: str
    subset: str
    composite: Path
    mask: Path
    real: Path


def read_iharmony4(root: str | Path, split: str = "test", subsets=SUBSETS) -> list[Triple]:
    """Triples of the iHarmony4 layout: <root>/<subset>/{composite_images,masks,real_images} + lists."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    triples = []
    for subset in subsets:
        listing = root / subset / f"{subset}_{split}.txt"
        if not listing.exists():
            continue
        for line in listing.read_text().split():
            mask_name, real_name = iharmony4_names(line)
            d = root / subset
            triples.append(Triple(Path(line).stem, subset, d / "composite_images" / Path(line).name,
                                  d / "masks" / mask_name, d / "real_images" / real_name))
    if not triples:
        raise InputError(f"{root}: no {split} list of {', '.join(subsets)} found (e.g. HCOCO/HCOCO_{split}.txt)")
    return triples


def read_manifest(folder: str | Path) -> list[Triple]:
    """Triples listed in <folder>/MANIFEST.csv (columns sample_dir, subset, composite, mask, real)."""
    folder = Path(folder)
    manifest = folder / "MANIFEST.csv"
    if not manifest.exists():
        raise InputError(f"{folder}: no MANIFEST.csv")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    stems = [Path(r["composite"]).stem for r in rows]
    # NOTE: a triple is named by its composite's stem (as PEERS.csv names them) unless two share one, as the
    # held-out folders' composite.png do: then by its folder too, so that no two triples' scores collide.
    unique = len(set(stems)) == len(stems)
    return [
        Triple(stem if unique else f"{r['sample_dir']}/{stem}", r["subset"], folder / r["sample_dir"] / r["composite"],
               folder / r["sample_dir"] / r["mask"], folder / r["sample_dir"] / r["real"])
        for stem, r in zip(stems, rows, strict=True)
    ]


def read_triples(path: str | Path, split: str = "test") -> list[Triple]:
    """A MANIFEST.csv folder or an iHarmony4 root, whichever `path` is."""
    if (Path(path) / "MANIFEST.csv").exists():
        return read_manifest(path)
    return read_iharmony4(path, split)


def load_triple(t: Triple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite and real as uint8 RGB, mask as float32 in [0, 1], all checked to one size."""
    comp = read_image(t.composite).rgb
    real = read_image(t.real).rgb
    size = (comp.shape[1], comp.shape[0])
    if real.shape != comp.shape:
        raise InputError(f"{t.real}: real is {real.shape[1]}x{real.shape[0]}, composite is {size[0]}x{size[1]}")
    return comp, read_mask(t.mask, size), real
