"""`harmonize run`: headless batch harmonization of one image, a folder, or a CSV list.

Resumable (existing outputs are skipped unless overwrite), atomic (temporary file, then rename), and
one bad input never stops the rest: each failure is logged with its path and counted in the summary.
Decoding of the next inputs and encoding of finished outputs overlap inference in worker threads.
"""
from __future__ import annotations

import csv
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .backends.base import Backend
from .data import iharmony4_names
from .errors import HarmonizeError, InputError
from .imageio import Picture, read_image, read_mask, write_image
from .progress import Progress

log = logging.getLogger("engine")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class Job:
    """One composite, its mask and where its output goes."""

    composite: Path
    mask: Path | None
    output: Path


@dataclass
class Summary:
    """What a batch did; `failed` keeps (path, reason)."""

    ok: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.ok} ok / {self.skipped} skipped / {len(self.failed)} failed"


def find_mask(composite: Path, masks: Path) -> Path | None:
    """The mask of a composite: same stem in `masks` (any image type), else the iHarmony4 name."""
    candidates = [masks / (composite.stem + ext) for ext in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")]
    try:
        candidates.append(masks / iharmony4_names(composite.name)[0])
    except InputError:
        pass
    return next((c for c in candidates if c.exists()), None)


def folder_jobs(inputs: Path, masks: Path, out: Path, suffix: str | None = None) -> list[Job]:
    """Jobs for every image below `inputs`, masks matched by name, outputs mirroring the input tree."""
    if not masks.is_dir():
        raise InputError(f"{masks}: mask folder not found")
    jobs = []
    for p in sorted(inputs.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.name.startswith("."):
            rel = p.relative_to(inputs)
            jobs.append(Job(p, find_mask(p, masks.joinpath(rel.parent)) or find_mask(p, masks),
                            (out / rel).with_suffix(suffix or p.suffix)))
    if not jobs:
        raise InputError(f"{inputs}: no images found")
    return jobs


def csv_jobs(listing: Path, out: Path, suffix: str | None = None) -> list[Job]:
    """Jobs from a CSV with columns composite, mask and optionally output and sample_dir (paths relative
    to the CSV's folder, or to its sample_dir)."""
    try:
        with open(listing, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"{listing}: cannot read ({exc.strerror})") from None
    if not rows or not {"composite", "mask"} <= set(rows[0]):
        raise InputError(f"{listing}: needs a header with columns composite,mask[,output]")
    jobs = []
    for r in rows:
        base = listing.parent / r.get("sample_dir", "")  # an iHarmony4-samples MANIFEST.csv works as is
        comp = base / r["composite"]
        target = r.get("output") or Path(r["composite"]).with_suffix(suffix or comp.suffix).name
        jobs.append(Job(comp, base / r["mask"], out / target))
    return jobs


def _load(job: Job) -> tuple[Picture, object]:
    if job.mask is None:
        raise InputError(f"{job.composite}: no mask found for it")
    pic = read_image(job.composite)
    mask = read_mask(job.mask, (pic.rgb.shape[1], pic.rgb.shape[0]))
    return pic, mask


def run_batch(backend: Backend, jobs: list[Job], overwrite: bool = False, strength: float = 1.0,
              progress: bool = True, prefetch: int = 2) -> Summary:
    """Harmonize every job; never raises for one job's failure."""
    summary = Summary()
    todo = []
    for job in jobs:
        if job.output.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append(job)
    bar = Progress(len(todo), "harmonize", enabled=progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        loads: deque[tuple[Job, Future]] = deque()
        saves: deque[tuple[Job, Future]] = deque()
        queue = iter(todo)

        def settle(limit: int) -> None:  # bounds the outputs held in memory while they encode
            while len(saves) > limit:
                job, fut = saves.popleft()
                try:
                    fut.result()
                    summary.ok += 1
                except (HarmonizeError, OSError, ValueError) as exc:
                    summary.failed.append((job.output, str(exc)))
                    log.error("failed to write %s: %s", job.output, exc)

        def refill() -> None:
            while len(loads) < prefetch:
                job = next(queue, None)
                if job is None:
                    return
                loads.append((job, pool.submit(_load, job)))

        refill()
        done = 0
        while loads:
            job, fut = loads.popleft()
            refill()
            try:
                pic, mask = fut.result()
                out = backend.harmonize(pic.rgb, mask, strength)
                saves.append((job, pool.submit(write_image, job.output, out, pic.alpha)))
                settle(prefetch)
            except (HarmonizeError, OSError, ValueError) as exc:
                summary.failed.append((job.composite, str(exc)))
                log.error("failed: %s: %s", job.composite, exc)
            done += 1
            bar.update(done, job.composite.name)
        settle(0)
    bar.close()
    return summary
