"""The `harmonize` command: one function per verb, heavy imports inside the verb that needs them."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import HarmonizeError, InputError, require

log = logging.getLogger("engine")


def cmd_train(args: argparse.Namespace) -> int:
    require("torch", "train")
    from .train import train

    path = train(
        args.out, config=args.config, data_root=args.data, iharmony4=args.iharmony4,
        batch_size=args.batch_size, steps=args.steps, lr=args.lr, optimizer=args.optimizer,
        loss=args.loss, resume=args.resume, device=args.device, workers=args.workers, seed=args.seed,
        size=args.size, init=args.init, strong_edits=args.strong_edits, until=args.until,
        mild=args.mild, restyle=args.restyle, closeup=args.closeup, more_data=args.more_data,
    )
    print(f"checkpoint: {path}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    require("torch", "train")
    from .train import average_checkpoints

    for path in args.checkpoints:
        if not Path(path).exists():
            raise InputError(f"{path}: no such checkpoint")
    print(f"checkpoint: {average_checkpoints(args.checkpoints, args.out, args.lab_mix)}")
    return 0


def _backend(args: argparse.Namespace):
    from .backends import load

    backend = load(args.backend, args.model)
    log.info("model: %s on %s", getattr(args, "model", None) or "shipped default", backend.name)
    return backend


def cmd_eval(args: argparse.Namespace) -> int:
    from .backends import load
    from .data import read_triples
    from .evaluate import baselines, evaluate, losses, peers_table, table

    triples = read_triples(args.root, args.split)
    methods = baselines()
    if args.models_only:  # the composite row stays: it is free and the others are measured against it
        methods = {k: v for k, v in methods.items() if k == "composite (untouched)"}
    for spec in args.model or [None]:
        backend = load(args.backend, spec)
        methods[f"FMM {Path(spec).name if spec else 'shipped'} ({backend.name})"] = backend.harmonize
    results = evaluate(triples, methods, progress=not args.quiet)
    print(table(results, triples))
    if args.peers:
        print(peers_table(results, args.peers, Path(args.root).resolve().name))
    if args.worst:
        print("\nPSNR full resolution, against the untouched composite:\n" + losses(results, args.worst))
    if args.json:
        Path(args.json).write_text(json.dumps({m: s.rows for m, s in results.items()}, indent=1))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    require("torch", "train")
    from .authors import import_authors

    print(f"checkpoint: {import_authors(args.checkpoint, args.out)} (the paper configuration; use it with --model)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    require("torch", "export")
    require("onnx", "export")
    from .backends import default_model_path

    if args.shipped:
        from .export import export_shipped

        for path in export_shipped(args.checkpoint):
            print(f"wrote {path}")
        return 0
    from .export import export_onnx

    if not args.out:
        raise InputError("say where to write the ONNX file with -o FILE (or use --shipped)")
    checkpoint = args.checkpoint or default_model_path("torch")
    path = export_onnx(checkpoint, args.out, fp16=args.fp16)
    print(f"wrote {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .batch import Job, check_plan, check_writable, csv_jobs, folder_jobs, run_batch
    from .paths import as_path

    src = as_path(args.input)  # paths, or URLs such as s3://bucket/list.csv
    output = as_path(args.output) if args.output else None
    suffix = f".{args.format}" if args.format else None
    if src.is_dir():
        if not args.masks or not output:
            raise InputError("a folder of composites needs --masks DIR and -o OUTPUT_DIR")
        jobs = folder_jobs(src, as_path(args.masks), output, suffix)
    elif src.suffix.lower() == ".csv":
        if not output:
            raise InputError("a CSV list needs -o OUTPUT_DIR")
        jobs = csv_jobs(src, output, suffix, outside_ok=args.outputs_anywhere)
    else:
        if not args.mask:
            raise InputError(f"{src}: give its mask with --mask MASK")
        if not output:
            out = src.with_name(f"{src.stem}_harmonized{suffix or src.suffix}")
        elif output.is_dir() or args.output.endswith(("/", "\\")):  # -o FOLDER: write into it
            out = output / f"{src.stem}{suffix or src.suffix}"
        else:
            out = output
        jobs = [Job(src, as_path(args.mask), out)]
    check_plan(jobs)  # before the model loads: a plan that would lose a file never starts
    check_writable(jobs)
    max_pixels = int(args.max_megapixels * 1e6)
    if args.ray is not None:
        from .cluster import run_on_ray

        summary = run_on_ray(jobs, args.backend, args.model, None if args.ray == "local" else args.ray,
                             args.actors, args.gpus_per_actor, args.batch_size, args.overwrite, args.strength,
                             not args.quiet, max_pixels)
    else:
        with _backend(args) as backend:
            summary = run_batch(backend, jobs, overwrite=args.overwrite, strength=args.strength,
                                progress=not args.quiet, max_pixels=max_pixels)
    for path, why in summary.failed:
        print(f"FAILED {path}: {why}", file=sys.stderr)
    if summary.not_started:
        print(f"interrupted: {summary}, {summary.not_started} not started (run it again to finish)")
        return 130
    print(summary)
    return 1 if summary.failed else 0


def _unit(text: str) -> float:
    """argparse type: a number in 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not within 0..1")
    return value


