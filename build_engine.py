#!/usr/bin/env python3
"""Build a TensorRT FP16 engine for the local GPU (or a named compute capability with TensorRT for RTX).

    python build_engine.py                        # the shipped FP16 ONNX, for this machine's GPU
    python build_engine.py --compute-capability 86 -o fmm-sm86.engine   # on a CPU, with tensorrt-rtx

Same as `harmonize build`; see engine/tensorrt/build.py.
"""
import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
