"""`harmonize run`'s batch: every job of a plan (plan.py) harmonized, resumable (existing outputs are
skipped unless overwrite), atomic (temporary file, then rename), and one bad input never stops the rest:
each failure is reported once with its path and counted in the summary. Decoding, the network and encoding
overlap on threads of their own, as many a stage as the machine has cores, and the caller's (`_Pipeline`),
with at most one picture more than that decoded at once.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import HarmonizeError, InputError
from ..imageio import MAX_PIXELS, Picture, check_mask, read_image, read_mask8, write_image
from ..progress import Progress
from .backends.base import Backend
from .blas import one_blas_thread
from .fullres import Prepared
from .plan import Job, remove_stale_parts


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


def _load(job: Job, max_pixels: int, backend: Backend) -> tuple[Picture, Prepared]:
    """Decode a job's picture and mask and prepare them for the network (on the loader's thread)."""
    if job.mask is None:
        raise InputError(f"{job.composite}: no mask found for it")
    pic = read_image(job.composite, max_pixels, as_image=True)  # an 8-bit picture stays in Pillow's memory
    mask = read_mask8(job.mask, pic.size)
    check_mask(mask, str(job.mask))
    return pic, backend.prepare(pic.rgb, mask)


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
    """Three stages: loaders decode and prepare the next pictures, the caller runs the network, writers
    apply the answer at full resolution and encode; `workers` threads load and as many write (decoding,
    resizing, the colour map and encoding release the GIL, so each takes a core). At most `held` pictures
    are decoded at once, whatever the batch's size: a loader waits for a writer to finish one."""

    def __init__(self, backend: Backend, max_pixels: int, strength: float, workers: int, held: int):
        self.backend, self.max_pixels, self.strength = backend, max_pixels, strength
        self.held = held
        self.slots = threading.BoundedSemaphore(held)
        self.loader = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fmm-load")
        self.writer = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fmm-write")

    def load(self, job: Job) -> Future:
        return self.loader.submit(self._load, job)

    def _load(self, job: Job):
        """Decode and prepare one picture, whose slot the caller took before submitting it."""
        try:
            return list(_load(job, self.max_pixels, self.backend))  # a list the caller empties (see _write)
        except BaseException:
            self.slots.release()
            raise

    def write(self, job: Job, pic: Picture, prepared: Prepared, answer: np.ndarray) -> Future:
        return self.writer.submit(self._write, job, [pic, prepared, answer])

    def _write(self, job: Job, held: list) -> None:
        try:
            # Taken out of the list the executor keeps, the input is this frame's alone: it is freed once
            # the output is made, before encoding.
            pic, prepared, answer = held
            held.clear()
            rgb = self.backend.finish(prepared, answer, self.strength)
            del prepared
            pic = replace(pic, rgb=rgb)
            del rgb
            write_image(job.output, pic)
        finally:
            self.slots.release()

    def drop(self) -> None:
        """A loaded picture that will not be written: its slot goes back."""
        self.slots.release()

    def close(self) -> None:
        self.loader.shutdown(cancel_futures=True)
        self.writer.shutdown()


