"""`harmonize doctor`: what this machine has, and which backend each `--device` of `harmonize run` would take."""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys

from ..models import DEFAULT_MODEL
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


def device_rows(model: str | None = None) -> list[tuple[str, str]]:
    """For each device, the backend `--device` takes there and why the ones before it cannot, walking the
    registry as `load` does; then what `auto` takes: the GPU's, else the CPU's."""
    from ..runtime.backends import WHERE, probed

    rows, taken = [], {}
    for device in ("gpu", "cpu"):
        passed = []
        for name, choice, why in probed(device, model):
            if choice is not None:
                taken[device] = choice
                break
            passed.append(f"{name}: {why}")
        state = f"{taken[device].backend} ({taken[device].why})" if device in taken else "nothing"
        rows.append((f"--device {device} takes", state + (f"; not {'; '.join(passed)}" if passed else "")))
    auto = taken.get("gpu") or taken.get("cpu")
    rows.append(("--device auto takes", f"{auto.backend} on {WHERE[auto.device]}" if auto else "nothing"))
    return rows


def report() -> list[tuple[str, str]]:
    """(what, state) rows: Python, packages by extra, ONNX Runtime providers, GPU, shipped files, engines, and
    what each device would run on."""
    from ..models import FILES, shipped
    from ..tensorrt.lookup import default_engine_path, engines_dir

    rows = [("python", sys.version.split()[0])]
    rows += [(f"{dist} ({extra})", installed(dist)) for dist, extra in PACKAGES]
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
    rows.append(("GPU", gpu()))
    for kind in FILES:
        path = shipped(kind)
        rows.append((f"shipped {path.name}", "present" if path.exists() else "MISSING"))
    folder = engines_dir()
    engines = sorted(p.name for p in folder.glob("*.engine")) if folder.is_dir() else []
    rows.append((f"TensorRT engines in {folder}", ", ".join(engines) or "none (python build_engine.py builds one)"))
    engine = default_engine_path(DEFAULT_MODEL)
    rows.append(("engine for this GPU", str(engine) + ("" if engine and engine.exists() else " (not built)")
                 if engine else "n/a (no TensorRT or no GPU)"))
    return rows + device_rows()


def cmd_doctor(args: argparse.Namespace) -> int:
    for name, value in report():
        print(f"{name:<30} {value}")
    return 0


def register(sub) -> None:
    add_verb(sub, "doctor", cmd_doctor, "what this machine can run")
