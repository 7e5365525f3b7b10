"""Finding and checking TensorRT engines at run time: where build_engine.py puts them, and whether one
fits this machine (its JSON sidecar records the library, GPU, plugin version and ONNX it was built
from). The backends use this module (`auto` without importing TensorRT); only the builder (build.py)
writes engines."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import HarmonizeError
from .device import compute_capability
from .library import PLUGIN_VERSION, available, load_tensorrt

ENGINES = Path(__file__).resolve().parents[1] / "engines"


def sidecar_path(engine: Path) -> Path:
    """The JSON beside an engine that says what it was built from and for."""
    return engine.with_suffix(".json")


def engine_path(model: str, cc: int) -> Path:
    """Where build_engine.py writes the engine of the FP16 ONNX model `model` (a stem) for sm_`cc`."""
    return ENGINES / f"{model}-sm{cc}.engine"


def default_engine_path(model: str) -> Path | None:
    """The engine of the shipped FP16 model `model` for this machine's GPU, or None without TensorRT
    or a GPU."""
    if not available():
        return None
    cc = compute_capability()
    return None if cc is None else engine_path(f"{model}-fp16", cc)


def check_engine(engine: Path, onnx_path: Path | None = None) -> dict:
    """The sidecar of an engine that fits this machine (and was built from `onnx_path`, when given); a
    clear refusal, with the rebuild command, if not."""
    rebuild = f"rebuild it with: python build_engine.py {onnx_path or '<model.onnx>'}"
    side = sidecar_path(engine)
    if not engine.exists() or not side.exists():
        raise HarmonizeError(f"no TensorRT engine at {engine}; {rebuild}")
    meta = json.loads(side.read_text())
    t = load_tensorrt()
    problems = []
    if meta["library"] != f"{t.__name__} {t.__version__}":
        problems.append(f"built with {meta['library']}, this is {t.__name__} {t.__version__}")
    cc = compute_capability()
    if cc is not None and cc != meta["compute_capability"]:
        problems.append(f"built for sm_{meta['compute_capability']}, this GPU is sm_{cc}")
    if meta.get("plugin_version") != PLUGIN_VERSION:
        problems.append(f"plugin version {meta.get('plugin_version')}, this is {PLUGIN_VERSION}")
    if onnx_path is not None and hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest() != meta["onnx_sha256"]:
        problems.append(f"built from another {Path(onnx_path).name}")
    if problems:
        raise HarmonizeError(f"{engine} is stale or foreign ({'; '.join(problems)}); {rebuild}")
    return meta