def _return_freed_buffers() -> None:
    """Have glibc's malloc map every buffer over 8 MiB on its own (a picture, its copies, a mask), so that
    freeing one gives it back at once, and keep up to 16 MiB free at the top of a heap, where the bands of
    the colour map come and go. A batch frees tens of megabytes a picture on several threads, which malloc's
    adaptive threshold would keep in per-thread heaps: 759 against 586 MiB at the peak of ten 12 MP pictures.
    Mapping every buffer over 1 MiB instead made each band a fresh mapping, its pages faulted in again: on 2
    cores, ten 12 MP JPEGs took 5.0 to 5.2 s (2.7 s in the kernel) at a 460 MiB peak, against 4.4 s (1.8 s)
    at 460 to 480 MiB (measured)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # another C library: no mallopt, nothing to do
            libc = ctypes.CDLL(None)
            libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD, fixed (no longer adaptive)
            libc.mallopt(-1, 16 << 20)  # M_TRIM_THRESHOLD


_SETTINGS_LOCK = threading.Lock()
_SETTINGS = {"batches": 0, "as_before": None}  # the batches running in this process, and how to put it back


def _batch_settings(workers: int) -> Callable[[], None]:
    """Settings of the process that a batch runs under; the call returned puts them back as they were once no
    other batch of the process runs (batches in several threads would otherwise undo each other's).

    - numpy's OpenBLAS is kept to one thread (blas.py).
    - Pillow keeps up to 4 blocks of 16 MiB a worker when an image is freed, where it would give each back to
      malloc and fault the next picture's pages in anew: ten 12 MP JPEGs on 2 cores spent 1.3 s in the
      kernel against 1.7 to 2.0 s, at the same peak (measured)."""
    with _SETTINGS_LOCK:
        blocks = Image.core.get_blocks_max()
        Image.core.set_blocks_max(max(blocks, 4 * workers))
        if _SETTINGS["batches"] == 0:
            blas_as_before = one_blas_thread()

            def process_as_before() -> None:
                blas_as_before()
                Image.core.set_blocks_max(blocks)
            _SETTINGS["as_before"] = process_as_before
        _SETTINGS["batches"] += 1

    def as_before() -> None:
        with _SETTINGS_LOCK:
            _SETTINGS["batches"] -= 1
            if _SETTINGS["batches"] == 0:
                process_as_before, _SETTINGS["as_before"] = _SETTINGS["as_before"], None
                process_as_before()
    return as_before


def run_batch(backend: Backend, jobs: list[Job], overwrite: bool = False, strength: float = 1.0,
              progress: bool = True, max_pixels: int = MAX_PIXELS, workers: int | None = None) -> Summary:
    """Harmonize every job; never raises for one job's failure. Decoding, the network and encoding
    overlap (`_Pipeline`, `workers` threads a stage: default this machine's cores), with at most one
    picture more than `workers` decoded at once. Ctrl-C stops after the outputs being written, and the
    summary counts what was left (`not_started`)."""
    summary, todo = triage(jobs, overwrite)
    remove_stale_parts(jobs)
    _return_freed_buffers()
    bar = Progress(len(todo), "harmonize", enabled=progress)
    errors = (HarmonizeError, OSError, ValueError, MemoryError)
    workers = workers or os.cpu_count() or 1
    pipe = _Pipeline(backend, max_pixels, strength, workers, held=workers + 1)
    loads: deque[tuple[Job, Future]] = deque()
    saves: deque[tuple[Job, Future]] = deque()
    submitted, done, start = 0, 0, time.monotonic()
    settings_as_before = _batch_settings(workers)

    def settle(limit: int) -> None:
        while len(saves) > limit or (saves and saves[0][1].done()):
            job, fut = saves.popleft()
            try:
                fut.result()
                summary.ok += 1
            except errors as exc:
                summary.fail(job.output, exc)

    def refill(wait: bool) -> None:
        """Submit loads in job order, each with its slot taken here, first: with several loaders, a later
        picture taking the slot an earlier one waited for would leave the caller waiting on it for ever.
        Waits for a writer to free a slot only when no load is pending (`wait`)."""
        nonlocal submitted
        while submitted < len(todo) and len(loads) < pipe.held:
            if not pipe.slots.acquire(blocking=wait and not loads):
                return
            loads.append((todo[submitted], pipe.load(todo[submitted])))
            submitted += 1

    try:
        refill(wait=True)
        while loads:
            job, fut = loads.popleft()
            refill(wait=False)
            try:
                loaded = fut.result()
                pic, prepared = loaded
                loaded.clear()  # the future keeps the list, not the picture (see _Pipeline._write)
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
            settle(workers)
            done += 1
            bar.update(done, f"{len(summary.failed)} failed" if summary.failed else job.composite.name)
            refill(wait=True)
    except KeyboardInterrupt:
        for _, fut in loads:
            fut.cancel()
        summary.not_started = len(todo) - done
    finally:
        try:
            settle(0)  # outputs already being written are finished, never left half-done
        finally:  # and the process is put back as it was, whatever a writer raised
            pipe.close()
            bar.close()
            settings_as_before()
            summary.seconds = time.monotonic() - start
    return summary
