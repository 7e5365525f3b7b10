"""The plan of `harmonize run`: which composite, with which mask, goes to which output, and the checks
made before any work so that no file is lost: no output may be an input or a mask, no two jobs may share
an output, every output's name is an image type we write, and every output folder takes a file."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import put_whole
from ..errors import InputError
from ..imageio import check_output_name
from ..paths import as_path, bucket_of, exists, is_local, store_errors

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")  # a mask is looked for in this order


@dataclass(frozen=True)
class Job:
    """One composite, its mask and where its output goes."""

    composite: Path
    mask: Path | None
    output: Path
    error: str | None = None  # a listing row that cannot become a job: reported as its failure


class PlanError(InputError):
    """The jobs as a whole cannot run (an output over an input, two jobs with one output)."""


def iharmony4_names(composite_name: str) -> tuple[str, str]:
    """The mask and real file names of an iHarmony4 composite `<id>_<obj>_<k>.jpg`."""
    parts = Path(composite_name).stem.split("_")
    if len(parts) < 3:
        raise InputError(f"{composite_name}: not an iHarmony4 composite name <id>_<obj>_<k>.jpg")
    image_id = "_".join(parts[:-2])
    return f"{image_id}_{parts[-2]}.png", f"{image_id}.jpg"


def find_mask(composite: Path, masks: Path) -> Path | None:
    """The mask of a composite: same stem in `masks` (any image type), else the iHarmony4 name."""
    candidates = [masks / (composite.stem + ext) for ext in IMAGE_EXTS]
    try:
        candidates.append(masks / iharmony4_names(composite.name)[0])
    except InputError:
        pass
    return next((c for c in candidates if c.exists()), None)


def folder_jobs(inputs: Path, masks: Path, out: Path, suffix: str | None = None) -> list[Job]:
    """Jobs for every image below `inputs`, masks matched by name, outputs mirroring the input tree."""
    if not masks.is_dir():
        raise InputError(f"{masks}: mask folder not found")
    if _same(out, inputs):
        raise PlanError(f"{out}: the output folder is the input folder; outputs would be taken for inputs "
                        "on the next run: choose another -o")
    # An output or mask folder inside the input tree holds no composites: its files are never inputs.
    not_inputs = [d.resolve() for d in (out, masks) if _inside(d, inputs) and not _same(d, inputs)]
    jobs = []
    for p in sorted(inputs.rglob("*")):
        if any(p.resolve().is_relative_to(d) for d in not_inputs):
            continue
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.name.startswith("."):
            rel = p.relative_to(inputs)
            jobs.append(Job(p, find_mask(p, masks.joinpath(rel.parent)) or find_mask(p, masks),
                            (out / rel).with_suffix(suffix or p.suffix)))
    if not jobs:
        raise InputError(f"{inputs}: no images found")
    return jobs


def csv_jobs(listing: Path, out: Path, suffix: str | None = None, outside_ok: bool = False) -> list[Job]:
    """Jobs from a CSV with columns composite, mask and optionally output and sample_dir (paths relative
    to the CSV's folder, or to its sample_dir). A row that cannot be used becomes a failed job; an
    output column may not leave `out` unless `outside_ok`."""
    try:  # utf-8-sig: spreadsheets save a byte-order mark before the header
        with listing.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"{listing}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{listing}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 "
                         "CSV") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if not {"composite", "mask"} <= set(header):
        raise InputError(f"{listing}: needs a header with columns composite,mask[,output]; "
                         f"its first line has {', '.join(map(repr, header)) or 'nothing'}")
    jobs = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank lines
        r = {k: v.strip() for k, v in zip(header, row, strict=False)}
        where = Path(f"{listing}:{line}")
        if not r.get("composite") or not r.get("mask"):
            missing = " and ".join(c for c in ("composite", "mask") if not r.get(c))
            jobs.append(Job(where, None, where, f"no {missing} in this row"))
            continue
        base = listing.parent / r.get("sample_dir", "")  # an iHarmony4-samples MANIFEST.csv works as is
        comp, mask = (as_path(r[c]) if "://" in r[c] else base / r[c] for c in ("composite", "mask"))
        target = out / (r.get("output") or comp.with_suffix(suffix or comp.suffix).name)
        if not outside_ok and not _inside(target, out):
            jobs.append(Job(comp, mask, target, f"its output {r['output']!r} is outside {out} "
                            "(--outputs-anywhere allows it)"))
            continue
        jobs.append(Job(comp, mask, target))
    return jobs


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_plan(jobs: list[Job]) -> None:
    """Refuse, before any work, outputs that are an input or a mask, two jobs with one output, and an
    output whose name is no image format we write."""
    inputs = {}
    for job in jobs:
        for role, p in (("composite", job.composite), ("mask", job.mask)):
            if p is not None and not job.error:
                inputs[p.resolve()] = (role, p)
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.error:
            continue
        try:
            check_output_name(job.output)
        except InputError as exc:
            raise PlanError(str(exc)) from None
        target = job.output.resolve()
        if target in inputs:
            role, p = inputs[target]
            raise PlanError(f"{job.output}: refusing to write over the {role} {p}; choose another -o")
        if target in seen:
            raise PlanError(f"{seen[target].composite} and {job.composite} would both be written to "
                            f"{job.output}; give them different output names")
        seen[target] = job


def remove_stale_parts(jobs: list[Job]) -> int:
    """Delete temporary files a killed run left beside these outputs (`.<name>.*.part`); returns how many."""
    by_folder: dict[Path, set[str]] = {}
    for job in jobs:
        by_folder.setdefault(job.output.parent, set()).add(job.output.name)
    removed = 0
    for folder, names in by_folder.items():
        if not is_local(folder) or not folder.is_dir():  # a URL's outputs are written in one put
            continue
        for p in folder.glob(".*.part"):
            if p.name[1:].rsplit(".", 2)[0] in names:
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def check_writable(jobs: list[Job]) -> None:
    """Make each output folder (on disk; a bucket is never made) and prove it takes a file, so an
    unwritable -o, or credentials its store refuses, fail once, up front."""
    for folder in sorted({job.output.parent for job in jobs if not job.error}, key=str):
        probe = folder / f".fmm-write-test-{os.getpid()}.part"
        try:
            if is_local(folder):
                folder.mkdir(parents=True, exist_ok=True)
            put_whole(probe, b"")
            with store_errors(probe):
                probe.unlink()
        except OSError as exc:
            raise InputError(f"{folder}: cannot write outputs there ({exc.strerror or exc})") from None


def check_readable(jobs: list[Job]) -> None:
    """Ask the store of each bucket the jobs read from about one of its objects, so that credentials it
    refuses stop the run before any work, naming the bucket (a missing object fails only its own job)."""
    asked = set()
    for job in jobs:
        for p in (job.composite, job.mask):
            if job.error or p is None or is_local(p) or bucket_of(p) in asked:
                continue
            asked.add(bucket_of(p))
            exists(p)