def _positive(text: str) -> float:
    """argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def _reference(args: argparse.Namespace):
    from .backends import default_model_path, load

    return load("torch", args.reference or default_model_path("torch"))


def cmd_validate(args: argparse.Namespace) -> int:
    from .backends import default_model_path, load
    from .validate import TOLERANCES, as_json, bench_inputs, compare, report, synthetic_inputs

    precision = "fp16" if args.fp16 or args.backend == "tensorrt" else "fp32"
    model = args.model or (default_model_path(args.backend, fp16=args.fp16) if args.backend == "onnxruntime" else None)
    backend = load(args.backend, model)
    reference = _reference(args)
    tolerance = args.tolerance or TOLERANCES[precision]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [reference.size, 2 * reference.size]
    inputs = list(synthetic_inputs())
    if args.bench:
        inputs += list(bench_inputs(args.bench))
    results = compare(backend, reference, inputs, tolerance, sizes)
    print(f"validate: {backend.name} ({model or 'default'}, {precision}) against torch, tolerance {tolerance:.0e}")
    print(report(results, backend.name, tolerance))
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(results), indent=1))
    return 0 if all(r.passed for r in results) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .backends import default_engine_path, default_model_path, load
    from .bench import run_bench, table
    from .errors import MissingDependencyError

    if args.ray:
        from .bench import ray_table, ray_throughput

        rows = ray_throughput()
        print(json.dumps(rows, indent=1) if args.json else ray_table(rows))
        return 0
    if args.plugin:
        from .bench import plugin_round_trip

        result = plugin_round_trip()
        print(json.dumps(result) if args.json else
              f"GIMP plug-in engine call, {result['size']} layer, warm server: {result['seconds']:.2f} s")
        return 0
    backends = {}
    try:
        backends["torch"] = _reference(args)
    except MissingDependencyError as exc:
        print(f"bench: skipping torch: {exc}", file=sys.stderr)
    backends["onnxruntime fp32"] = load("onnxruntime", default_model_path("onnxruntime"))
    if args.fp16:
        backends["onnxruntime fp16"] = load("onnxruntime", default_model_path("onnxruntime", fp16=True))
    engine = default_engine_path()
    if engine is not None and engine.exists():
        backends["tensorrt fp16"] = load("tensorrt", engine)
    else:
        print(f"bench: no TensorRT engine for this machine ({engine or 'no TensorRT or no GPU'})", file=sys.stderr)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = run_bench(backends, sizes, args.batch, args.repeat,
                        log=(lambda s: print(s, file=sys.stderr)) if args.json else print)
    print(json.dumps(results, indent=1) if args.json else "\n" + table(results))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import importlib.metadata
    import importlib.util
    import shutil
    import subprocess

    from .backends import default_model_path

    def have(dist: str) -> str:  # by distribution metadata: importing torch just to ask is slow
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    rows = [("python", sys.version.split()[0])]
    for dist, extra in (("numpy", "core"), ("Pillow", "core"), ("onnxruntime", "core"), ("torch", "train"),
                        ("onnx", "export"), ("triton", "triton"), ("tensorrt", "tensorrt"),
                        ("tensorrt-rtx", "tensorrt"), ("cuda-python", "tensorrt")):
        rows.append((f"{dist} ({extra})", have(dist)))
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
    gpu = "none found (no nvidia-smi)"
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True)
        gpu = r.stdout.strip() or r.stderr.strip() or "nvidia-smi found no GPU"
    rows.append(("GPU", gpu))
    for fp16 in (False, True):
        path = default_model_path("onnxruntime", fp16=fp16)
        rows.append((f"shipped {path.name}", "present" if path.exists() else "MISSING"))
    weights = default_model_path("torch")
    rows.append((f"shipped {weights.name}", "present" if weights.exists() else "MISSING"))
    from .backends import choose, default_engine_path
    from .build import ENGINES

    engines = sorted(p.name for p in ENGINES.glob("*.engine")) if ENGINES.exists() else []
    rows.append(("TensorRT engines", ", ".join(engines) or "none (python build_engine.py builds one)"))
    engine = default_engine_path()
    rows.append(("engine for this GPU", str(engine) + ("" if engine and engine.exists() else " (not built)")
                 if engine else "n/a (no TensorRT or no GPU)"))
    backend, why = choose()
    rows.append(("harmonize run takes", f"{backend} ({why})"))
    for name, value in rows:
        print(f"{name:<28} {value}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve, serve_stdio

    if args.stdio:
        serve_stdio(args.backend, args.model)
    else:
        serve(args.backend, args.model, args.socket)
    return 0


def cmd_gimp(args: argparse.Namespace) -> int:
    from .gimp_install import main as gimp_main

    action = "check" if args.check else "uninstall" if args.uninstall else args.action
    return gimp_main(action, args.gimp_dir, args.address)


def cmd_build(args: argparse.Namespace) -> int:
    from .backends import default_model_path
    from .build import build_engine

    onnx_path = args.onnx or default_model_path("onnxruntime", fp16=True)
    path = build_engine(onnx_path, args.output, args.compute_capability, args.min_size, args.opt_size,
                        args.max_size, args.max_batch, args.timing_cache, args.verbose)
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) for sm_{meta['compute_capability']} with "
          f"{meta['library']} in {meta['build_seconds']} s; plugin layers: {meta['plugin_layers']}")
    for line in meta["plugin_log"]:
        print(f"  {line}")
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from .gpu_check import run

    lines, ok = run(args.repeat)
    print("\n".join(lines))
    print("PASSED | kernel agrees with PyTorch" if ok else "FAILED | kernel disagrees with PyTorch")
    return 0 if ok else 1


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
    t.add_argument("--steps", type=int, default=4000, help="length of the learning-rate schedule")
    t.add_argument("--until", type=int, help="stop at this step (the schedule still spans --steps)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", choices=["adam", "adadelta"], default="adam")
    t.add_argument("--loss", choices=["fmse", "mse", "psnr"], default="fmse",
                   help="foreground MSE per sample (default), whole-image MSE (the paper's), "
                        "or log foreground MSE (the scale of mean PSNR)")
    t.add_argument("--size", type=int, help="working resolution (default: the configuration's)")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--init", help="start from this checkpoint's weights (fine-tuning)")
    t.add_argument("--strong-edits", action="store_true",
                   help="synthetic composites about as far off as real ones (2-4 wider edits)")
    t.add_argument("--mild", type=float, default=0.0,
                   help="share of synthetic composites whose edit is scaled down to 0-30 %% (default 0)")
    t.add_argument("--restyle", type=float, default=0.0,
                   help="share of synthetic composites made the HAdobe5k way: photo and object "
                        "each get their own edit, the edited photo is the target (default 0)")
    t.add_argument("--closeup", type=float, default=0.0,
                   help="share of views cropped close around the object, so that it fills much of "
                        "the picture as pasted layers often do (default 0)")
    t.add_argument("--more-data", action="store_true",
                   help="also the permissive photos of coco-more/ (5 times the objects; default: coco/ and photos/)")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--workers", type=int, default=1, help="data loader processes")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("average", help="average the weights of runs fine-tuned from one start (needs 'train')")
    a.add_argument("checkpoints", nargs="+", help="checkpoints of one configuration")
    a.add_argument("-o", "--out", required=True, help="checkpoint to write")
    a.add_argument("--lab-mix", type=_unit, help="average the network's colour map with the half-strength Lab "
                   "statistics transfer's at this weight (the shipped model: 0.5)")
    a.set_defaults(func=cmd_average)

    e = sub.add_parser("eval", help="MSE, PSNR, fMSE on iHarmony4 or a MANIFEST.csv folder")
    e.add_argument("root", help="iHarmony4 root or a folder with MANIFEST.csv")
    e.add_argument("--model", action="append", help="model file (.pt or .onnx); repeat to compare")
    e.add_argument("--backend", default="auto", help="auto, torch or onnxruntime")
    e.add_argument("--split", default="test", help="iHarmony4 list to use (default test)")
    e.add_argument("--json", help="also write per-triple scores here")
    e.add_argument("--peers", metavar="CSV", help="published models' per-triple scores (e.g. "
                   "../shared/bench/PEERS.csv) as rows beside ours, on the triples they cover")
    e.add_argument("--models-only", action="store_true", help="leave out the colour-transfer rows (faster)")
    e.add_argument("--worst", type=int, default=3, metavar="N",
                   help="name each method's N triples furthest below the composite (0: none)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    e.set_defaults(func=cmd_eval)

    im = sub.add_parser("import", help="the FMM authors' released checkpoint as a model file (needs 'train')")
    im.add_argument("checkpoint", help="their network.pth ({'epoch', 'state_dict'}, keys Down1..Up3, FB_FMM)")
    im.add_argument("-o", "--out", required=True, help="checkpoint to write (.pt), for --model")
    im.set_defaults(func=cmd_import)

    x = sub.add_parser("export", help="checkpoint to ONNX with the harmony custom node (needs 'export')")
    x.add_argument("checkpoint", nargs="?", help="checkpoint (default: the shipped weights)")
    x.add_argument("-o", "--out", help="ONNX file to write")
    x.add_argument("--fp16", action="store_true", help="float16 graph (op statistics stay float32)")
    x.add_argument("--shipped", action="store_true", help="regenerate the package's ONNX files; with a checkpoint, ship its weights first")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("run", help="harmonize an image, a folder or a CSV list, headless")
    r.add_argument("input", help="composite image, folder of composites, or CSV (composite,mask[,output])")
    r.add_argument("--mask", help="the mask of a single composite (white = object)")
    r.add_argument("--masks", help="folder of masks, matched to composites by name")
    r.add_argument("-o", "--output", help="output file, or folder mirroring the input")
    r.add_argument("--format", choices=["png", "jpg", "webp", "tif"], help="output type (default: input's)")
    r.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    r.add_argument("--strength", type=_unit, default=1.0, help="0..1 blend towards the harmonized colours")
    r.add_argument("--max-megapixels", type=_positive, default=100.0,
                   help="refuse larger pictures, read from their header (default 100; about 20 MB each)")
    r.add_argument("--outputs-anywhere", action="store_true",
                   help="let a CSV's output column write outside -o (absolute paths, '..')")
    r.add_argument("--backend", default="auto", help="auto, onnxruntime or torch")
    r.add_argument("--model", help="model file (default: the shipped one)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    r.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray actors: join the cluster at ADDRESS (e.g. ray://head:10001 or auto), "
                        "or start a local Ray without one (needs the 'ray' extra); put it after INPUT")
    r.add_argument("--actors", type=int, default=2, help="Ray actors, each holding one model (default 2)")
    r.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each Ray actor needs (default 0)")
    r.add_argument("--batch-size", type=int, default=4, help="jobs per Ray task (default 4)")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="validate a backend's outputs against PyTorch")
    v.add_argument("--backend", default="onnxruntime", help="onnxruntime (default) or tensorrt")
    v.add_argument("--model", help="model file (default: the shipped ONNX of that precision)")
    v.add_argument("--fp16", action="store_true", help="validate the FP16 model, with the FP16 tolerance")
    v.add_argument("--reference", help="PyTorch checkpoint (default: the shipped weights)")
    v.add_argument("--bench", help="also a MANIFEST.csv folder of real triples")
    v.add_argument("--sizes", help="working sizes, comma separated (default: model size and twice it)")
    v.add_argument("--tolerance", type=float, help="max abs difference of the network output")
    v.add_argument("--json", help="also write the comparisons here")
    v.set_defaults(func=cmd_validate)

    b = sub.add_parser("bench", help="latency of every available backend, ratios against PyTorch")
    b.add_argument("--sizes", default="256,512,1024", help="working resolutions (default 256,512,1024)")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--fp16", action="store_true", help="also the FP16 ONNX model")
    b.add_argument("--reference", help="PyTorch checkpoint (default: the shipped weights)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--plugin", action="store_true",
                   help="time the GIMP plug-in's call on a 4000x3000 layer against a warm server instead")
    b.add_argument("--ray", action="store_true",
                   help="images per second of harmonize run, plain and on a local Ray with 1 and 2 actors, instead")
    b.set_defaults(func=cmd_bench)

    bu = sub.add_parser("build", help="build a TensorRT FP16 engine with the plugin (needs 'tensorrt')")
    bu.add_argument("onnx", nargs="?", help="FP16 ONNX model (default: the shipped one)")
    bu.add_argument("-o", "--output", help="engine path (default: engine/engines/<model>-sm<CC>.engine)")
    bu.add_argument("--compute-capability", type=int, help="target such as 86 for sm_86 (default: this GPU)")
    bu.add_argument("--min-size", type=int, default=64, help="smallest working size in the profile")
    bu.add_argument("--opt-size", type=int, help="working size to optimise for (default: the model's)")
    bu.add_argument("--max-size", type=int, default=512, help="largest working size in the profile")
    bu.add_argument("--max-batch", type=int, default=4)
    bu.add_argument("--timing-cache", help="timing cache file (default: beside the engine)")
    bu.set_defaults(func=cmd_build)

    gc = sub.add_parser("gpu-check", help="the plugin's kernels on this GPU against PyTorch (no TensorRT needed)")
    gc.add_argument("--repeat", type=int, default=50, help="timing repeats")
    gc.set_defaults(func=cmd_gpu_check)

    d = sub.add_parser("doctor", help="what this machine can run")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("serve", help="keep the model loaded for the GIMP plug-in (local socket)")
    s.add_argument("--socket", help="Unix socket path (default: $XDG_RUNTIME_DIR/fmm-harmonize/engine.sock)")
    s.add_argument("--backend", default="auto", help="auto, onnxruntime or torch")
    s.add_argument("--model", help="model file (default: the shipped one)")
    s.add_argument("--stdio", action="store_true", help="answer one request from stdin on stdout")
    s.set_defaults(func=cmd_serve)

    g = sub.add_parser("gimp", help="install the GIMP 3 plug-in Filters > Harmonize Layer")
    g.add_argument("action", nargs="?", default="install", choices=["install", "check", "uninstall"])
    g.add_argument("--check", action="store_true", help="say what is missing, exit 1 if anything is")
    g.add_argument("--uninstall", action="store_true", help="remove the plug-in")
    g.add_argument("--gimp-dir", help="GIMP 3 configuration folder (default: found for this platform)")
    g.add_argument("--address", help="engine socket path the plug-in should use (default: its own)")
    g.set_defaults(func=cmd_gimp)
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
