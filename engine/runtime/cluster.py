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
import warnings
from collections import deque
from dataclasses import dataclass

from ..errors import HarmonizeError, require
from ..imageio import MAX_PIXELS
from ..progress import Progress
from .batch import Summary, run_batch, triage
from .plan import Job

log = logging.getLogger("engine")
RETRIES = 2  # runs of a batch after the first, when its actor died under it
PROBES = 240  # asks, 0.5 s apart, whether a restarting actor is back before it is given up
WAIT_LINE = 30.0  # seconds between the lines that say what actors not yet started wait for
MIN_GRACE = 10.0  # seconds the other actors get once the first has started


class HarmonizeActor:
    """Holds one backend for the actor's life; `run` harmonizes a batch of jobs and returns its summary."""

    def __init__(self, backend: str, model: str | None, gpus: float, cpus: int, device: str = "auto"):
        from ..models import DEFAULT_MODEL, shipped
        from ..tensorrt.lookup import default_engine_path
        from .backends import choose, load

        if backend in ("auto", "tensorrt") and model is None and gpus and device != "cpu":
            engine = default_engine_path(DEFAULT_MODEL)  # a GPU node with TensorRT but no engine yet: build it once
            if engine is not None and not engine.exists():
                from ..tensorrt.build import build_engine

                build_engine(shipped("onnx-fp16"), engine)
        choice = choose(model, device, backend)
        # ONNX Runtime would take every core of the node for each actor; give it the actor's share.
        threads = {"threads": cpus} if choice.backend == "onnxruntime" else {}
        self.backend = load(choice.backend, model, choice.device, **threads)

    def ready(self) -> str:
        """Which backend this actor runs, once it has loaded it."""
        return f"{self.backend.name} (pid {os.getpid()})"

    def run(self, jobs: list[Job], strength: float, max_pixels: int) -> Summary:
        return run_batch(self.backend, jobs, overwrite=True, strength=strength, progress=False,
                         max_pixels=max_pixels)


@dataclass(frozen=True)
class RayOptions:
    """Where and how a batch runs on Ray: the cluster (None: a local Ray started for the run), how many
    actors, the GPUs each needs, how many jobs go to an actor at a time, and the device its model runs on."""

    address: str | None = None
    actors: int = 2
    gpus_per_actor: float = 0.0
    batch_size: int = 4
    device: str = "auto"


@dataclass
class _Task:
    """What a pending Ray call is: a batch run on an actor (`batch`), or a probe of whether a restarting
    actor is back (`batch` None), and how often it was tried."""

    actor: object
    batch: list[Job] | None
    tries: int = 0

    @property
    def probe(self) -> bool:
        return self.batch is None


def run_on_ray(jobs: list[Job], backend: str = "auto", model: str | None = None, *, ray: RayOptions = RayOptions(),
               overwrite: bool = False, strength: float = 1.0, progress: bool = True,
               max_pixels: int = MAX_PIXELS) -> Summary:
    """Harmonize `jobs` on Ray actors with the rules of `run_batch`: join the cluster at `ray.address`,
    or start a local Ray without one."""
    lib = require("ray", "ray")
    summary, todo = triage(jobs, overwrite)
    if not todo:
        return summary
    if ray.address:
        _join(lib, ray.address)
    else:  # a local Ray sized for the actors; the driver's own work is light
        lib.init(num_cpus=max(ray.actors, 1), num_gpus=None, include_dashboard=False, logging_level=logging.WARNING)
    try:
        pool = _start_actors(lib, backend, model, ray)
        return _drive(lib, pool, todo, summary, ray.batch_size, (strength, max_pixels), progress)
    finally:
        lib.shutdown()


def _join(lib, address: str) -> None:
    """Join the cluster at `address`, or say why not, before any work (Ray's own error names neither the
    token nor the address to check)."""
    where = ("the head's Ray Client port, 10001 unless `ray start --head --ray-client-server-port` chose another"
             if address.startswith("ray://") else
             "the head's host:port, as `ray start --head` prints it, or auto on a node")
    try:
        with warnings.catch_warnings():  # Ray Client's own timeout warning: the error below says it, and more
            warnings.filterwarnings("ignore", category=UserWarning, module="ray.util.client")
            lib.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:  # ValueError: Ray Client without its packages
        raise HarmonizeError(
            f"cannot join the Ray cluster at {address} ({exc}): check the address ({where}) and, where the "
            "cluster has token authentication (`ray start --head` turns it on), that RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH gives its token") from None


