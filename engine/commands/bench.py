"""`harmonize bench`: latency of every available backend in one run, ratios against PyTorch; or the
plug-in's engine call, images per second on Ray, or synthetic training composites per second."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import require
from . import add_reference, add_verb


def torch_device(device: str) -> str:
    """--device as torch names it, for the verbs that train or render: auto takes CUDA where torch has it."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device == "gpu" else "cpu"


def cmd_bench(args: argparse.Namespace) -> int:
    device = "gpu" if args.device == "cuda" else args.device  # torch's word for the GPU, taken too
    if args.ray:
        from ..evaluation.bench import ray_table, ray_throughput

        rows = ray_throughput()
        print(json.dumps(rows, indent=1) if args.json else ray_table(rows))
        return 0
    if args.throughput:
        from ..evaluation.bench import batch_throughput, throughput_table

        result = batch_throughput(args.count, device=device)
        print(json.dumps(result, indent=1) if args.json else throughput_table(result))
        return 0
    if args.synthesis:
        require("torch", "train")
        from ..evaluation.bench import synthesis_table, synthesis_throughput

        result = synthesis_throughput(args.synthesis, torch_device(device))
        print(json.dumps(result, indent=1) if args.json else synthesis_table(result))
        return 0
    if args.train:
        require("torch", "train")
        from ..evaluation.bench import train_table, train_throughput

        result = train_throughput(args.train, torch_device(device), args.config, args.train_batch, args.steps)
        print(json.dumps(result, indent=1) if args.json else train_table(result))
        return 0
    if args.plugin:
        from ..evaluation.bench import plugin_round_trip

        result = plugin_round_trip()
        print(json.dumps(result) if args.json else
              f"GIMP plug-in engine call, {result['size']} layer: first call (starts the engine) "
              f"{result['first']:.2f} s, warm {result['seconds']:.2f} s")
        return 0
    from ..evaluation.bench import available_backends, run_bench, table


    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr)

    backends = available_backends(args.reference, args.fp16, log=to_stderr, device=device)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = run_bench(backends, sizes, args.batch, args.repeat, log=to_stderr if args.json else print)
    print(json.dumps(results, indent=1) if args.json else "\n" + table(results))
    return 0


def register(sub) -> None:
    b = add_verb(sub, "bench", cmd_bench, "latency of every available backend, ratios against PyTorch")
    b.add_argument("--sizes", default="256,512,1024", help="working resolutions (default 256,512,1024)")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--fp16", action="store_true", help="also the FP16 ONNX model")
    add_reference(b)
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--plugin", action="store_true",
                   help="time the GIMP plug-in's call on a 4000x3000 layer, first and warm, instead")
    b.add_argument("--throughput", action="store_true",
                   help="harmonize run over 12 MP JPEGs against a decode-map-encode loop, whole processes, instead")
    b.add_argument("--count", type=int, default=10, help="pictures for --throughput (default 10)")
    b.add_argument("--synthesis", metavar="DATA",
                   help="synthetic training composites per second from the photos in DATA (../shared/data): a "
                        "sample at a time, against drawn on the CPU and made in batches on --device, instead")
    b.add_argument("--train", metavar="DATA",
                   help="training samples per second with composites made on --device from the photos in DATA, and "
                        "the share of each step spent making them, in fp32, bf16 and bf16 channels-last, instead")
    b.add_argument("--config", default="medium", help="the configuration --train trains (default medium)")
    b.add_argument("--train-batch", type=int, help="--train's batch (default 128 on a GPU, 8 on the CPU)")
    b.add_argument("--steps", type=int, help="--train's timed steps per precision (default 20 on a GPU, 3 on the CPU)")
    b.add_argument("--device", choices=("auto", "cpu", "gpu", "cuda"), default="auto",
                   help="(default auto: the GPU where there is one) the device of each bench: the backends timed, "
                        "harmonize run's for --throughput, where --synthesis and --train make their batches; "
                        "cuda is gpu")
    b.add_argument("--ray", action="store_true",
                   help="images per second of harmonize run, plain and on a local Ray with 1 and 2 actors, instead")
