"""The shipped models, by name and file: below the network (which exports them) and the runtime (which loads
them), so that neither imports the other for a file name."""
from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "fmm-medium"  # the shipped model: every backend, command and the plug-in load it by default
FILES = {"pt": "{name}.pt", "onnx": "{name}.onnx", "onnx-fp16": "{name}-fp16.onnx"}  # kind -> file name


def shipped(kind: str, name: str = DEFAULT_MODEL) -> Path:
    """A shipped model's file: `kind` "pt" (the PyTorch checkpoint), "onnx" (FP32) or "onnx-fp16"."""
    return WEIGHTS / FILES[kind].format(name=name)
