"""The `harmonize` command: one function per verb, heavy imports inside the verb that needs them."""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import HarmonizeError

log = logging.getLogger("engine")


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    path = train(
        args.out, config=args.config, data_root=args.data, iharmony4=args.iharmony4,
        batch_size=args.batch_size, steps=args.steps, lr=args.lr, optimizer=args.optimizer,
        loss=args.loss, resume=args.resume, device=args.device, workers=args.workers, seed=args.seed,
        size=args.size,
    )
    print(f"checkpoint: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harmonize", description="FMM image harmonization.")
    p.add_argument("--version", action="version", version=f"fmm-harmonize {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True)

    t = sub.add_parser("train", help="train a configuration (needs the 'train' extra)")
    t.add_argument("--config", default="small", help="paper, small or tiny (default small)")
    t.add_argument("--data", help="folder of training photos and masks (../shared/data layout)")
    t.add_argument("--iharmony4", help="iHarmony4 root: train on its *_train.txt lists")
    t.add_argument("--out", required=True, help="checkpoint path, rewritten atomically")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", choices=["adam", "adadelta"], default="adam")
    t.add_argument("--loss", choices=["fmse", "mse"], default="fmse",
                   help="foreground MSE per sample (default) or whole-image MSE (the paper's)")
    t.add_argument("--size", type=int, help="working resolution (default: the configuration's)")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--workers", type=int, default=1, help="data loader processes")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except HarmonizeError as exc:
        print(f"harmonize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harmonize: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
