"""A training run's settings as data: `TrainConfig` is what `train()` takes, and its fields, with
their defaults and help, are `harmonize train`'s options (no torch needed to read them)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

CPU_CONFIG = "small"  # the configuration a run trains by default: the one that trains on 2 CPU cores. The
# shipped model (engine/models.py DEFAULT_MODEL) is the wider `medium`, trained on a GPU.


def _option(default, help: str, **argparse_kwargs):
    return field(default=default, metadata=dict(help=help, **argparse_kwargs))


@dataclass
class TrainConfig:
    """Everything a run needs but its output path. The paper's recipe: config="paper",
    iharmony4=ROOT, batch_size=24, optimizer="adadelta", lr=1.0, loss="mse"."""

    config: str = _option(CPU_CONFIG, "paper, paper-affine, wide, medium, small or tiny")
    data: str | None = _option(None, "folder of training photos and masks (../shared/data layout)")
    iharmony4: str | None = _option(None, "iHarmony4 root: train on its *_train.txt lists")
    batch_size: int = _option(16, "samples per step")
    steps: int = _option(4000, "length of the learning-rate schedule")
    until: int | None = _option(None, "stop at this step (the schedule still spans --steps)")
    pause_after: float | None = _option(None, "stop this process after this many minutes, checkpointed to resume "
                                        "(the schedule still spans --steps or --minutes)")
    minutes: float | None = _option(None, "train this long instead (wall clock, resumes included): the schedule "
                                    "spans the time, and --steps only caps the steps")
    lr: float = _option(1e-3, "peak learning rate (cosine decay over --steps, or --minutes)")
    optimizer: str = _option("adam", "adam or adadelta (the paper's)", choices=("adam", "adadelta"))
    loss: str = _option("fmse", "foreground MSE per sample, whole-image MSE (the paper's), or log foreground "
                        "MSE (the scale of mean PSNR)", choices=("fmse", "mse", "psnr"))
    size: int | None = _option(None, "working resolution (default: the configuration's)")
    resume: bool = _option(False, "continue from --out if it exists")
    init: str | None = _option(None, "start from this checkpoint's weights (fine-tuning)")
    strong_edits: bool = _option(False, "synthetic composites about as far off as real ones (2-4 wider edits)")
    mild: float = _option(0.0, "share of synthetic composites whose edit is scaled down to 0-30 %%")
    restyle: float = _option(0.0, "share of synthetic composites made the HAdobe5k way: photo and object each "
                             "get their own edit, the edited photo is the target")
    closeup: float = _option(0.0, "share of views cropped close around the object, so that it fills much of "
                             "the picture as pasted layers often do")
    same_category: float = _option(0.0, "share of synthetic composites made as iHarmony4's HCOCO was: the object "
                                   "takes the colours of an object of the same category in another photo")
    transfers: str = _option("reinhard", "colour transfers a same-category composite draws from, comma-separated: "
                             "reinhard (Lab statistics), histogram (matching per channel), idt (Pitie's iterative "
                             "distribution transfer)")
    time_of_day: float = _option(0.0, "share of synthetic composites made as iHarmony4's Hday2night was: the object "
                                 "lit at another time of day (its light's colour temperature and strength)")
    render: str = _option("auto", "where synthetic composites are made: in the loader's workers a sample at a time "
                          "(loader); on --device a batch at a time from what the workers draw (device); or drawn "
                          "and made on --device from pictures decoded once and kept there, no workers (resident, "
                          "the trainer that keeps a GPU busy); auto: resident when --device is a GPU and the data "
                          "are synthetic only, else loader", choices=("auto", "loader", "device", "resident"))
    precision: str = _option("auto", "bf16: the forward and backward passes under bfloat16 autocast; fp32; auto: "
                             "bf16 on a GPU, fp32 on the CPU", choices=("auto", "bf16", "fp32"))
    channels_last: bool = _option(False, "keep the network's activations channels-last (NHWC)")
    make_ahead: bool = _option(False, "with --render resident: make the next composites in a thread, on a CUDA "
                               "stream of their own, while the network trains")
    more_data: bool = _option(False, "also the permissive photos of coco-more/ (5 times the objects; "
                              "default: coco/ and photos/)")
    extra_data: bool = _option(False, "also the permissive photos of coco-extra/ (471 photos, most without object "
                               "masks: they get random object-like ones)")
    device: str = _option("cpu", "cpu or cuda")
    workers: int = _option(1, "data loader processes")
    seed: int = _option(0, "seed of the weights and of the synthetic stream")
    save_every: int = _option(200, "steps between checkpoints")


_TYPES = {"str": str, "int": int, "float": float}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (`batch_size` -> `--batch-size`), with its default and help."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(f.metadata)
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        if f.default is not None:
            kwargs["help"] += f" (default {f.default})"
        parser.add_argument(flag, type=_TYPES[f.type.split(" |")[0]], default=f.default, **kwargs)


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig a parsed `harmonize train` command line gives."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
