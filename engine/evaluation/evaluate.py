"""`harmonize eval`: MSE, PSNR and fMSE per subset and overall, at 256x256 and at full resolution.

Every method is scored on the same triples in one table: the untouched composite, Reinhard colour
transfer, and each model. "256" follows the papers: composite, mask and real resized to 256x256
(bicubic), the method run on those; "full" runs the method on the original pictures.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..progress import Progress
from ..training.datasets import Triple, load_triple
from .metrics import colour_shift, fmse, mse, psnr, reinhard

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]
COLUMNS = ("MSE 256", "PSNR 256", "fMSE 256", "MSE full", "PSNR full", "fMSE full")


@dataclass
class Scores:
    """Per-triple metrics of one method, keyed by column."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # triple name -> column -> value


COMPOSITE = "composite (untouched)"  # the row every other is measured against


def baselines(transfers: bool = True) -> dict[str, Method]:
    """The reference rows of an evaluation table: the untouched composite, and unless `transfers` is
    False the colour-statistics transfers (slower)."""
    rows: dict[str, Method] = {COMPOSITE: lambda rgb, mask: rgb}
    if transfers:
        rows["Reinhard transfer"] = lambda rgb, mask: reinhard(rgb, mask)
        rows["half-strength Lab transfer"] = lambda rgb, mask: reinhard(rgb, mask, 0.5)
    return rows


def resize_256(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.asarray(Image.fromarray(a).resize((256, 256), Image.BICUBIC))
    m = Image.fromarray(np.round(a * 255).astype(np.uint8)).resize((256, 256), Image.BICUBIC)
    return (np.asarray(m, np.float32) / 255.0 > 0.5).astype(np.float32)


def evaluate(triples: Sequence[Triple], methods: dict[str, Method], progress: bool = True) -> dict[str, Scores]:
    """Score each method on each triple at 256x256 and full resolution."""
    results = {name: Scores() for name in methods}
    bar = Progress(len(triples), "eval", enabled=progress)
    for i, t in enumerate(triples):
        comp, mask, real = load_triple(t)
        small = (resize_256(comp), resize_256(mask), resize_256(real))
        for name, method in methods.items():
            row = {}
            for tag, (c, m, r) in (("256", small), ("full", (comp, mask, real))):
                out = method(c, m)
                row.update({f"MSE {tag}": mse(out, r), f"PSNR {tag}": psnr(out, r), f"fMSE {tag}": fmse(out, r, m)})
            row["shift cosine"], row["shift size"] = colour_shift(comp, out, real, mask)
            results[name].rows[t.name] = row
        bar.update(i + 1, t.name)
    bar.close()
    return results


def table(results: dict[str, Scores], triples: Sequence[Triple]) -> str:
    """Markdown tables: one per subset present and one overall, means over triples."""
    groups = {"overall": [t.name for t in triples]}
    for t in triples:
        groups.setdefault(t.subset, []).append(t.name)
    lines = []
    baseline = next(iter(results))
    for group, names in groups.items():
        lines += [f"\n{group} ({len(names)} triples)\n", "| method | " + " | ".join(COLUMNS) + " | fMSE < composite |",
                  "|---" * (len(COLUMNS) + 2) + "|"]
        for method, scores in results.items():
            means = [np.mean([scores.rows[n][c] for n in names]) for c in COLUMNS]
            wins = sum(scores.rows[n]["fMSE full"] < results[baseline].rows[n]["fMSE full"] for n in names)
            cells = " | ".join(f"{v:.2f}" for v in means)
            lines.append(f"| {method} | {cells} | {wins}/{len(names)} |")
    return "\n".join(lines)


def diagnosis(results: dict[str, Scores], triples: Sequence[Triple]) -> str:
    """Per subset, whether each method moves the object's mean Lab colour the way the real photo needs: the
    mean cosine of its move and the needed one, the median size of its move over the needed one, and on how
    many triples it moved the object away from the real colours (a negative cosine)."""
    groups = {"overall": [t.name for t in triples]}
    for t in triples:
        groups.setdefault(t.subset, []).append(t.name)
    lines = ["\nobject colour moved against the move the real photo needs (mean Lab, full resolution)\n",
             "| method | subset (triples) | mean cosine | median size, moved / needed | negative cosines |",
             "|---|---|---|---|---|"]
    for method, scores in results.items():
        if method == COMPOSITE:  # it moves nothing
            continue
        for group, names in groups.items():
            cosines = np.array([scores.rows[n]["shift cosine"] for n in names])
            sizes = np.array([scores.rows[n]["shift size"] for n in names])
            mean_cos = f"{np.nanmean(cosines):.2f}" if np.isfinite(cosines).any() else "-"
            size = f"{np.nanmedian(sizes):.2f}" if np.isfinite(sizes).any() else "-"
            lines.append(f"| {method} | {group} ({len(names)}) | {mean_cos} | {size} | {int((cosines < 0).sum())} |")
    return "\n".join(lines)


def losses(results: dict[str, Scores], worst: int = 3) -> str:
    """For each method, the triples where it scores a lower full-resolution PSNR than the untouched
    composite (the first row), worst first: where a model hurts is what a mean hides."""
    base = next(iter(results.values())).rows
    lines = []
    for method, scores in list(results.items())[1:]:
        drops = sorted((scores.rows[n]["PSNR full"] - base[n]["PSNR full"], n) for n in scores.rows)
        hurt = [(d, n) for d, n in drops if d < 0]
        shown = ", ".join(f"{n} {base[n]['PSNR full']:.2f} -> {scores.rows[n]['PSNR full']:.2f} dB"
                          for _, n in hurt[:worst])
        worst_part = f"; worst: {shown}" if shown else ""
        lines.append(f"{method}: below the composite on {len(hurt)}/{len(drops)}{worst_part}")
    return "\n".join(lines)


def peers_table(results: dict[str, Scores], peers_csv: str | Path, set_name: str) -> str:
    """Published models' full-resolution scores beside ours, on the triples of `set_name` that the CSV
    covers (columns set, name, then <model>_PSNR and <model>_fMSE pairs, composite_* first)."""
    try:
        with open(peers_csv, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.DictReader(f) if r.get("set") == set_name]
    except OSError as exc:
        raise InputError(f"{peers_csv}: cannot read ({exc.strerror})") from None
    ours = next(iter(results.values())).rows
    rows = [r for r in rows if r["name"] in ours]
    if not rows:
        return f"\npublished models: {peers_csv} has no scores for the triples of {set_name!r}"
    names = [r["name"] for r in rows]
    models = [c.removesuffix("_PSNR") for c in rows[0] if c.endswith("_PSNR") and c != "composite_PSNR"]
    lines = [f"\npublished models, on the {len(names)} of these triples they were scored on (full resolution)\n",
             "| method | PSNR full | fMSE full |", "|---|---|---|"]
    for method, scores in results.items():
        p, f = (np.mean([scores.rows[n][c] for n in names]) for c in ("PSNR full", "fMSE full"))
        lines.append(f"| {method} | {p:.2f} | {f:.2f} |")
    for model in models:
        p, f = (np.mean([float(r[f"{model}_{c}"]) for r in rows]) for c in ("PSNR", "fMSE"))
        lines.append(f"| {model} (published) | {p:.2f} | {f:.2f} |")
    gap = max(abs(float(r["composite_PSNR"]) - ours[r["name"]]["PSNR full"]) for r in rows)
    lines.append(f"\nTheir composite PSNR and ours differ by at most {gap:.2f} dB on these triples.")
    return "\n".join(lines)
