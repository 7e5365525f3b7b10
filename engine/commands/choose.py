"""`harmonize choose`: candidates against the shipped model by the rule of docs/results.md (gains that are
at least twice their paired standard error on real triples, held-out synthetic composites as a proviso)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..errors import InputError, require
from . import add_quiet, add_verb, unit


def with_lab_mix(checkpoint: str | Path, weight: float, folder: Path) -> Path:
    """A copy of a checkpoint whose answers are averaged with the Lab transfer's map at `weight`."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["config"] = {**ckpt["config"], "lab_mix": weight}
    out = folder / Path(checkpoint).name
    torch.save(ckpt, out)
    return out


def cmd_choose(args: argparse.Namespace) -> int:
    require("torch", "train")
    from ..evaluation.choose import report, verdict, write_csv
    from ..evaluation.evaluate import diagnosis, evaluate
    from ..evaluation.sheet import composites, contact_sheet, shift_summary
    from ..models import shipped
    from ..runtime.backends import load
    from ..training.datasets import read_triples

    for path in args.candidate:
        if not Path(path).exists():
            raise InputError(f"{path}: no such checkpoint")
    triples = [t for root in args.roots for t in read_triples(root)]
    if len({t.name for t in triples}) != len(triples):
        raise InputError(f"{', '.join(args.roots)}: two triples share a name; give folders of distinct triples")
    heldout = read_triples(args.heldout) if args.heldout else None
    pastes = composites(args.sheet[0]) if args.sheet else None  # refused here, before minutes of scoring
    with tempfile.TemporaryDirectory() as tmp:
        models = {"baseline": args.baseline or str(shipped("pt"))}
        for path in args.candidate:
            name = Path(path).stem
            models[name] = str(with_lab_mix(path, args.lab_mix, Path(tmp)) if args.lab_mix is not None else path)
        methods = {name: load("torch", path).harmonize for name, path in models.items()}
        real = evaluate(triples, methods, progress=not args.quiet)
        # NOTE: the held-out composites take most of the minutes, and the proviso can only turn a pass on the
        # real triples into a fail: they are scored for the baseline and the candidates that passed there
        held_for = [name for name in models if name != "baseline" and
                    (args.heldout_all or verdict(real["baseline"], real[name]).real_passes)]
        held = None
        if heldout and held_for:
            held = evaluate(heldout, {n: methods[n] for n in ["baseline", *held_for]}, progress=not args.quiet)
        elif heldout:
            print(f"{args.heldout}: not scored, no candidate passed on the real triples", file=sys.stderr)
        shifts = contact_sheet(pastes, methods, args.sheet[1], progress=not args.quiet) if args.sheet else None
    verdicts = {name: verdict(real["baseline"], real[name], held and held["baseline"], held and held.get(name))
                for name in models if name != "baseline"}
    print(report(verdicts))
    print(diagnosis(real, triples))
    if args.csv:
        write_csv(args.csv, verdicts)
    if shifts:
        print(shift_summary(shifts, pastes))
        print(f"contact sheet: {args.sheet[1]} (look for casts over large regions before shipping)")
    return 0


def register(sub) -> None:
    c = add_verb(sub, "choose", cmd_choose, "candidates against the shipped model: gains at least twice their paired "
                 "standard error on real triples, not losing on held-out synthetic composites (needs 'train')")
    c.add_argument("roots", nargs="+", help="folders of real triples (MANIFEST.csv or iHarmony4), scored together")
    c.add_argument("--candidate", action="append", required=True, help="checkpoint to judge; repeat for several")
    c.add_argument("--baseline", help="checkpoint to beat (default: the shipped weights)")
    c.add_argument("--heldout", help="folder of held-out synthetic composites (harmonize heldout): the proviso, "
                   "scored for the candidates that pass on the real triples")
    c.add_argument("--heldout-all", action="store_true", help="score the held-out composites for every candidate")
    c.add_argument("--lab-mix", type=unit, help="run every candidate in the Lab ensemble at this weight (the shipped "
                   "model's: 0.3); default: as each checkpoint says")
    c.add_argument("--csv", help="also write the verdicts here")
    c.add_argument("--sheet", nargs=2, metavar=("COMPOSITES", "JPG"), help="also a contact sheet of every model "
                   "on a folder of real composites (composites/, masks/, as ../shared/bench/real-composites), "
                   "written to JPG")
    add_quiet(c)
