"""`harmonize train`: train an FMM configuration on synthetic composites and/or iHarmony4.

Checkpoints hold the configuration, weights, optimizer state and step; they are written atomically
so an interrupted run resumes from the last one with `--resume`.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path
from ..errors import InputError
from ..network.model import FMMNet, create_model
from ..progress import Progress
from .batched import PlanStream, collate, render_batch
from .config import TrainConfig
from .datasets import load_triple, read_iharmony4
from .synthetic import SyntheticComposites


class IHarmony4Crops(Dataset):
    """iHarmony4 training triples as an endless stream, the paper's augmentation: short side 1.64-2x
    size, random crop, flip. Each pass visits every triple once, in an order and with crops drawn
    from (seed, pass), so a run repeats exactly (a resumed run is seeded by its step, as the
    synthetic stream is)."""

    def __init__(self, root: str | Path, size: int, seed: int = 0):
        self.triples, self.size, self.seed = read_iharmony4(root, "train"), size, seed

    def __len__(self) -> int:
        return 10**9  # the trainer counts steps

    def __getitem__(self, index: int):
        n = len(self.triples)
        epoch, position = divmod(index, n)
        i = np.random.default_rng((self.seed, epoch)).permutation(n)[position]
        rng = np.random.default_rng((self.seed, epoch, int(i)))
        comp, mask, real = load_triple(self.triples[i])
        short = int(self.size * rng.uniform(1.64, 2.0))
        h, w = mask.shape
        s = short / min(h, w)
        nw, nh = max(self.size, round(w * s)), max(self.size, round(h * s))
        y0, x0 = rng.integers(0, nh - self.size + 1), rng.integers(0, nw - self.size + 1)
        box_flip = rng.random() < 0.5

        def prep(a: np.ndarray, resample) -> np.ndarray:
            img = Image.fromarray(a).resize((nw, nh), resample)
            a = np.asarray(img, np.float32)[y0:y0 + self.size, x0:x0 + self.size] / 255
            a = a[:, ::-1] if box_flip else a
            return np.ascontiguousarray(a.transpose(2, 0, 1) if a.ndim == 3 else a[None])

        m = prep((mask * 255).astype(np.uint8), Image.NEAREST)
        return prep(comp, Image.BICUBIC), (m > 0.5).astype(np.float32), prep(real, Image.BICUBIC)


class Interleaved(Dataset):
    """Endless streams taken in turn: sample k comes from stream k mod len(streams)."""

    def __init__(self, streams: list[Dataset]):
        self.streams = streams

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, index: int):
        stream, k = index % len(self.streams), index // len(self.streams)
        return self.streams[stream][k]


def foreground_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error over foreground pixels: (B,), the training form of fMSE."""
    return ((pred - target) ** 2 * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * 3).clamp(min=1)


# NOTE: 1e-5 on [0, 1] is 0.65 on 0..255: errors below it count as perfect (a PSNR cap near 50 dB).
LOG_EPS = 1e-5


