"""`harmonize doctor`: what this machine has, and which backend `harmonize run` would take."""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys

from . import add_verb

PACKAGES = (("numpy", "core"), ("Pillow", "core"), ("onnxruntime", "core"), ("torch", "train"), ("onnx", "export"),
            ("triton", "triton"), ("tensorrt", "tensorrt"), ("tensorrt-rtx", "tensorrt"), ("cuda-python", "tensorrt"),
            ("tifffile", "16bit"), ("imagecodecs", "16bit"))


def installed(dist: str) -> str:
    """A distribution's version, or "missing"; by metadata, since importing torch just to ask is slow."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def gpu() -> str:
    """nvidia-smi's name, driver and compute capability of each GPU, or why there is none."""
    if not shutil.which("nvidia-smi"):
        return "none found (no nvidia-smi)"
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                       capture_output=True, text=True)
    return r.stdout.strip() or r.stderr.strip() or "nvidia-smi found no GPU"


def report() -> list[tuple[str, str]]:
    """(what, state) rows: Python, packages by extra, ONNX Runtime providers, GPU, shipped files, engines."""
    from ..runtime.backends import choose, default_engine_path, default_model_path
    from ..tensorrt.lookup import ENGINES

    rows = [("python", sys.version.split()[0])]
    rows += [(f"{dist} ({extra})", installed(dist)) for dist, extra in PACKAGES]
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
    rows.append(("GPU", gpu()))
    for path in (default_model_path("onnxruntime"), default_model_path("onnxruntime", fp16=True),
                 default_model_path("torch")):
        rows.append((f"shipped {path.name}", "present" if path.exists() else "MISSING"))
    engines = sorted(p.name for p in ENGINES.glob("*.engine")) if ENGINES.exists() else []
    rows.append(("TensorRT engines", ", ".join(engines) or "none (python build_engine.py builds one)"))
    engine = default_engine_path()
    rows.append(("engine for this GPU", str(engine) + ("" if engine and engine.exists() else " (not built)")
                 if engine else "n/a (no TensorRT or no GPU)"))
    backend, why = choose()
    rows.append(("harmonize run takes", f"{backend} ({why})"))
    return rows


def cmd_doctor(args: argparse.Namespace) -> int:
    for name, value in report():
        print(f"{name:<28} {value}")
    return 0


def register(sub) -> None:
    add_verb(sub, "doctor", cmd_doctor, "what this machine can run")
