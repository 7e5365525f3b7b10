"""`harmonize run --ray [ADDRESS]`: the same batch spread over Ray actors, on a cluster or a local Ray.

The driver plans exactly as the plain run does (the same jobs, checks and skips) and hands batches of jobs
to actors; each actor loads its backend once and runs `batch.run_batch` on its batch, so decoding,
harmonizing and the atomic writes happen on the actor's node and no pixel travels through the driver. A
failed file is a failure in the summary, never a failed job; an actor that dies is restarted by Ray and
its batch is run again (outputs are written by rename, or in one put to an object store, so a killed write
leaves no partial output). Every node must reach the paths: a shared filesystem, or fsspec URLs.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque

from .batch import Job, Summary, run_batch, triage
from ..errors import HarmonizeError, require
from ..imageio import MAX_PIXELS
from ..progress import Progress

log = logging.getLogger("engine")
RETRIES = 2  # runs of a batch after the first, when its actor died under it
PROBES = 240  # asks, 0.5 s apart, whether a restarting actor is back before it is given up


class HarmonizeActor:
    """Holds one backend for the actor's life; `run` harmonizes a batch of jobs and returns its summary."""

    def __init__(self, backend: str, model: str | None, gpus: float, cpus: int):
        from .backends import choose, default_engine_path, load

        if backend == "auto" and model is None and gpus and choose()[0] != "tensorrt":
            engine = default_engine_path()  # a GPU node with TensorRT but no engine yet: build it once
            if engine is not None:
                from .backends import default_model_path
                from ..tensorrt.build import build_engine

                build_engine(default_model_path("tensorrt"), engine)
        name = choose(model)[0] if backend == "auto" else backend
        # ONNX Runtime would take every core of the node for each actor; give it the actor's share.
        self.backend = load(name, model, **({"threads": cpus} if name == "onnxruntime" else {}))

    def ready(self) -> str:
        """Which backend this actor runs, once it has loaded it."""
        return f"{self.backend.name} (pid {os.getpid()})"

    def run(self, jobs: list[Job], strength: float, max_pixels: int) -> Summary:
        return run_batch(self.backend, jobs, overwrite=True, strength=strength, progress=False,
                         max_pixels=max_pixels)


def run_on_ray(jobs: list[Job], backend: str = "auto", model: str | None = None, address: str | None = None,
               actors: int = 2, gpus: float = 0.0, batch_size: int = 4, overwrite: bool = False,
               strength: float = 1.0, progress: bool = True, max_pixels: int = MAX_PIXELS) -> Summary:
    """Harmonize `jobs` on Ray: join the cluster at `address`, or start a local Ray without one."""
    ray = require("ray", "ray")
    summary, todo = triage(jobs, overwrite)
    if not todo:
        return summary
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:  # a local Ray sized for the actors; the driver's own work is light
        ray.init(num_cpus=max(actors, 1), num_gpus=None, include_dashboard=False, logging_level=logging.WARNING)
    try:
        return _drive(ray, todo, summary, backend, model, actors, gpus, batch_size, strength, progress, max_pixels)
    finally:
        ray.shutdown()


def _drive(ray, todo, summary, backend, model, actors, gpus, batch_size, strength, progress, max_pixels) -> Summary:
    cpus = 1
    actor_class = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=RETRIES, max_task_retries=0)(HarmonizeActor)
    pool = [actor_class.remote(backend, model, gpus, cpus) for _ in range(max(actors, 1))]
    try:  # a backend that cannot load fails here once, with its reason, not per batch
        log.info("ray: %d actors on %s", len(pool), ", ".join(ray.get([a.ready.remote() for a in pool])))
    except ray.exceptions.RayActorError as exc:
        raise HarmonizeError(f"a Ray actor could not start: {exc}") from None
    queue = deque((todo[i:i + batch_size], 0) for i in range(0, len(todo), batch_size))
    running: dict = {}  # object ref -> (actor, batch, tries); batch None: a probe of a restarting actor
    idle = deque(pool)
    bar = Progress(len(todo), "harmonize (ray)", enabled=progress)
    done, start = 0, time.monotonic()  # after the actors are up: what `seconds` reports

    def finish(batch: list[Job], part: Summary) -> None:
        nonlocal done
        summary.ok += part.ok
        summary.failed += part.failed
        done += len(batch)
        rate = done / max(time.monotonic() - start, 1e-9)
        bar.update(done, f"{rate:.1f} img/s" + (f", {len(summary.failed)} failed" if summary.failed else ""))

    try:
        while any(b is not None for _, b, _ in running.values()) or (queue and (idle or running)):
            while idle and queue:
                actor = idle.popleft()
                batch, tries = queue.popleft()
                running[actor.run.remote(batch, strength, max_pixels)] = (actor, batch, tries)
            ref = ray.wait(list(running), num_returns=1)[0][0]
            actor, batch, tries = running.pop(ref)
            try:
                part = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # died, or still restarting after a death
                part = None
                gone = batch is None and (isinstance(exc, ray.exceptions.ActorDiedError) or tries >= PROBES)
                if not gone:  # ask again until Ray has it back
                    time.sleep(0.5)
                    running[actor.ready.remote()] = (actor, None, tries + 1 if batch is None else 0)
            except ray.exceptions.RayTaskError as exc:  # a bug, not a bad file: report it for these jobs
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                part = Summary(failed=[(j.composite, f"{type(cause).__name__}: {cause}") for j in batch or []])
            if batch is None:  # a probe answered: the actor is back (or gone for good, and left out)
                if part is not None:
                    idle.append(actor)
                continue
            if part is None:  # the batch's actor died under it
                if tries < RETRIES:
                    log.warning("an actor died running %d jobs; running them again", len(batch))
                    queue.appendleft((batch, tries + 1))
                else:
                    finish(batch, Summary(failed=[(j.composite, "its Ray actor died on every try") for j in batch]))
                continue
            idle.append(actor)
            finish(batch, part)
        for batch, _ in queue:  # only when every actor is gone
            finish(batch, Summary(failed=[(j.composite, "no Ray actor is left to run it") for j in batch]))
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        summary.not_started = len(todo) - done
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
    return summary
