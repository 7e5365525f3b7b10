"""Finding and checking TensorRT engines at run time: where build_engine.py puts them, and whether one
fits this machine (its JSON sidecar records the library, GPU, plugin version and ONNX it was built
from). The backends use this module (`auto` without importing TensorRT); only the builder (build.py)
writes engines.

Engines live in the user's cache folder (engine/cache.py), never in the installed package, each named by
what it was built from and for: the model, a digest of its ONNX bytes, the GPU's compute capability and the
TensorRT library and version. New weights, another GPU or another TensorRT thus look for another file,
never load an engine that does not fit them."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..cache import cache_dir, private_cache
from ..errors import HarmonizeError
from ..models import shipped
from .device import compute_capability
from .library import PLUGIN_VERSION, available, installed, load_tensorrt


def engines_dir() -> Path:
    """The folder of this user's TensorRT engines, their sidecars and timing caches (not created here)."""
    return cache_dir() / "engines"


def sidecar_path(engine: Path) -> Path:
    """The JSON beside an engine that says what it was built from and for."""
    return engine.with_suffix(".json")


def onnx_digest(onnx_path: Path) -> str:
    """The SHA-256 of an ONNX file's bytes (hex), read again only when the file changed (`auto` asks for
    the shipped model's engine on every choice)."""
    info = Path(onnx_path).stat()
    return _digest(str(Path(onnx_path).resolve()), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, *changed: int) -> str:  # `changed` (inode, size, times) only keys the cache
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_tag() -> str:
    """The installed TensorRT as it goes into engine names, such as tensorrt_rtx-1.7.1.116 (no import)."""
    found = installed()
    if found is None:
        raise HarmonizeError("neither tensorrt nor tensorrt_rtx is installed; an engine is named by its library")
    return "-".join(found)


def engine_path(onnx_path: Path, cc: int) -> Path:
    """Where build_engine.py writes the engine of the FP16 ONNX file `onnx_path` for sm_`cc` with the
    installed TensorRT."""
    onnx_path = Path(onnx_path)
    return engines_dir() / f"{onnx_path.stem}-{onnx_digest(onnx_path)[:12]}-sm{cc}-{library_tag()}.engine"


def timing_cache_path(cc: int) -> Path:
    """Where the builder keeps its timing cache for sm_`cc` and the installed TensorRT, when not told."""
    return engines_dir() / f"timing-{library_tag()}-sm{cc}.cache"


def default_engine_path(model: str) -> Path | None:
    """The engine of the shipped FP16 model `model` for this machine's GPU, or None without TensorRT
    or a GPU (or without the shipped FP16 ONNX, from which it would be built)."""
    if not available():
        return None
    cc = compute_capability()
    onnx_path = shipped("onnx-fp16", model)
    return None if cc is None or not onnx_path.exists() else engine_path(onnx_path, cc)


def check_engine(engine: Path, onnx_path: Path | None = None) -> dict:
    """The sidecar of an engine that fits this machine (and was built from `onnx_path`, when given); a
    clear refusal, with the rebuild command, if not."""
    rebuild = f"rebuild it with: python build_engine.py {onnx_path or '<model.onnx>'}"
    side = sidecar_path(engine)
    if not engine.exists() or not side.exists():
        raise HarmonizeError(f"no TensorRT engine at {engine}; {rebuild}")
    if Path(engine).resolve().parent == engines_dir().resolve():
        private_cache("engines", create=False)  # never load code from a folder someone else could write into
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
