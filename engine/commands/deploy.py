"""Deployment: `harmonize export` (checkpoint to ONNX), `harmonize build` (ONNX to a TensorRT engine, as
build_engine.py does) and `harmonize gpu-check` (the plugin's kernels on this GPU)."""
from __future__ import annotations

import argparse
import json

from ..errors import InputError, require
from . import add_verb


def cmd_export(args: argparse.Namespace) -> int:
    require("torch", "export")
    require("onnx", "export")
    from ..models import shipped

    if args.shipped:
        from ..network.export import export_shipped

        for path in export_shipped(args.checkpoint):
            print(f"wrote {path}")
        return 0
    from ..network.export import export_onnx

    if not args.out:
        raise InputError("say where to write the ONNX file with -o FILE (or use --shipped)")
    checkpoint = args.checkpoint or shipped("pt")
    print(f"wrote {export_onnx(checkpoint, args.out, fp16=args.fp16)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from ..models import shipped
    from ..tensorrt.build import BuildProfile, build_engine
    from ..tensorrt.lookup import sidecar_path

    onnx_path = args.onnx or shipped("onnx-fp16")
    profile = BuildProfile(args.min_size, args.opt_size, args.max_size, args.max_batch)
    path = build_engine(onnx_path, args.output, compute_capability=args.compute_capability, profile=profile,
                        timing_cache=args.timing_cache, verbose=args.verbose)
    meta = json.loads(sidecar_path(path).read_text())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) for sm_{meta['compute_capability']} with "
          f"{meta['library']} in {meta['build_seconds']} s; plugin layers: {meta['plugin_layers']}")
    for line in meta["plugin_log"]:
        print(f"  {line}")
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from ..tensorrt.gpu_check import run

    lines, ok = run(args.repeat)
    print("\n".join(lines))
    print("PASSED | kernel agrees with PyTorch" if ok else "FAILED | kernel disagrees with PyTorch")
    return 0 if ok else 1


def register(sub) -> None:
    x = add_verb(sub, "export", cmd_export, "checkpoint to ONNX with the harmony custom node (needs 'export')")
    x.add_argument("checkpoint", nargs="?", help="checkpoint (default: the shipped weights)")
    x.add_argument("-o", "--out", help="ONNX file to write")
    x.add_argument("--fp16", action="store_true", help="float16 graph (op statistics stay float32)")
    x.add_argument("--shipped", action="store_true",
                   help="regenerate the package's ONNX files; with a checkpoint, ship its weights first")

    b = add_verb(sub, "build", cmd_build, "build a TensorRT FP16 engine with the plugin (needs 'tensorrt')")
    b.add_argument("onnx", nargs="?", help="FP16 ONNX model (default: the shipped one)")
    b.add_argument("-o", "--output", help="engine path (default: in your cache folder, see `harmonize doctor`: "
                   "engines/<model>-<ONNX digest>-sm<CC>-<TensorRT>-<version>.engine)")
    b.add_argument("--compute-capability", type=int, help="target such as 86 for sm_86 (default: this GPU)")
    b.add_argument("--min-size", type=int, default=64, help="smallest working size in the profile")
    b.add_argument("--opt-size", type=int, help="working size to optimise for (default: the model's)")
    b.add_argument("--max-size", type=int, default=512, help="largest working size in the profile")
    b.add_argument("--max-batch", type=int, default=4)
    b.add_argument("--timing-cache",
                   help="timing cache file (default: in your cache folder, "
                   "engines/timing-<TensorRT>-<version>-sm<CC>.cache)")

    gc = add_verb(sub, "gpu-check", cmd_gpu_check,
                  "the plugin's kernels on this GPU against PyTorch (no TensorRT needed)")
    gc.add_argument("--repeat", type=int, default=50, help="timing repeats")
