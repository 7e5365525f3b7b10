"""`harmonize train`, `average` and `import`: making model files (need the 'train' extra)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError, require
from . import add_options_later, add_verb, positive, unit


def cmd_train(args: argparse.Namespace) -> int:
    require("torch", "train")
    from ..training.config import from_arguments
    from ..training.train import train

    print(f"checkpoint: {train(args.out, from_arguments(args))}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    require("torch", "train")
    from ..training.train import average_checkpoints

    for path in args.checkpoints:
        if not Path(path).exists():
            raise InputError(f"{path}: no such checkpoint")
    print(f"checkpoint: {average_checkpoints(args.checkpoints, args.out, args.lab_mix)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    require("torch", "train")
    from ..network.authors import import_authors

    print(f"checkpoint: {import_authors(args.checkpoint, args.out)} (the paper configuration; use it with --model)")
    return 0


def cmd_train_round(args: argparse.Namespace) -> int:
    require("torch", "train")
    from ..training.round import RoundFailed, train_round

    failed = False
    try:
        written = train_round(args.round, args.data, args.start, args.out, args.minutes, args.device,
                              batch_size=args.batch_size, channels_last=args.channels_last or None,
                              make_ahead=args.make_ahead or None, runs=args.runs)
    except RoundFailed as exc:
        written, failed = exc.written, True
        print(f"harmonize train-round: {exc}", file=sys.stderr)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 1 if failed else 0


def _train_options(p: argparse.ArgumentParser) -> None:
    from ..training.config import add_arguments

    add_arguments(p)


def register(sub) -> None:
    t = add_verb(sub, "train", cmd_train, "train a configuration (needs the 'train' extra)")
    t.add_argument("--out", required=True, help="checkpoint path, rewritten atomically")
    add_options_later(t, "train", _train_options)

    r = add_verb(sub, "train-round", cmd_train_round, "train a round's candidates one after another in one process, "
                 "on pictures decoded once on the device (needs 'train')")
    r.add_argument("round", help="the round's file of candidates (recipes/round-6.json)")
    r.add_argument("--data", required=True, help="folder of training photos and masks (../shared/data layout)")
    r.add_argument("--start", required=True, help="folder of a previous round's checkpoints that candidates go on from")
    r.add_argument("--out", required=True, help="folder for the slimmed checkpoints")
    r.add_argument("--runs", help="folder for the full checkpoints a round run again resumes from (default: OUT/runs)")
    r.add_argument("--minutes", type=positive, required=True, help="training time of the whole round, shared out")
    r.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    r.add_argument("--batch-size", type=int, help="in place of the round's (a dry run on the CPU)")
    r.add_argument("--channels-last", action="store_true", help="every candidate channels-last, whatever the round's "
                   "file says (where bench --train measured it faster on this machine)")
    r.add_argument("--make-ahead", action="store_true", help="every candidate's composites made ahead in a thread "
                   "(where bench --train measured it faster on this machine)")

    a = add_verb(sub, "average", cmd_average, "average the weights of runs fine-tuned from one start (needs 'train')")
    a.add_argument("checkpoints", nargs="+", help="checkpoints of one configuration")
    a.add_argument("-o", "--out", required=True, help="checkpoint to write")
    a.add_argument("--lab-mix", type=unit, help="average the network's colour map with the half-strength Lab "
                   "statistics transfer's at this weight (the shipped model: 0.3)")

    im = add_verb(sub, "import", cmd_import, "the FMM authors' released checkpoint as a model file (needs 'train')")
    im.add_argument("checkpoint", help="their network.pth ({'epoch', 'state_dict'}, keys Down1..Up3, FB_FMM)")
    im.add_argument("-o", "--out", required=True, help="checkpoint to write (.pt), for --model")
