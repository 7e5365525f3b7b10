"""`harmonize run`: harmonize an image, a folder or a CSV list, headless, here or on Ray actors."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import InputError
from ..imageio import DEEP_EXTRA, MASK_RULE, MB_PER_MEGAPIXEL
from . import add_backend, add_model, add_quiet, add_verb, positive, unit

log = logging.getLogger("engine")


def jobs_of(args: argparse.Namespace) -> list:
    """The jobs a command line asks for: one composite, a folder with a mask folder, or a CSV list."""
    from ..paths import as_path, exists
    from ..runtime.plan import Job, csv_jobs, find_mask, folder_jobs

    src = as_path(args.input)  # paths, or URLs such as s3://bucket/list.csv
    output = as_path(args.output) if args.output else None
    suffix = f".{args.format}" if args.format else None
    if not exists(src):
        raise InputError(f"{src}: no such file or folder")
    if src.is_dir():
        if not args.masks or not output:
            raise InputError("a folder of composites needs --masks DIR and -o OUTPUT_DIR")
        return folder_jobs(src, as_path(args.masks), output, suffix)
    if src.suffix.lower() == ".csv":
        if not output:
            raise InputError("a CSV list needs -o OUTPUT_DIR")
        return csv_jobs(src, output, suffix, outside_ok=args.outputs_anywhere)
    if args.mask:
        mask = as_path(args.mask)
    elif args.masks:
        mask = find_mask(src, as_path(args.masks))
        if mask is None:
            raise InputError(f"{src}: no mask for it in {args.masks} (looked for {src.stem}.png and other image "
                             "types, and its iHarmony4 name); give it with --mask MASK")
    else:
        raise InputError(f"{src}: give its mask with --mask MASK (or a folder holding it with --masks DIR)")
    if not output:
        out = src.with_name(f"{src.stem}_harmonized{suffix or src.suffix}")
    elif output.is_dir() or args.output.endswith(("/", "\\")):  # -o FOLDER: write into it
        out = output / f"{src.stem}{suffix or src.suffix}"
    else:
        out = output
    return [Job(src, mask, out)]


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime.batch import run_batch
    from ..runtime.plan import check_plan, check_readable, check_writable

    if args.quiet:  # failures and the summary only
        logging.getLogger("engine").setLevel(logging.WARNING)
    jobs = jobs_of(args)
    if args.ray is None:  # a device this machine lacks is refused before anything is checked or written
        from ..runtime.backends import choose

        choose(args.model, args.device, args.backend)
    check_plan(jobs)  # before the model loads: a plan that would lose a file never starts
    check_readable(jobs)
    check_writable(jobs)
    max_pixels = int(args.max_megapixels * 1e6)
    if args.ray is not None:
        from ..runtime.cluster import RayOptions, run_on_ray

        ray = RayOptions(None if args.ray == "local" else args.ray, args.actors, args.gpus_per_actor, args.batch_size,
                         args.device)
        summary = run_on_ray(jobs, args.backend, args.model, ray=ray, overwrite=args.overwrite,
                             strength=args.strength, progress=not args.quiet, max_pixels=max_pixels)
    else:
        from ..runtime.backends import load

        with load(args.backend, args.model, args.device) as backend:  # says which it took, where it chose
            summary = run_batch(backend, jobs, overwrite=args.overwrite, strength=args.strength,
                                progress=not args.quiet, max_pixels=max_pixels)
        if summary.ok:  # the rate a long batch holds: the process's start and the model's load left out
            log.info("harmonized: %d in %.2f s after the model loaded, %.2f a second", summary.ok, summary.seconds,
                     summary.ok / max(summary.seconds, 1e-9))
    for path, why in summary.failed:
        print(f"FAILED {path}: {why}", file=sys.stderr)
    if summary.not_started:
        print(f"interrupted: {summary}, {summary.not_started} not started (run it again to finish)")
        return 130
    print(summary)
    if summary.skipped and not args.overwrite:
        print(f"({summary.skipped} output{'s' if summary.skipped > 1 else ''} existed already and "
              f"{'were' if summary.skipped > 1 else 'was'} left alone; --overwrite redoes them)")
    return 1 if summary.failed else 0


def register(sub) -> None:
    r = add_verb(sub, "run", cmd_run, "harmonize an image, a folder or a CSV list, headless")
    r.add_argument("input", help="composite image, folder of composites, or CSV (composite,mask[,output]; its "
                   "relative paths are taken from the CSV's own folder, and outputs from -o)")
    r.add_argument("--mask", help=f"the mask of a single composite; {MASK_RULE}")
    r.add_argument("--masks", help="folder of masks, matched to composites by name (for one image too)")
    r.add_argument("-o", "--output", help="output file, or folder mirroring the input")
    r.add_argument("--format", choices=["png", "jpg", "webp", "tif", "bmp"],
                   help=f"output type (default: input's); a picture of 16 bits per sample needs png or tif (and "
                   f"the {DEEP_EXTRA} extra)")
    r.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    r.add_argument("--strength", type=unit, default=1.0, help="0..1 blend towards the harmonized colours")
    r.add_argument("--max-megapixels", type=positive, default=100.0,
                   help="refuse larger pictures, read from their header (default 100; about "
                   f"{MB_PER_MEGAPIXEL} MB each)")
    r.add_argument("--outputs-anywhere", action="store_true",
                   help="let a CSV's output column write outside -o (absolute paths, '..')")
    add_backend(r)
    add_model(r)
    add_quiet(r)
    r.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray actors: join the cluster at ADDRESS (e.g. ray://head:10001 or auto), "
                        "or start a local Ray without one (needs the 'ray' extra); put it after INPUT")
    r.add_argument("--actors", type=int, default=2, help="Ray actors, each holding one model (default 2)")
    r.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each Ray actor needs (default 0)")
    r.add_argument("--batch-size", type=int, default=4, help="jobs per Ray task (default 4)")
