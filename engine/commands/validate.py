"""`harmonize validate`: a backend's outputs against the PyTorch reference, Polygraphy style."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import add_backend, add_model, add_reference, add_verb, reference_backend


def cmd_validate(args: argparse.Namespace) -> int:
    from ..evaluation.validate import (
        TOLERANCES,
        as_json,
        bench_inputs,
        compare,
        load_under_test,
        report,
        synthetic_inputs,
    )

    backend, precision = load_under_test(args.backend, args.model, args.fp16, args.device)
    reference = reference_backend(args)
    tolerance = args.tolerance or TOLERANCES[precision]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [reference.size, 2 * reference.size]
    inputs = list(synthetic_inputs())
    if args.bench:
        inputs += list(bench_inputs(args.bench))
    results = compare(backend, reference, inputs, tolerance, sizes)
    print(f"validate: {backend.name} ({args.model or 'default'}, {precision}) against torch, tolerance {tolerance:.0e}")
    print(report(results, backend.name, tolerance))
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(results), indent=1))
    return 0 if all(r.passed for r in results) else 1


def register(sub) -> None:
    v = add_verb(sub, "validate", cmd_validate,
                 "validate engine vs PyTorch outputs (any backend against the reference)")
    add_backend(v, default="onnxruntime", auto=False)
    add_model(v, help="model file (default: the shipped ONNX of that precision, or this GPU's engine)")
    v.add_argument("--fp16", action="store_true", help="validate the FP16 model, with the FP16 tolerance")
    add_reference(v)
    v.add_argument("--bench", help="also a MANIFEST.csv folder of real triples")
    v.add_argument("--sizes", help="working sizes, comma separated (default: model size and twice it)")
    v.add_argument("--tolerance", type=float, help="max abs difference of the network output")
    v.add_argument("--json", help="also write the comparisons here")