def loss_value(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The training loss. "fmse" and "mse" weigh every squared error alike, so badly-off composites
    dominate; "psnr" is the mean of log foreground MSE, the per-image scale of mean PSNR, so keeping
    a composite that is nearly right counts as much as rescuing one that is far off."""
    if kind == "fmse":
        return foreground_mse(pred, target, mask).mean()
    if kind == "mse":
        return torch.mean((pred - target) ** 2)
    if kind == "psnr":
        return torch.log10(foreground_mse(pred, target, mask) + LOG_EPS).mean()
    raise ValueError(f"loss must be fmse, mse or psnr, not {kind!r}")


def save_checkpoint(path: Path, model: FMMNet, optimizer, step: int, config: dict, seed: int,
                    elapsed: float = 0.0) -> None:
    """Write a checkpoint atomically (temporary file, then rename); `elapsed` is the training time so far."""
    with atomic_path(path) as tmp:
        torch.save(dict(config=config, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        step=step, seed=seed, elapsed=elapsed), tmp)


def slim_checkpoint(src: str | Path, out: str | Path, half: bool = False) -> Path:
    """A copy of a checkpoint without its optimizer state (a third of its size), the weights in float16
    with `half`: what a training machine sends back and the next round resumes from."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    model = {k: v.half() if half and v.is_floating_point() else v for k, v in ckpt["model"].items()}
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save({**{k: v for k, v in ckpt.items() if k != "optimizer"}, "model": model}, tmp)
    return out


def train(out: str | Path, settings: TrainConfig) -> Path:
    """Train and checkpoint to `out`; returns its path."""
    c = settings
    for flag, minutes in (("--minutes", c.minutes), ("--pause-after", c.pause_after)):
        if minutes is not None and minutes <= 0:
            raise InputError(f"{flag} must be more than 0, not {minutes}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(c.seed)
    ckpt = torch.load(out, map_location="cpu", weights_only=True) if c.resume and out.exists() else None
    model, seed, start = start_model(c, ckpt)
    fixed_shapes(c.device)
    model.to(c.device).train()
    opt = make_optimizer(model, c, ckpt)
    loader = make_loader(c, model.config["size"], seed + start)
    clock = Clock(c.minutes, spent=ckpt.get("elapsed", 0.0) if ckpt is not None else 0.0, pause=c.pause_after)
    if ckpt is not None:  # said, since a stale checkpoint would otherwise go on (or stop) unseen
        spent = f", {clock.spent / 60:.2f} of its {c.minutes:g} min spent" if c.minutes else ""
        print(f"{out}: goes on from step {start}{spent}", file=sys.stderr, flush=True)
        if not clock.left():
            print(f"{out}: its minutes are spent, nothing to train (give more --minutes, or remove it to start "
                  f"again)", file=sys.stderr, flush=True)
    try:
        step = run_steps(model, opt, loader, c, clock, start,
                         lambda step: save_checkpoint(out, model, opt, step, model.config, seed, clock.elapsed()))
    finally:
        if hasattr(loader, "close"):  # a stream making ahead in a thread
            loader.close()
    save_checkpoint(out, model, opt, step, model.config, seed, clock.elapsed())
    print(clock.summary(step - start, c.batch_size) + f", at step {step}", file=sys.stderr, flush=True)
    return out


def fixed_shapes(device: str) -> None:
    """Let cuDNN time its convolution algorithms once and keep the fastest: every training step has the same
    shapes, so the first step's search pays for itself."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def start_model(c: TrainConfig, ckpt: dict | None) -> tuple[FMMNet, int, int]:
    """The model to train, its seed and first step: the checkpoint's when resuming, else a new one of the
    configuration (with `init`'s weights for a fine-tune)."""
    if ckpt is not None:
        model = FMMNet(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
        return model, ckpt["seed"], ckpt["step"]
    model = create_model(c.config, **({"size": c.size} if c.size else {}))
    if c.init is not None:  # fine-tune: weights from another run, this configuration's forward
        source = torch.load(c.init, map_location="cpu", weights_only=True)
        model.load_state_dict(source["model"])
        if source["config"].get("prior", 0.0) != model.config.get("prior", 0.0) and model.head == "affine":
            with torch.no_grad():  # its corrections were relative to another prior: start again at zero
                model.out[-1].weight.zero_()
                model.out[-1].bias.zero_()
    return model, c.seed, 0


def make_optimizer(model: FMMNet, c: TrainConfig, ckpt: dict | None) -> torch.optim.Optimizer:
    """Adam or Adadelta (the paper's) at `c.lr`, with the checkpoint's state when resuming."""
    if c.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=c.lr, fused=True)  # one kernel for all parameters
    elif c.optimizer == "adadelta":
        opt = torch.optim.Adadelta(model.parameters(), lr=c.lr)
    else:
        raise InputError(f"optimizer must be 'adam' or 'adadelta', not {c.optimizer!r}")
    if ckpt is not None and "optimizer" in ckpt:  # a slimmed checkpoint starts the optimizer afresh
        opt.load_state_dict(ckpt["optimizer"])
    return opt


def match_layout(opt: torch.optim.Optimizer) -> None:
    """Each optimizer state tensor in its parameter's memory layout."""
    # NOTE: a run resumed in the other layout (channels-last or not) loads its Adam moments as saved, and fused
    # Adam pairs parameter and moments by memory: on the CPU silently wrong values, on CUDA an error
    for p, state in opt.state.items():
        for k, v in state.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                state[k] = torch.empty_like(p).copy_(v)


def render_where(c: TrainConfig) -> str:
    """Where a run's composites are made (loader, device or resident): --render, auto being resident on a GPU
    with synthetic data only, else the loader."""
    if c.render not in ("auto", "loader", "device", "resident"):
        raise InputError(f"--render must be auto, loader, device or resident, not {c.render!r}")
    synthetic_only = c.data is not None and c.iharmony4 is None
    if c.render in ("device", "resident") and not synthetic_only:
        raise InputError(f"--render {c.render} makes synthetic composites only: give --data, and no --iharmony4")
    if c.render == "auto":
        return "resident" if synthetic_only and c.device.startswith("cuda") else "loader"
    return c.render


def make_loader(c: TrainConfig, size: int, seed: int):
    """Batches of (composite, mask, real) at `size`: synthetic composites from photos and/or iHarmony4
    crops, taken in turn (a DataLoader), or drawn and made on the device (a ResidentStream); a resumed run is
    seeded by its step, so its stream goes on rather than repeats."""
    where = render_where(c)
    recipe = dict(strong=c.strong_edits, mild=c.mild, restyle=c.restyle, closeup=c.closeup,
                  same_category=c.same_category, time_of_day=c.time_of_day,
                  transfers=tuple(t.strip() for t in c.transfers.split(",")))
    if c.make_ahead and where != "resident":
        raise InputError("--make-ahead makes the composites of --render resident; this run renders them "
                         f"{'in the loader' if where == 'loader' else 'on the device from the loader'}")
    if where == "resident":
        from .resident import MadeAhead, Recipe, ResidentStream, resident_pictures

        try:
            stream_recipe = Recipe(**recipe)
        except ValueError as exc:  # a share out of 0..1, named as its option
            raise InputError(f"--{str(exc).replace('_', '-')}") from None
        stream = ResidentStream(resident_pictures(c.data, size, c.device, c.more_data, c.extra_data),
                                stream_recipe, c.batch_size, seed)
        return MadeAhead(stream) if c.make_ahead else stream
    sets: list[Dataset] = []
    if c.data is not None:
        try:
            sets.append(SyntheticComposites(c.data, size, seed=seed, more=c.more_data, extra=c.extra_data, **recipe))
        except InputError:
            raise
        except ValueError as exc:  # a share out of 0..1, named as its option
            raise InputError(f"--{str(exc).replace('_', '-')}") from None
    if c.iharmony4 is not None:
        sets.append(IHarmony4Crops(c.iharmony4, size, seed=seed))
    if not sets:
        raise InputError("give training data: --data (synthetic from photos) and/or --iharmony4 ROOT")
    data, collate_fn = (sets[0] if len(sets) == 1 else Interleaved(sets)), None
    if where == "device":
        data, collate_fn = PlanStream(sets[0]), collate
    return DataLoader(data, batch_size=c.batch_size, shuffle=False, num_workers=c.workers, drop_last=True,
                      persistent_workers=c.workers > 0, collate_fn=collate_fn)


def to_device(batch, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A loader batch as (composite, mask, real) on `device`: made there from plans (--render device), or moved."""
    if isinstance(batch, dict):
        return render_batch(batch, device)
    return tuple(t.to(device) for t in batch)


class Clock:
    """A run's training time, carried across resumes, and its budget (`minutes`, or None: steps only);
    `pause` minutes end this process's share of it early."""

    def __init__(self, minutes: float | None, spent: float = 0.0, pause: float | None = None):
        self.budget = minutes * 60 if minutes else None
        self.spent, self.started, self.pause = spent, time.monotonic(), pause * 60 if pause else None
        self.first_step: float | None = None  # when this process's first step was done

    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.started

    def summary(self, steps: int, batch_size: int) -> str:
        """This process's steps and time, and its rate once the first step was done (the loader started)."""
        ran = time.monotonic() - self.started
        line = f"{steps} steps in {ran:.0f} s"
        if self.first_step is not None and steps > 1:
            rate = (steps - 1) / max(time.monotonic() - self.first_step, 1e-9)
            line += f" ({rate:.2f} steps/s, {rate * batch_size:.0f} samples/s after the first)"
        return line

    def left(self) -> bool:
        if self.pause is not None and time.monotonic() - self.started >= self.pause:
            return False
        return self.budget is None or self.elapsed() < self.budget


def use_bf16(c: TrainConfig) -> bool:
    """Whether a run trains under bfloat16 autocast: --precision, auto being bf16 on a GPU."""
    return c.precision == "bf16" or (c.precision == "auto" and c.device.startswith("cuda"))


def train_step(model: FMMNet, opt, c: TrainConfig, comp: torch.Tensor, mask: torch.Tensor,
               real: torch.Tensor) -> torch.Tensor:
    """One optimisation step on a batch (under bf16 autocast or channels-last as `c` says); returns the loss,
    still on the device (reading it waits for the GPU)."""
    if c.channels_last:
        comp, mask = (t.contiguous(memory_format=torch.channels_last) for t in (comp, mask))
    with torch.autocast(torch.device(c.device).type, dtype=torch.bfloat16, enabled=use_bf16(c)):
        pred = model.harmonize(comp, mask)
    value = loss_value(c.loss, pred.float(), real, mask)  # the loss and its statistics in float32
    opt.zero_grad(set_to_none=True)
    value.backward()
    opt.step()
    return value.detach()


def run_steps(model: FMMNet, opt, loader, c: TrainConfig, clock: Clock, start: int, save) -> int:
    """Optimise from step `start` until `c.steps` (or `c.until`) or the time budget; the cosine learning
    rate follows the step, or with a budget the time spent, so a resumed run keeps its schedule.
    `save(step)` every `c.save_every` steps. Returns the last step."""
    budget = clock.budget
    progress = Progress(round(budget), "train (s)", initial=round(clock.spent)) if budget else \
        Progress(c.steps, "train", initial=start)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    match_layout(opt)
    step, it, running, pending = start, iter(loader), None, []
    stop = min(c.steps, c.until) if c.until is not None else c.steps  # `until` ends early, same schedule
    # NOTE: on a GPU the loss is read every 10 steps, not every step: each read waits for the GPU to finish
    report_every = 10 if c.device.startswith("cuda") else 1
    while step < stop and clock.left():
        try:
            comp, mask, real = to_device(next(it), c.device)
        except StopIteration:
            it = iter(loader)
            continue
        done = min(clock.elapsed() / budget, 1.0) if budget else step / c.steps
        for group in opt.param_groups:
            group["lr"] = c.lr * 0.5 * (1 + math.cos(math.pi * done))
        pending.append(train_step(model, opt, c, comp, mask, real))
        step += 1
        if clock.first_step is None:
            clock.first_step = time.monotonic()
        if len(pending) >= report_every or step >= stop:
            for value in torch.stack(pending).tolist():
                running = value if running is None else 0.98 * running + 0.02 * value
            pending = []
            shown = f"fg PSNR {-10 * running:.2f} dB" if c.loss == "psnr" else f"loss {running * 255**2:.1f}"
            if budget:
                progress.update(min(round(clock.elapsed()), round(budget)), f"step {step} {shown}")
            else:
                progress.update(step, shown)
        if step % c.save_every == 0 and step < stop:
            save(step)
    progress.close()
    return step


def average_checkpoints(paths: list[str | Path], out: str | Path, lab_mix: float | None = None) -> Path:
    """One network whose weights are the mean of several runs fine-tuned from the same start (a
    "model soup"): it averages away much of what each run learnt by chance, at no cost at run time.
    `lab_mix` sets how much of the Lab statistics transfer's map the soup's answers are averaged with."""
    if len(paths) < 2:
        raise InputError("give at least two checkpoints to average")
    ckpts = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    config = ckpts[0]["config"]
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        if ckpt["config"] != config:
            raise InputError(f"{path}: configuration {ckpt['config']} differs from {paths[0]}'s {config}")
    if lab_mix is not None:
        config = {**config, "lab_mix": lab_mix}
        try:  # a lab_mix out of range or on the image head is refused before anything is written
            FMMNet(**config)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    state = {}
    for key, first in ckpts[0]["model"].items():
        if first.is_floating_point():
            state[key] = (sum(c["model"][key].double() for c in ckpts) / len(ckpts)).to(first.dtype)
        else:  # counters such as BatchNorm's num_batches_tracked
            state[key] = first
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(dict(config=config, model=state, step=max(c["step"] for c in ckpts), seed=ckpts[0]["seed"],
                        averaged=[Path(p).name for p in paths]), tmp)
    return out
