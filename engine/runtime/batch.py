"""`harmonize run`: headless batch harmonization of one image, a folder, or a CSV list.

Resumable (existing outputs are skipped unless overwrite), atomic (temporary file, then rename), and
one bad input never stops the rest: each failure is reported once with its path and counted in the
summary. The plan is checked before any inference (`check_plan`): no output may be an input or a mask,
no two jobs may share an output. Decoding of the next inputs and encoding of finished outputs overlap
inference in worker threads.
"""
from __future__ import annotations

import csv
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import HarmonizeError, InputError
from ..imageio import MAX_PIXELS, Picture, check_mask, check_output_name, read_image, read_mask8, write_image
from ..paths import as_path, is_local
from ..progress import Progress
from .backends.base import Backend
from .fullres import Prepared

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class Job:
    """One composite, its mask and where its output goes."""

    composite: Path
    mask: Path | None
    output: Path
    error: str | None = None  # a listing row that cannot become a job: reported as its failure


class PlanError(InputError):
    """The jobs as a whole cannot run (an output over an input, two jobs with one output)."""


@dataclass
class Summary:
    """What a batch did; `failed` keeps (path, reason)."""

    ok: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    not_started: int = 0  # left when the run was interrupted
    seconds: float = 0.0  # spent harmonizing, after the model loaded

    def __str__(self) -> str:
        return f"{self.ok} ok / {self.skipped} skipped / {len(self.failed)} failed"

    def fail(self, path: Path, exc: BaseException | str) -> None:
        """Record a failure; the reason loses a leading repeat of the path ("x.jpg: x.jpg: ...")."""
        reason = str(exc) if not isinstance(exc, MemoryError) else "out of memory (lower --max-megapixels)"
        reason = reason.removeprefix(f"{path}: ")
        self.failed.append((path, reason))


def iharmony4_names(composite_name: str) -> tuple[str, str]:
    """The mask and real file names of an iHarmony4 composite `<id>_<obj>_<k>.jpg`."""
    parts = Path(composite_name).stem.split("_")
    if len(parts) < 3:
        raise InputError(f"{composite_name}: not an iHarmony4 composite name <id>_<obj>_<k>.jpg")
    image_id = "_".join(parts[:-2])
    return f"{image_id}_{parts[-2]}.png", f"{image_id}.jpg"


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
    """Make each output folder and prove it takes a file, so an unwritable -o fails once, up front."""
    for folder in sorted({job.output.parent for job in jobs if not job.error}, key=str):
        probe = folder / f".fmm-write-test-{os.getpid()}.part"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise InputError(f"{folder}: cannot write outputs there ({exc.strerror or exc})") from None


def _load(job: Job, max_pixels: int, backend: Backend) -> tuple[Picture, Prepared]:
    """Decode a job's picture and mask and prepare them for the network (on the loader's thread)."""
    if job.mask is None:
        raise InputError(f"{job.composite}: no mask found for it")
    pic = read_image(job.composite, max_pixels, keep_decoded=True)
    mask = read_mask8(job.mask, (pic.rgb.shape[1], pic.rgb.shape[0]))
    check_mask(mask, str(job.mask))
    prepared = backend.prepare(pic.rgb, mask, source=pic.decoded)
    return replace(pic, decoded=None), prepared


def triage(jobs: list[Job], overwrite: bool) -> tuple[Summary, list[Job]]:
    """The jobs still to do; the summary so far counts the rows that failed already and the skips."""
    summary, todo = Summary(), []
    for job in jobs:
        if job.error:
            summary.fail(job.composite, job.error)
        elif job.output.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append(job)
    return summary, todo


class _Pipeline:
    """Three stages on two threads and the caller's: a loader decodes and prepares the next picture, the
    caller runs the network, a writer applies the answer at full resolution and encodes. At most `held`
    pictures are decoded at once, whatever the batch's size: the loader waits for the writer to finish one."""

    def __init__(self, backend: Backend, max_pixels: int, strength: float, held: int = 2):
        self.backend, self.max_pixels, self.strength = backend, max_pixels, strength
        self.slots = threading.BoundedSemaphore(held)
        self.stopping = threading.Event()
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmm-load")
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmm-write")

    def load(self, job: Job) -> Future:
        return self.loader.submit(self._load, job)

    def _load(self, job: Job):
        while not self.slots.acquire(timeout=0.1):
            if self.stopping.is_set():
                return None
        try:
            return _load(job, self.max_pixels, self.backend)
        except BaseException:
            self.slots.release()
            raise

    def write(self, job: Job, pic: Picture, prepared: Prepared, answer: np.ndarray) -> Future:
        return self.writer.submit(self._write, job, pic, prepared, answer)

    def _write(self, job: Job, pic: Picture, prepared: Prepared, answer: np.ndarray) -> None:
        try:
            write_image(job.output, replace(pic, rgb=self.backend.finish(prepared, answer, self.strength)))
        finally:
            self.slots.release()

    def drop(self) -> None:
        """A loaded picture that will not be written: its slot goes back."""
        self.slots.release()

    def close(self) -> None:
        self.stopping.set()
        self.loader.shutdown(cancel_futures=True)
        self.writer.shutdown()


def run_batch(backend: Backend, jobs: list[Job], overwrite: bool = False, strength: float = 1.0,
              progress: bool = True, max_pixels: int = MAX_PIXELS) -> Summary:
    """Harmonize every job; never raises for one job's failure. Decoding, the network and encoding
    overlap (`_Pipeline`), with at most two pictures decoded at once. Ctrl-C stops after the outputs being
    written, and the summary counts what was left (`not_started`)."""
    summary, todo = triage(jobs, overwrite)
    remove_stale_parts(jobs)
    bar = Progress(len(todo), "harmonize", enabled=progress)
    errors = (HarmonizeError, OSError, ValueError, MemoryError)
    pipe = _Pipeline(backend, max_pixels, strength)
    loads: deque[tuple[Job, Future]] = deque()
    saves: deque[tuple[Job, Future]] = deque()
    queue = iter(todo)
    done, start = 0, time.monotonic()

    def settle(limit: int) -> None:
        while len(saves) > limit or (saves and saves[0][1].done()):
            job, fut = saves.popleft()
            try:
                fut.result()
                summary.ok += 1
            except errors as exc:
                summary.fail(job.output, exc)

    def refill() -> None:
        while len(loads) < 2:
            job = next(queue, None)
            if job is None:
                return
            loads.append((job, pipe.load(job)))

    try:
        refill()
        while loads:
            job, fut = loads.popleft()
            refill()
            try:
                pic, prepared = fut.result()
            except errors as exc:
                summary.fail(job.composite, exc)
            else:
                try:
                    answer = backend.answer(prepared)
                except errors as exc:
                    pipe.drop()
                    summary.fail(job.composite, exc)
                else:
                    saves.append((job, pipe.write(job, pic, prepared, answer)))
                del pic, prepared
            settle(2)
            done += 1
            bar.update(done, f"{len(summary.failed)} failed" if summary.failed else job.composite.name)
    except KeyboardInterrupt:
        pipe.stopping.set()
        for _, fut in loads:
            fut.cancel()
        summary.not_started = len(todo) - done
    finally:
        settle(0)  # outputs already being written are finished, never left half-done
        pipe.close()
        bar.close()
        summary.seconds = time.monotonic() - start
    return summary
