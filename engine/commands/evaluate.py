"""`harmonize eval`: MSE, PSNR and fMSE tables on iHarmony4 triples, published models beside ours; and
`harmonize heldout`: synthetic composites from photos no shipped weights train on, for eval."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import add_backend, add_quiet, add_verb


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import baselines, diagnosis, evaluate, losses, peers_table, table
    from ..runtime.backends import load
    from ..training.datasets import read_triples

    triples = read_triples(args.root, args.split)
    methods = baselines(transfers=not args.models_only)
    for spec in args.model or [None]:
        backend = load(args.backend, spec, args.device)
        methods[f"FMM {Path(spec).name if spec else 'shipped'} ({backend.name})"] = backend.harmonize
    results = evaluate(triples, methods, progress=not args.quiet)
    print(table(results, triples))
    print(diagnosis(results, triples))
    if args.peers:
        print(peers_table(results, args.peers, Path(args.root).resolve().name))
    if args.worst:
        print("\nPSNR full resolution, against the untouched composite:\n" + losses(results, args.worst))
    if args.json:
        Path(args.json).write_text(json.dumps({m: s.rows for m, s in results.items()}, indent=1))
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    from ..training.synthetic import write_heldout

    manifest = write_heldout(args.data, args.out, args.count, args.seed, args.recipe)
    print(f"wrote {manifest}; score models on it with: harmonize eval {args.out} --model FILE")
    return 0


def register(sub) -> None:
    e = add_verb(sub, "eval", cmd_eval, "MSE, PSNR, fMSE on iHarmony4 or a MANIFEST.csv folder")
    e.add_argument("root", help="iHarmony4 root or a folder with MANIFEST.csv")
    e.add_argument("--model", action="append", help="model file (.pt or .onnx); repeat to compare")
    add_backend(e)
    e.add_argument("--split", default="test", help="iHarmony4 list to use (default test)")
    e.add_argument("--json", help="also write per-triple scores here")
    e.add_argument("--peers", metavar="CSV", help="published models' per-triple scores (e.g. "
                   "../shared/bench/PEERS.csv) as rows beside ours, on the triples they cover")
    e.add_argument("--models-only", action="store_true", help="leave out the colour-transfer rows (faster)")
    e.add_argument("--worst", type=int, default=3, metavar="N",
                   help="name each method's N triples furthest below the composite (0: none)")
    add_quiet(e)

    h = add_verb(sub, "heldout", cmd_heldout,
                 "synthetic composites from held-out photos (those no run may train on), to choose models on")
    h.add_argument("--data", required=True, help="the ../shared/data folder")
    h.add_argument("-o", "--out", required=True, help="empty folder to write the composites and MANIFEST.csv into")
    h.add_argument("--count", type=int, default=120, help="composites to make (default 120)")
    h.add_argument("--recipe", choices=("edits", "iharmony4"), default="edits",
                   help="edits: strong random edits of coco-more's held-out photos (the 120 of rounds 1 to 5); "
                   "iharmony4: coco's and coco-more's held-out photos made as iHarmony4's subsets were (same-category "
                   "colour transfers, restyles, another hour's light), the proviso of round 6 on (500, seed 2027)")
    h.add_argument("--seed", type=int, default=2026, help="seed of the held-out composites (default 2026, the set "
                   "docs/results.md reports)")