def _start_actors(lib, backend: str, model: str | None, ray: RayOptions) -> list:
    """The actors, each with its backend loaded; a backend that cannot load fails here once, with its
    reason, not once per batch."""
    cpus = 1
    actor_class = lib.remote(num_cpus=cpus, num_gpus=ray.gpus_per_actor, max_restarts=RETRIES,
                             max_task_retries=0)(HarmonizeActor)
    pool = [actor_class.remote(backend, model, ray.gpus_per_actor, cpus, ray.device) for _ in range(max(ray.actors, 1))]
    try:
        return _started(lib, pool, cpus, ray.gpus_per_actor)
    except lib.exceptions.RayActorError as exc:
        raise HarmonizeError(f"a Ray actor could not start: {exc}") from None


def _started(lib, pool: list, cpus: int, gpus: float) -> list:
    """The actors that start: every one, or, where the cluster holds fewer, those up within a grace after the
    first (the rest are let go, and the run goes on with fewer); until the first is up, a line every
    WAIT_LINE seconds says what the actors wait for, since Ray itself waits for ever without a word."""
    refs = {a.ready.remote(): a for a in pool}
    pending, up, names, start = list(refs), [], [], time.monotonic()

    def take(done: list) -> None:
        for ref in done:
            names.append(lib.get(ref))
            up.append(refs[ref])

    while not up:
        done, pending = lib.wait(pending, num_returns=1, timeout=WAIT_LINE)
        take(done)
        if not done:
            total, free = lib.cluster_resources(), lib.available_resources()
            log.warning("ray: waiting %.0f s for %d actors, each needing %d CPU%s: the cluster has %g CPUs (%g free)"
                        " and %g GPUs (%g free)", time.monotonic() - start, len(pool), cpus,
                        f" and {gpus:g} GPU" if gpus else "", total.get("CPU", 0), free.get("CPU", 0),
                        total.get("GPU", 0), free.get("GPU", 0))
    if pending:  # the others get twice as long as the first took, at least MIN_GRACE
        done, pending = lib.wait(pending, num_returns=len(pending),
                                 timeout=max(MIN_GRACE, 2 * (time.monotonic() - start)))
        take(done)
    for ref in pending:
        lib.kill(refs[ref])
    if pending:
        log.warning("ray: %d of %d actors started (the cluster has %g CPUs, each actor takes %d); going on with %d",
                    len(up), len(pool), lib.cluster_resources().get("CPU", 0), cpus, len(up))
    log.info("ray: %d actors on %s", len(up), ", ".join(names))
    return up


def _drive(lib, pool: list, todo: list[Job], summary: Summary, batch_size: int, work: tuple[float, int],
           progress: bool) -> Summary:
    """Feed batches to idle actors until every job is done or has failed; an actor that dies has its
    batch run again (up to RETRIES times) and is probed until Ray has restarted it."""
    queue = deque((todo[i:i + batch_size], 0) for i in range(0, len(todo), batch_size))
    running: dict[object, _Task] = {}  # object ref -> what it is
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

    def failed(batch: list[Job], why: str) -> Summary:
        return Summary(failed=[(j.composite, why) for j in batch])

    try:
        while any(not t.probe for t in running.values()) or (queue and (idle or running)):
            while idle and queue:
                batch, tries = queue.popleft()
                actor = idle.popleft()
                running[actor.run.remote(batch, *work)] = _Task(actor, batch, tries)
            ref = lib.wait(list(running), num_returns=1)[0][0]
            task = running.pop(ref)
            try:
                part = lib.get(ref)
            except lib.exceptions.RayActorError as exc:  # died, or still restarting after a death
                part = None
                gone = task.probe and (isinstance(exc, lib.exceptions.ActorDiedError) or task.tries >= PROBES)
                if not gone:  # ask again until Ray has it back
                    time.sleep(0.5)
                    running[task.actor.ready.remote()] = _Task(task.actor, None, task.tries + 1 if task.probe else 0)
            except lib.exceptions.RayTaskError as exc:  # a bug, not a bad file: report it for these jobs
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                part = failed(task.batch or [], f"{type(cause).__name__}: {cause}")
            if task.probe:  # a probe answered: the actor is back (or gone for good, and left out)
                if part is not None:
                    idle.append(task.actor)
                continue
            if part is None:  # the batch's actor died under it
                if task.tries < RETRIES:
                    log.warning("an actor died running %d jobs; running them again", len(task.batch))
                    queue.appendleft((task.batch, task.tries + 1))
                else:
                    finish(task.batch, failed(task.batch, "its Ray actor died on every try"))
                continue
            idle.append(task.actor)
            finish(task.batch, part)
        for batch, _ in queue:  # only when every actor is gone
            finish(batch, failed(batch, "no Ray actor is left to run it"))
    except KeyboardInterrupt:
        for ref in running:
            lib.cancel(ref, force=True)
        summary.not_started = len(todo) - done
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
    return summary
